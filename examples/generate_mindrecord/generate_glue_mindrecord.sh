#!/usr/bin/env bash
# GLUE task files -> classifier records (train and dev) for --dataset_format=mindrecord|tfrecord:
#   bash examples/generate_mindrecord/generate_glue_mindrecord.sh TASK_NAME INPUT_DIR OUTPUT_DIR [VOCAB] [flags]
# VOCAB defaults to the bundled MiniLM's vocab.txt; flags go to generate_glue_mindrecord.py
# (e.g. --output_format=tfrecord --max_seq_length=256).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 TASK_NAME INPUT_DIR OUTPUT_DIR [VOCAB] [flags]"
TASK_NAME=$1 INPUT_DIR=$2 OUTPUT_DIR=$3
shift 3
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then VOCAB=$1; shift; else
  glue_defaults; VOCAB="$INIT_FROM/vocab.txt"
fi
exec "$PYTHON" "$ROOT/examples/generate_mindrecord/generate_glue_mindrecord.py" --task_name="$TASK_NAME" \
  --vocab_path="$VOCAB" --input_dir="$INPUT_DIR" --output_dir="$OUTPUT_DIR" "$@"
