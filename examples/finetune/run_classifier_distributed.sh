#!/usr/bin/env bash
# Data-parallel GLUE fine-tuning over mpirun (OpenMPI):
#   bash examples/finetune/run_classifier_distributed.sh RANK_SIZE HOSTFILE TASK_NAME [--key=value ...]
# Data, model and defaults as in run_classifier.sh; HOSTFILE and rank 0's address as in
# launch_ranks (examples/common.sh). The global batch (32) is split over the ranks; every dev
# example is evaluated once over all ranks.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 RANK_SIZE HOSTFILE TASK_NAME [--key=value ...]"
RANK_SIZE=$1 HOSTFILE=$2 TASK_NAME=$3
shift 3
glue_defaults
launch_ranks "$RANK_SIZE" "$HOSTFILE" \
  "$PYTHON" -m mindtransformer.trainer.trainer --auto_model=bert_glue --task_name="$TASK_NAME" \
  --data_dir="$GLUE_DIR/$TASK_NAME" --init_from="$INIT_FROM" --save_checkpoint_path="outputs/$TASK_NAME" \
  --seq_length=128 --global_batch_size=32 --start_lr=3e-5 --epoch_size=3 --weight_decay=0.01 \
  --precision=auto --parallel_mode=data_parallel --device_num="$RANK_SIZE" --data_parallel="$RANK_SIZE" "$@"
