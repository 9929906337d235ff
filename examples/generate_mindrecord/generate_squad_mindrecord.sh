#!/usr/bin/env bash
# SQuAD-format JSON -> squad records (train, and dev with its maps) for --dataset_format=mindrecord|tfrecord:
#   bash examples/generate_mindrecord/generate_squad_mindrecord.sh TRAIN_JSON DEV_JSON OUTPUT_DIR [VOCAB] [flags]
# VOCAB defaults to the bundled MiniLM's vocab.txt; flags go to generate_squad_mindrecord.py
# (e.g. --output_format=tfrecord --doc_stride=128).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 TRAIN_JSON DEV_JSON OUTPUT_DIR [VOCAB] [flags]"
TRAIN_JSON=$1 DEV_JSON=$2 OUTPUT_DIR=$3
shift 3
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then VOCAB=$1; shift; else
  model_default; VOCAB="$INIT_FROM/vocab.txt"
fi
exec "$PYTHON" "$ROOT/examples/generate_mindrecord/generate_squad_mindrecord.py" --vocab_file="$VOCAB" \
  --train_file="$TRAIN_JSON" --predict_file="$DEV_JSON" --output_dir="$OUTPUT_DIR" "$@"
