#!/usr/bin/env bash
# Data-parallel BERT pretraining over mpirun (OpenMPI), the original suite's command line:
#   bash examples/pretrain/pretrain_bert_distributed.sh RANK_SIZE HOSTFILE DATA_DIR [--key=value ...]
# HOSTFILE: one "HOST slots=N" line per machine (e.g. "localhost slots=2"). Rank 0 listens on
# the first host at a free port ($MASTER_ADDR / $MASTER_PORT or --master_addr / --master_port
# override it). No network interface is named here: mpirun and the collectives use the
# system's choice; pick one with --network_interface=IF (collectives) and
# MPIRUN_ARGS="--mca btl_tcp_if_include IF --mca oob_tcp_if_include IF" (mpirun itself).
# Flags after the positional arguments go to the trainer, e.g. --num_layers=2 --train_steps=20.
set -euo pipefail
source "$(dirname "$0")/../common.sh"
usage 3 $# "bash $0 RANK_SIZE HOSTFILE DATA_DIR [--key=value ...]"
RANK_SIZE=$1 HOSTFILE=$2 DATA_DIR=$3
shift 3
# Checks the hostfile (one-line error and exit 2 on a bad line); prints rank 0's host and a free port.
ADDRESS=$("$PYTHON" -m mindtransformer.trainer.distributed "$HOSTFILE" "$RANK_SIZE")
read -r HOST PORT <<< "$ADDRESS"
export MASTER_ADDR=${MASTER_ADDR:-$HOST} MASTER_PORT=${MASTER_PORT:-$PORT}

PASS=()
for name in PATH LD_LIBRARY_PATH PYTHONPATH MASTER_ADDR MASTER_PORT HF_HUB_OFFLINE TRANSFORMERS_OFFLINE \
            OMP_NUM_THREADS TF_CPP_MIN_LOG_LEVEL GLOO_SOCKET_IFNAME NCCL_SOCKET_IFNAME CUDA_VISIBLE_DEVICES; do
  if [ -n "${!name:-}" ]; then PASS+=(-x "$name"); fi
done
ROOT_ARGS=()
if [ "$(id -u)" = 0 ]; then ROOT_ARGS=(--allow-run-as-root); fi
# --bind-to none: with OpenMPI's default core binding, gloo ranks abort at exit (signal 6).
# --oversubscribe: more ranks than the hostfile's slots are allowed (a note is printed above).
# shellcheck disable=SC2086
exec mpirun -n "$RANK_SIZE" --hostfile "$HOSTFILE" --oversubscribe --bind-to none "${ROOT_ARGS[@]}" \
  "${PASS[@]}" ${MPIRUN_ARGS:-} \
  "$PYTHON" -m mindtransformer.models.bert.bert_trainer --train_data_path="$DATA_DIR" \
  --parallel_mode=data_parallel --device_num="$RANK_SIZE" --data_parallel="$RANK_SIZE" "$@"
