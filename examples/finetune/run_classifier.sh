#!/usr/bin/env bash
# Standalone GLUE fine-tuning and evaluation of the dev set(s):
#   bash examples/finetune/run_classifier.sh DEVICE_ID TASK_NAME [--key=value ...]
# The task's GLUE files are read from $GLUE_DIR/TASK_NAME (default: the bundled RTE only); the
# model starts from $INIT_FROM (an HF folder or a .ckpt beside its config.json; default: the
# bundled real MiniLM). Defaults: max_seq 128, batch 32, lr 3e-5, 3 epochs, weight decay 0.01,
# bf16 on torch where the CPU/GPU has it. Flags after TASK_NAME win, e.g. --backend=mindspore
# --train_steps=20; see python -m mindtransformer.trainer.trainer --help. Output:
# outputs/TASK_NAME (metrics.jsonl, loss_curve.png, checkpoints, final/ HF folder).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 2 $# "bash $0 DEVICE_ID TASK_NAME [--key=value ...]"
DEVICE_ID=$1 TASK_NAME=$2
shift 2
glue_defaults
export DEVICE_ID CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$DEVICE_ID}
exec "$PYTHON" -m mindtransformer.trainer.trainer --auto_model=bert_glue --task_name="$TASK_NAME" \
  --data_dir="$GLUE_DIR/$TASK_NAME" --init_from="$INIT_FROM" --save_checkpoint_path="outputs/$TASK_NAME" \
  --seq_length=128 --global_batch_size=32 --start_lr=3e-5 --epoch_size=3 --weight_decay=0.01 \
  --precision=auto --parallel_mode=stand_alone "$@"
