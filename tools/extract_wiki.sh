#!/usr/bin/env bash
# Wikipedia dump -> pretraining text: bash tools/extract_wiki.sh DUMP.xml.bz2 OUT_DIR [extract_wiki.py flags]
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PYTHON="$ROOT/.venv/bin/python"; [ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" "$ROOT/tools/extract_wiki.py" --input_file "$1" --output_dir "$2" "${@:3}"
