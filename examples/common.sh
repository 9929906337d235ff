# Sourced by the example scripts: the repository root, its Python (the set-up's .venv when
# present, else python3, or $PYTHON) and the package on PYTHONPATH.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# usage MIN_ARGS ACTUAL_ARGS TEXT: print TEXT and exit 2 when fewer arguments were given.
usage() {
  if [ "$2" -lt "$1" ]; then
    echo "usage: $3" >&2
    exit 2
  fi
}

# launch_ranks RANK_SIZE HOSTFILE COMMAND...: run COMMAND as RANK_SIZE ranks over mpirun (OpenMPI).
# HOSTFILE: one "HOST slots=N" line per machine (e.g. "localhost slots=2"). Rank 0 listens on
# the first host at a free port ($MASTER_ADDR / $MASTER_PORT or --master_addr / --master_port
# override it). No network interface is named here: mpirun and the collectives use the
# system's choice; pick one with --network_interface=IF (collectives) and
# MPIRUN_ARGS="--mca btl_tcp_if_include IF --mca oob_tcp_if_include IF" (mpirun itself).
launch_ranks() {
  local rank_size=$1 hostfile=$2 address host port
  shift 2
  # Checks the hostfile (one-line error and exit 2 on a bad line); prints rank 0's host and a free port.
  address=$("$PYTHON" -m mindtransformer.trainer.distributed "$hostfile" "$rank_size")
  read -r host port <<< "$address"
  export MASTER_ADDR=${MASTER_ADDR:-$host} MASTER_PORT=${MASTER_PORT:-$port}
  local pass=() root_args=() name
  for name in PATH LD_LIBRARY_PATH PYTHONPATH MASTER_ADDR MASTER_PORT HF_HUB_OFFLINE TRANSFORMERS_OFFLINE \
              OMP_NUM_THREADS TF_CPP_MIN_LOG_LEVEL GLOO_SOCKET_IFNAME NCCL_SOCKET_IFNAME CUDA_VISIBLE_DEVICES; do
    if [ -n "${!name:-}" ]; then pass+=(-x "$name"); fi
  done
  if [ "$(id -u)" = 0 ]; then root_args=(--allow-run-as-root); fi
  # --bind-to none: with OpenMPI's default core binding, gloo ranks abort at exit (signal 6).
  # --oversubscribe: more ranks than the hostfile's slots are allowed (a note is printed above).
  # shellcheck disable=SC2086
  exec mpirun -n "$rank_size" --hostfile "$hostfile" --oversubscribe --bind-to none "${root_args[@]}" \
    "${pass[@]}" ${MPIRUN_ARGS:-} "$@"
}

# The model the fine-tuning scripts start from: $INIT_FROM, by default the bundled real MiniLM
# checkpoint (an HF folder; a .ckpt beside its config.json works too).
model_default() {
  INIT_FROM=${INIT_FROM:-$("$PYTHON" -c 'from mindtransformer.utils.bundled import minilm_path; print(minilm_path())')}
}

# The GLUE scripts' defaults: the task files under $GLUE_DIR/<TASK> (default: the bundled RTE) and the model.
glue_defaults() {
  GLUE_DIR=${GLUE_DIR:-$ROOT/mindtransformer/resources/glue}
  model_default
}

# The SQuAD scripts' defaults: $SQUAD_TRAIN and $SQUAD_DEV (SQuAD-format JSON; default: the
# bundled one-article slices of the SQuAD v1.1 dev set) and the model.
squad_defaults() {
  SQUAD_TRAIN=${SQUAD_TRAIN:-$ROOT/mindtransformer/resources/squad/train.json}
  SQUAD_DEV=${SQUAD_DEV:-$ROOT/mindtransformer/resources/squad/dev.json}
  model_default
}
