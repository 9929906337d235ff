#!/usr/bin/env bash
# Pretraining MindRecords from a folder of text files (one sentence per line, blank line between
# documents; tools/extract_wiki.sh makes them from a Wikipedia dump): one OUTPUT/NAME.mindrecord
# (+ .db and .json manifest) per input file, WORKERS files at a time (default: the core count).
#
#   bash examples/generate_mindrecord/generate_pretrain_mindrecords.sh INPUT_FILES_PATH OUTPUT_FILES_PATH VOCAB_FILE [extra flags]
#
# Extra flags go to tools/create_pretraining_data.py (e.g. --max_seq_length=512 --dupe_factor=5).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash $0 INPUT_FILES_PATH OUTPUT_FILES_PATH VOCAB_FILE [create_pretraining_data flags]" >&2
  exit 2
fi
INPUT_DIR=$1; OUTPUT_DIR=$2; VOCAB_FILE=$3; shift 3
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"; [ -x "$PYTHON" ] || PYTHON=python3
WORKERS=${WORKERS:-$(nproc)}
[ -d "$INPUT_DIR" ] || { echo "error: $INPUT_DIR: no such directory of text files" >&2; exit 2; }
[ -f "$VOCAB_FILE" ] || { echo "error: $VOCAB_FILE: no such vocab file" >&2; exit 2; }
mkdir -p "$OUTPUT_DIR"
mapfile -t FILES < <(find "$INPUT_DIR" -maxdepth 1 -type f ! -name '.*' ! -name '*.json' | sort)
[ ${#FILES[@]} -gt 0 ] || { echo "error: $INPUT_DIR holds no input file" >&2; exit 2; }
echo "[generate] ${#FILES[@]} files, $WORKERS at a time -> $OUTPUT_DIR"
# A bounded pool: xargs runs at most WORKERS conversions at once and fails if any fails.
printf '%s\0' "${FILES[@]}" | xargs -0 -P "$WORKERS" -I{} bash -c \
  '"$0" "$1/tools/create_pretraining_data.py" --quiet --input_file "$2" --vocab_file "$3" \
     --output_format mindrecord --output_file "$4/$(basename "$2").mindrecord" "${@:5}"' \
  "$PYTHON" "$ROOT" {} "$VOCAB_FILE" "$OUTPUT_DIR" "$@"
echo "[generate] done: $(ls "$OUTPUT_DIR"/*.mindrecord | wc -l) MindRecord files in $OUTPUT_DIR"
