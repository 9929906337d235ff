#!/usr/bin/env bash
# Standalone SQuAD fine-tuning, then answering and scoring the dev questions:
#   bash examples/finetune/run_squad.sh DEVICE_ID [--key=value ...]
# Data: $SQUAD_TRAIN and $SQUAD_DEV (SQuAD v1.1/v2.0, CMRC 2018 or DRCD JSON; default: the
# bundled slices of SQuAD v1.1 dev); the model starts from $INIT_FROM (default: the bundled real
# MiniLM). Defaults (google's run_squad): max_seq 384, doc_stride 128, max_query 64, batch 32,
# lr 5e-5, 2 epochs, bf16 on torch where the CPU/GPU has it. Flags after DEVICE_ID win, e.g.
# --backend=mindspore --train_steps=20 --version_2_with_negative=true; see
# python -m mindtransformer.trainer.trainer --help. Output: outputs/squad (metrics.jsonl,
# loss_curve.png, predictions.json, nbest_predictions.json, checkpoints, final/ HF folder).
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 1 $# "bash $0 DEVICE_ID [--key=value ...]"
DEVICE_ID=$1
shift
squad_defaults
export DEVICE_ID CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$DEVICE_ID}
exec "$PYTHON" -m mindtransformer.trainer.trainer --auto_model=bert_squad --train_data_path="$SQUAD_TRAIN" \
  --eval_data_path="$SQUAD_DEV" --init_from="$INIT_FROM" --save_checkpoint_path=outputs/squad \
  --seq_length=384 --doc_stride=128 --max_query_length=64 --global_batch_size=32 --start_lr=5e-5 \
  --epoch_size=2 --weight_decay=0.01 --precision=auto --parallel_mode=stand_alone "$@"
