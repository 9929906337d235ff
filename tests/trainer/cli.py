"""Running the command lines from the fine-tuning tests, and reading what a run left."""

import os
import shutil
import subprocess
import sys

from mindtransformer.trainer.reporting import read_metrics
from tests.conftest import REPO_ROOT

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT)
MPI = shutil.which("mpirun")


def run(module, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=REPO_ROOT)


def run_script(script, *args, env=None, timeout=900):
    """bash examples/<script> args..."""
    return subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", script), *map(str, args)], capture_output=True,
                          text=True, env={**ENV, **(env or {})}, timeout=timeout, cwd=REPO_ROOT)


def finetune(*args, timeout=900):
    return run("mindtransformer.trainer.trainer", *args, timeout=timeout)


def records_with(run_dir, key) -> list:
    """The records of a run's metrics.jsonl that hold `key`."""
    return [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl")) if key in r]


def step_records(run_dir) -> list:
    """The training steps' records (step, loss, grad_norm, lr, ...)."""
    return records_with(run_dir, "loss")


def train_losses(run_dir) -> list:
    return [r["loss"] for r in step_records(run_dir)]


def evaluations(run_dir, key="eval_loss") -> list:
    """The evaluation records of metrics.jsonl (those holding `key`)."""
    return records_with(run_dir, key)


def one_line_error(done, *fragments):
    """Exit status 2 and exactly one line on stderr, holding every fragment."""
    lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "error:" in lines[0], done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
