"""Training checkpoints that resume exactly and are never seen half-written.

A checkpoint is a directory `<save_checkpoint_path>/checkpoints/<prefix>-step<N>/` holding the
engine's files (weights, optimizer state, one RNG file per rank) and `trainer_state.json` (step,
data position, schedule, loss scaler, model config, run shape). It is written as
`.tmp-<name>/` by every rank, then rank 0 writes trainer_state.json and renames the directory:
a kill at any moment leaves either the complete checkpoint or a `.tmp-` directory that resuming
ignores. The newest `keep` checkpoints and the best one are kept.
"""

from __future__ import annotations

import json
import os
import shutil

from mindtransformer.errors import UserInputError
from mindtransformer.utils.files import atomic_write_text

STATE_FILE = "trainer_state.json"
# What must not change between a run and its resumption (exact resume would silently break).
RUN_SHAPE = ("backend", "world_size", "global_batch_size", "grad_accumulation_steps", "seq_length")


class Checkpoints:
    def __init__(self, run_dir: str, prefix: str, keep: int, engine):
        self.root = os.path.join(run_dir, "checkpoints")
        self.prefix, self.keep, self.engine = prefix, keep, engine

    def save(self, step: int, state: dict, best_step: int = None) -> str:
        name = f"{self.prefix}-step{step:08d}"
        final, tmp = os.path.join(self.root, name), os.path.join(self.root, f".tmp-{name}")
        main = self.engine.world.is_main
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a kill during an earlier write
            os.makedirs(tmp)
        self.engine.barrier()  # the directory exists for every rank
        state = dict(state, engine=self.engine.save(tmp))
        self.engine.barrier()  # every rank's files are written
        if main:
            atomic_write_text(os.path.join(tmp, STATE_FILE), json.dumps(state, indent=2) + "\n")
            if os.path.exists(final):  # the same step saved again after a resume
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune(best_step)
        return final

    def _prune(self, best_step) -> None:
        done = complete_checkpoints(self.root)
        keep = set(done[-self.keep:])
        if best_step is not None:
            keep |= {path for path in done if path.endswith(f"-step{best_step:08d}")}
        for path in done:
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)


def complete_checkpoints(root: str) -> list:
    """Complete checkpoint directories under `root`, oldest first (by step)."""
    if not os.path.isdir(root):
        return []
    found = [os.path.join(root, n) for n in os.listdir(root)
             if not n.startswith(".") and os.path.isfile(os.path.join(root, n, STATE_FILE))]
    return sorted(found, key=lambda p: int(p.rsplit("-step", 1)[-1]) if p.rsplit("-step", 1)[-1].isdigit() else -1)


def resolve(path: str, ckpt_id: str = "") -> str:
    """A checkpoint directory from --load_checkpoint_path (--load_dir): the checkpoint itself, or a
    run directory / checkpoints directory: its newest complete checkpoint, or the one named by
    `ckpt_id` (a directory name or a step number)."""
    if os.path.isfile(os.path.join(path, STATE_FILE)) and not ckpt_id:
        return path
    for root in (os.path.join(path, "checkpoints"), path):
        done = complete_checkpoints(root)
        if done and ckpt_id:
            wanted = [d for d in done if os.path.basename(d) == ckpt_id
                      or (ckpt_id.isdigit() and d.endswith(f"-step{int(ckpt_id):08d}"))]
            if not wanted:
                names = ", ".join(os.path.basename(d) for d in done)
                raise UserInputError(f"--ckpt_id={ckpt_id}: no such checkpoint in {root} (there: {names})")
            return wanted[0]
        if done:
            return done[-1]
    raise UserInputError(f"--load_checkpoint_path={path}: no complete checkpoint there (a directory with "
                         f"{STATE_FILE}); pass a checkpoint or the run's --save_checkpoint_path")


def read_state(directory: str, config: dict, run_shape: dict) -> dict:
    """trainer_state.json of a checkpoint, checked against this run's model config and shape."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"{directory}/{STATE_FILE}: unreadable ({err}); pass another checkpoint") from None
    saved = state.get("config", {})
    differ = [k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
    if differ:
        k = differ[0]
        raise UserInputError(f"{directory}: a checkpoint of another model ({k} {saved.get(k)!r} there, "
                             f"{config.get(k)!r} in this run); use the model flags it was trained with")
    for k in RUN_SHAPE:
        if state.get("run", {}).get(k) != run_shape.get(k):
            fix = "launch as many ranks" if k == "world_size" else f"set --{k} to match"
            raise UserInputError(f"{directory}: saved with {k}={state.get('run', {}).get(k)!r} but this run has "
                                 f"{run_shape.get(k)!r}; an exact resume needs the same: {fix}")
    return state
