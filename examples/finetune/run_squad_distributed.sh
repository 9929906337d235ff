#!/usr/bin/env bash
# Data-parallel SQuAD fine-tuning over mpirun (OpenMPI):
#   bash examples/finetune/run_squad_distributed.sh RANK_SIZE HOSTFILE [--key=value ...]
# Data, model and defaults as in run_squad.sh; HOSTFILE and rank 0's address as in launch_ranks
# (examples/common.sh). The global batch (32) is split over the ranks; every dev window is run
# once over all ranks, and rank 0 writes predictions.json.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 2 $# "bash $0 RANK_SIZE HOSTFILE [--key=value ...]"
RANK_SIZE=$1 HOSTFILE=$2
shift 2
squad_defaults
launch_ranks "$RANK_SIZE" "$HOSTFILE" \
  "$PYTHON" -m mindtransformer.trainer.trainer --auto_model=bert_squad --train_data_path="$SQUAD_TRAIN" \
  --eval_data_path="$SQUAD_DEV" --init_from="$INIT_FROM" --save_checkpoint_path=outputs/squad \
  --seq_length=384 --doc_stride=128 --max_query_length=64 --global_batch_size=32 --start_lr=5e-5 \
  --epoch_size=2 --weight_decay=0.01 --precision=auto --parallel_mode=data_parallel \
  --device_num="$RANK_SIZE" --data_parallel="$RANK_SIZE" "$@"
