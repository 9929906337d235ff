#!/usr/bin/env bash
# Answer and score the SQuAD dev questions with a fine-tuned model; scores as JSON on the last
# line, predictions.json and nbest_predictions.json beside the checkpoint:
#   bash examples/inference/predict_bert_squad.sh [RANK_ID] [--key=value ...]
# The checkpoint is $LOAD_CHECKPOINT_PATH (default: outputs/squad/final, what run_squad.sh
# leaves), the questions $SQUAD_DEV. Flags go to python -m mindtransformer.tasks.question_answering
# (e.g. --backend=mindspore, or the original scripts' --load_checkpoint_path=bert.ckpt
# --vocab_file_path=vocab.txt --embedding_size=768 --num_layers=12 --num_heads=12).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
RANK_ID=0
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then RANK_ID=$1; shift; fi
SQUAD_DEV=${SQUAD_DEV:-$ROOT/mindtransformer/resources/squad/dev.json}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$RANK_ID}
exec "$PYTHON" -m mindtransformer.tasks.question_answering --auto_model=bert_squad --eval_data_path="$SQUAD_DEV" \
  --load_checkpoint_path="${LOAD_CHECKPOINT_PATH:-outputs/squad/final}" --seq_length=384 "$@"
