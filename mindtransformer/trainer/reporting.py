"""What a run shows and leaves behind (rank 0 only): a tqdm bar with loss, learning rate,
samples/s and ETA; `metrics.jsonl` (one object per optimizer step and per evaluation);
TensorBoard event files when the `tensorboard` package is installed; `loss_curve.png`
(matplotlib), redrawn at each evaluation and at the end; `run_manifest.json` (git commit,
package versions, hardware, settings)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
import types

from mindtransformer.utils.files import atomic_path, atomic_write_text

METRICS_FILE, CURVE_FILE, MANIFEST_FILE = "metrics.jsonl", "loss_curve.png", "run_manifest.json"


class RunLog:
    def __init__(self, run_dir: str, total_steps: int, start_step: int, log_steps: int, enabled: bool = True):
        self.run_dir, self.log_steps, self.enabled = run_dir, log_steps, enabled
        self.bar = self.tensorboard = self.metrics = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        path = os.path.join(run_dir, METRICS_FILE)
        _drop_records_after(path, start_step)  # a resumed run rewrites the steps after its checkpoint
        self.metrics = open(path, "a", encoding="utf-8")
        self.tensorboard = _tensorboard_writer(os.path.join(run_dir, "tensorboard"))
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def step(self, record: dict) -> None:
        """record: step (1-based, optimizer steps done), loss, lr, grad_norm, samples_per_s, skipped."""
        if not self.enabled:
            return
        self._write(record)
        self.bar.update(1)
        if record.get("skipped"):
            self.bar.write(f"step {record['step']}: gradient not finite (norm {record['grad_norm']}); "
                           "the update was skipped")
        if record["step"] % self.log_steps == 0 or record["step"] == self.bar.total:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 samples_s=f"{record['samples_per_s']:.1f}", refresh=False)

    def evaluation(self, record: dict) -> None:
        if not self.enabled:
            return
        self._write(record)
        self.bar.write("eval " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in record.items()))
        self.plot()

    def note(self, record: dict) -> None:
        """A record for metrics.jsonl only (no bar output, no TensorBoard scalars)."""
        if self.enabled:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def _write(self, record: dict) -> None:
        self.note(record)
        if self.tensorboard:
            from tensorboard.compat.proto.event_pb2 import Event
            from tensorboard.compat.proto.summary_pb2 import Summary

            values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)]
            self.tensorboard.add_event(Event(wall_time=time.time(), step=record["step"], summary=Summary(value=values)))

    def plot(self) -> None:
        if self.enabled:
            plot_loss_curve(os.path.join(self.run_dir, METRICS_FILE), os.path.join(self.run_dir, CURVE_FILE))

    def close(self) -> None:
        if not self.enabled:
            return
        self.plot()
        self.bar.close()
        self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()


def read_metrics(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _drop_records_after(path: str, step: int) -> None:
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    if os.path.isfile(path):
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _tensorboard_writer(directory: str):
    # tensorboard writes event files through TensorFlow when it can import it (about 5 s of every
    # run's start here) and through its own stub otherwise; the module `tensorboard.compat.notf`
    # existing is its switch to the stub, which writes the same files.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        return None
    return EventFileWriter(directory)


def plot_loss_curve(metrics_path: str, png_path: str) -> None:
    """Training loss per step (and evaluation loss, when there is one) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train), lw=0.8, label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_run_manifest(run_dir: str, settings, world, extra: dict) -> None:
    """run_manifest.json: enough to tell later what ran where."""
    import importlib.metadata as md

    versions = {}
    for package in ("mindtransformer", "torch", "mindspore", "numpy", "tokenizers", "tensorflow-cpu"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    manifest = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": _git_commit(),
        "versions": versions,
        "hardware": {"machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                     "rank0_cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                     "python": platform.python_version()},
        "world": dataclasses.asdict(world),
        "settings": dataclasses.asdict(settings),
        **extra,
    }
    atomic_write_text(os.path.join(run_dir, MANIFEST_FILE), json.dumps(manifest, indent=2) + "\n")


def _git_commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
