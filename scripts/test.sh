#!/usr/bin/env bash
# Set up (if needed) and run the default test suite. Slow tests: add `-m slow`.
# Two workers, each taking whole files (a file's module fixtures are made once); `-n 4` or
# `-n 0` after the command overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
