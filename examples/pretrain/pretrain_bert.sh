#!/usr/bin/env bash
# Standalone BERT pretraining, the original suite's command line:
#   bash examples/pretrain/pretrain_bert.sh DEVICE_ID EPOCH_SIZE DATA_DIR [--key=value ...]
# DATA_DIR holds TFRecord or MindRecord pretraining records (tools/create_pretraining_data.py).
# Flags after the three positional arguments go to the trainer and win over the ones set here,
# e.g. --backend=mindspore --num_layers=2 --train_steps=20; see
#   python -m mindtransformer.models.bert.bert_trainer --help
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 DEVICE_ID EPOCH_SIZE DATA_DIR [--key=value ...]"
DEVICE_ID=$1 EPOCH_SIZE=$2 DATA_DIR=$3
shift 3
export DEVICE_ID
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$DEVICE_ID}
exec "$PYTHON" -m mindtransformer.models.bert.bert_trainer --train_data_path="$DATA_DIR" \
  --epoch_size="$EPOCH_SIZE" --parallel_mode=stand_alone "$@"
