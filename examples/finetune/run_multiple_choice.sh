#!/usr/bin/env bash
# Standalone multiple-choice fine-tuning, then accuracy per subject on the test split, the
# untuned and the fine-tuned model side by side:
#   bash examples/finetune/run_multiple_choice.sh DEVICE_ID [--key=value ...]
# Questions: $MC_DATA (a CSV in the question,A,B,C,D,answer layout, a folder of subject CSVs or
# TMMLU's folder; default: three bundled TMMLU subjects), split 70/25/5 per subject by
# --split_seed; the model starts from $INIT_FROM (default: the bundled real MiniLM). Defaults:
# max_seq 128, batch 16, lr 5e-5, 3 epochs, bf16 on torch where the CPU/GPU has it. Flags after
# DEVICE_ID go to the trainer, e.g. --subjects=普通物理 --train_steps=20; see
# python -m mindtransformer.trainer.trainer --help. Output: $MC_OUT (default outputs/multiple_choice:
# metrics.jsonl, loss_curve.png, *_questions.json, final/ HF folder) and $MC_OUT/eval (accuracy.md,
# accuracy.json, accuracy.png).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 1 $# "bash $0 DEVICE_ID [--key=value ...]"
DEVICE_ID=$1
shift
model_default
MC_DATA=${MC_DATA:-$ROOT/mindtransformer/resources/tmmlu}
OUT=${MC_OUT:-outputs/multiple_choice}
export DEVICE_ID CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$DEVICE_ID}
"$PYTHON" -m mindtransformer.trainer.trainer --auto_model=bert_multiple_choice --data_dir="$MC_DATA" \
  --init_from="$INIT_FROM" --save_checkpoint_path="$OUT" --seq_length=128 --global_batch_size=16 \
  --start_lr=5e-5 --epoch_size=3 --weight_decay=0.01 --precision=auto --parallel_mode=stand_alone "$@"
# The untuned model: the same checkpoint with a fresh (seeded) multiple-choice head.
"$PYTHON" - "$INIT_FROM" "$OUT/untuned" <<'PY'
import sys
from mindtransformer.backends import get_backend
from mindtransformer.pretrained import from_pretrained, save_pretrained
get_backend("torch").manual_seed(0)
save_pretrained(from_pretrained(sys.argv[1], task="multiple_choice"), sys.argv[2])
PY
exec "$PYTHON" -m mindtransformer.tasks.multiple_choice --questions="$OUT/test_questions.json" \
  --model untuned="$OUT/untuned" --model fine_tuned="$OUT/final" --output_dir="$OUT/eval"
