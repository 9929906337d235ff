#!/usr/bin/env bash
# Data-parallel BERT pretraining over mpirun (OpenMPI), the original suite's command line:
#   bash examples/pretrain/pretrain_bert_distributed.sh RANK_SIZE HOSTFILE DATA_DIR [--key=value ...]
# HOSTFILE, rank 0's address and the network interface: see launch_ranks in examples/common.sh.
# Flags after the positional arguments go to the trainer, e.g. --num_layers=2 --train_steps=20.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 RANK_SIZE HOSTFILE DATA_DIR [--key=value ...]"
RANK_SIZE=$1 HOSTFILE=$2 DATA_DIR=$3
shift 3
launch_ranks "$RANK_SIZE" "$HOSTFILE" \
  "$PYTHON" -m mindtransformer.models.bert.bert_trainer --train_data_path="$DATA_DIR" \
  --parallel_mode=data_parallel --device_num="$RANK_SIZE" --data_parallel="$RANK_SIZE" "$@"
