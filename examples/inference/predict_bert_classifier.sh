#!/usr/bin/env bash
# Evaluate a fine-tuned classifier on the task's dev file(s); metrics as JSON on the last line,
# per-example predictions beside the checkpoint:
#   bash examples/inference/predict_bert_classifier.sh RANK_ID TASK_NAME [--key=value ...]
# The checkpoint is $LOAD_CHECKPOINT_PATH (default: outputs/TASK_NAME/final, what
# run_classifier.sh leaves), the data $GLUE_DIR/TASK_NAME. Flags after TASK_NAME go to
# python -m mindtransformer.tasks.text_classification (e.g. --backend=mindspore
# --load_checkpoint_path=outputs/RTE/final/bert.ckpt, or --text "..." instead of the dev set).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 2 $# "bash $0 RANK_ID TASK_NAME [--key=value ...]"
RANK_ID=$1 TASK_NAME=$2
shift 2
GLUE_DIR=${GLUE_DIR:-$ROOT/mindtransformer/resources/glue}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$RANK_ID}
ARGS=(--load_checkpoint_path="${LOAD_CHECKPOINT_PATH:-outputs/$TASK_NAME/final}")
case " $* " in
  *" --text"*|*" --input_file"*) ;;
  *) ARGS+=(--task_name="$TASK_NAME" --data_dir="$GLUE_DIR/$TASK_NAME") ;;
esac
exec "$PYTHON" -m mindtransformer.tasks.text_classification "${ARGS[@]}" "$@"
