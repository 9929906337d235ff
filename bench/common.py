"""Helpers shared by the benchmarks: the real batch, contention-aware step timing, machine facts."""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from mindtransformer.utils import bundled  # noqa: E402

# GLUE SST-2 in ../shared/data beside the checkout; the bundled SQuAD pairs stand in without it.
SST2_TRAIN = os.path.join(os.path.dirname(ROOT), "shared", "data", "glue", "SST-2", "train.tsv")
LR, WEIGHT_DECAY = 2e-5, 0.01


def batch_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the flags that choose the model and the real batch, shared by the benches."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model_path", default=None, help="HF BERT folder (default: the bundled MiniLM-L6-H384)")
    p.add_argument("--data", default=SST2_TRAIN, help="SST-2 train.tsv (sentence<TAB>label); bundled SQuAD pairs if absent")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--pad_to_max_length", action="store_true", help="pad every row to max_length, not to the longest")
    return p


def load_batch(tokenizer, data: str, batch_size: int, max_length: int, pad_to_max_length: bool, seed: int):
    """(numpy inputs {input_ids, attention_mask, token_type_ids} (B, T), labels list (B,), description)."""
    rng = random.Random(seed)
    if os.path.isfile(data):
        with open(data, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        rows = rng.sample(rows, min(batch_size, len(rows)))
        texts, pairs = [r["sentence"] for r in rows], None
        labels = [int(r["label"]) for r in rows]
        source = f"SST-2 train ({data}), {len(rows)} rows sampled with seed {seed}"
    else:
        questions, contexts = bundled.squad_pairs()
        picked = rng.sample(range(len(questions)), min(batch_size, len(questions)))
        texts, pairs = [questions[i] for i in picked], [contexts[i] for i in picked]
        labels = [i % 2 for i in range(len(picked))]  # arbitrary: only the timing matters
        source = f"bundled SQuAD dev pairs ({data} not found), {len(picked)} rows, seed {seed}"
    inputs = tokenizer.encode_batch(texts, pairs, max_length=max_length, pad_to_max_length=pad_to_max_length)
    return inputs, labels, source


class CpuMeter:
    """CPU seconds that other processes used, from /proc: a step during which they used a lot of
    this 2-core machine ran contended (OpenMP threads then wait on each other, and one step can take
    10x longer), so such steps are kept apart. Unavailable off Linux: every step then counts.
    """

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = self._read() is not None

    @staticmethod
    def _read():
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            with open("/proc/self/stat", encoding="ascii") as f:
                own = f.read().rsplit(")", 1)[1].split()  # fields after the command name
        except (OSError, ValueError, IndexError):
            return None
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
        busy = sum(fields[:8]) - fields[3] - fields[4]
        return busy, int(own[11]) + int(own[12])  # utime + stime of this process, all threads

    def snapshot(self):
        return self._read() if self.available else None

    def others_seconds(self, before, after):
        if before is None or after is None:
            return 0.0
        return max(0, (after[0] - before[0]) - (after[1] - before[1])) / self.tick


def summarize(records, max_other_share):
    """records [(seconds, other processes' CPU seconds)] -> median ms over clean steps (over all
    steps if none was clean), and the counts."""
    all_ms = [1000 * t for t, _ in records]
    clean_ms = [1000 * t for t, other in records if other <= max_other_share * t]
    used = clean_ms or all_ms
    return {"median_ms": statistics.median(used), "min_ms": min(used), "max_ms": max(used),
            "clean_steps": len(clean_ms), "all_steps": len(all_ms),
            "median_all_ms": statistics.median(all_ms), "times_ms": all_ms,
            "others_cpu_ms": [1000 * other for _, other in records]}


def cpu_model_name():
    from mindtransformer.trainer.reporting import cpu_model

    return cpu_model() or "unknown"


def load_average():
    """1-minute load average: other processes on the machine skew absolute times (the ratio less so)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def seed_list(text: str) -> list:
    """argparse type for --seeds: "0,1,2" -> [0, 1, 2]; anything else is argparse's one-line error."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 0,1,2)") from None
