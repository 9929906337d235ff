# Sourced by the example scripts: the repository root, its Python (the set-up's .venv when
# present, else python3, or $PYTHON) and the package on PYTHONPATH.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# usage MIN_ARGS ACTUAL_ARGS TEXT: print TEXT and exit 2 when fewer arguments were given.
usage() {
  if [ "$2" -lt "$1" ]; then
    echo "usage: $3" >&2
    exit 2
  fi
}
