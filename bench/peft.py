"""Full fine-tuning against LoRA, Prefix-Tuning, SVD-LoRA and a distilled student, in one table.

The real MiniLM-L6-H384 checkpoint; real GLUE SST-2 (a fixed 8,000-example training subset drawn
with seed 0 from train.tsv, the full 872-example dev set) and RTE (2,490 / 277), from
../shared/data/glue. Every configuration goes through our trainer, one process at a time:

    full       every weight trains                     lr 3e-5
    lora       r=8 on query and value (alpha 16)       lr 1e-3
    lora_qkvo  r=8 on query, key, value and attention.output.dense (alpha 16)   lr 1e-3
    prefix     10 prefix positions per layer           lr 5e-3
    svd_lora   12 -> 4 singular values per layer       lr 5e-3 (E starts at zero and moves at Adam's lr)
    distilled  a 3-layer student of `full`'s model     lr 1e-4, T=2, alpha 0.5

batch 32, max_seq 128, --epochs (3), linear decay, weight decay 0.01, bf16 where the CPU has it,
--seeds (0). `--lr CONFIG=LR` (repeatable) replaces a configuration's learning rate, for sweeps;
the rate used is in each result. Reported: dev accuracy, trainable parameters while training (the trainer's count), the
numbers stored apart from the base (LoRA's adapter, Prefix-Tuning's folded prefixes, both with the
classifier), peak resident memory of the training process, training examples per second (the
sum of the step times).

    .venv/bin/python bench/peft.py [--tasks sst-2,rte] [--configs ...] [--epochs 3] [--seeds 0,1,2]
        [--lr lora=1e-3] [--json_out F]

Target (issue 9): LoRA within 2 points of full fine-tuning on SST-2 with under 2 % of the
trainable parameters.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, cpu_model_name, load_average, seed_list  # noqa: E402
from mindtransformer.utils import bundled  # noqa: E402

GLUE = os.path.join(os.path.dirname(ROOT), "shared", "data", "glue")
CONFIGS = {
    "full": ["--learning_rate=3e-5"],
    "lora": ["--peft=lora", "--lora_rank=8", "--lora_alpha=16", "--lora_target_modules=query,value",
             "--learning_rate=1e-3"],
    "lora_qkvo": ["--peft=lora", "--lora_rank=8", "--lora_alpha=16",
                  "--lora_target_modules=query,key,value,attention.output.dense", "--learning_rate=1e-3"],
    "prefix": ["--peft=prefix", "--prefix_length=10", "--learning_rate=5e-3"],
    "svd_lora": ["--peft=svd_lora", "--svd_init_rank=12", "--svd_target_rank=4", "--learning_rate=5e-3"],
    "distilled": ["--student_layers=3", "--temperature=2", "--distill_alpha=0.5", "--learning_rate=1e-4"],
}
# Runs the trainer and reports its own peak resident memory (KiB, Linux) on stderr, even on exit.
LAUNCH = ("import resource, runpy, sys\nsys.argv = ['trainer'] + sys.argv[1:]\ntry:\n"
          "    runpy.run_module('mindtransformer.trainer.trainer', run_name='__main__')\nfinally:\n"
          "    print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def task_dir(task: str, work: str) -> str:
    """SST-2: a folder with the fixed 8k training subset and the full dev set; RTE as it is."""
    source = os.path.join(GLUE, task.upper())
    if task != "sst-2":
        return source
    folder = os.path.join(work, "SST-2")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(source, "train.tsv"), encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    subset = sorted(random.Random(0).sample(range(len(rows)), 8000))
    with open(os.path.join(folder, "train.tsv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        w.writerows([header] + [rows[i] for i in subset])
    shutil.copy(os.path.join(source, "dev.tsv"), os.path.join(folder, "dev.tsv"))
    return folder


def run(task: str, name: str, data: str, out: str, epochs: int, teacher: str = "", limit: int = 0, seed: int = 0,
        learning_rate: str = "") -> dict:
    model = ["--distill_from=" + teacher] if name == "distilled" else ["--init_from=" + bundled.minilm_path()]
    flags = [f for f in CONFIGS[name] if not (learning_rate and f.startswith("--learning_rate="))]
    learning_rate = learning_rate or next(f for f in flags if f.startswith("--learning_rate=")).split("=")[1]
    cmd = [sys.executable, "-c", LAUNCH, "--auto_model=bert_glue", f"--task_name={task}", f"--data_dir={data}",
           *model, "--seq_length=128", "--global_batch_size=32", f"--epoch_size={epochs}", "--weight_decay=0.01",
           "--precision=auto", f"--seed={seed}", f"--save_checkpoint_path={out}", "--save_checkpoint_steps=1000000",
           "--log_steps=20", f"--max_train_examples={limit}", *flags, f"--learning_rate={learning_rate}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{task} {name} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    steps = [r for r in records if "samples_per_s" in r]
    table = re.search(r"parameters: ([\d,]+) total, ([\d,]+) trainable", done.stdout)
    stored = int(table.group(2).replace(",", ""))
    for apart in ("adapter/adapter_model.safetensors", "prefix/prefix_model.safetensors"):  # what ships apart
        path = os.path.join(out, "final", apart)
        if os.path.isfile(path):
            from safetensors.numpy import load_file

            stored = sum(a.size for a in load_file(path).values())
    return {"task": task, "config": name, "seed": seed, "learning_rate": float(learning_rate), "accuracy": [r for r in records if "accuracy" in r][-1]["accuracy"],
            "stored_apart": stored,
            "trainable": int(table.group(2).replace(",", "")), "total": int(table.group(1).replace(",", "")),
            "peak_rss_mib": int(re.search(r"PEAK_RSS_KIB (\d+)", done.stderr).group(1)) / 1024,
            "examples_per_s": 32 * len(steps) / sum(32 / r["samples_per_s"] for r in steps)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", default="sst-2,rte")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {', '.join(CONFIGS)} (distilled needs full)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=seed_list, default="0", help="comma-separated training seeds; the table shows mean and spread")
    p.add_argument("--lr", action="append", default=[], metavar="CONFIG=LR",
                   help="replace a configuration's learning rate (repeatable)")
    p.add_argument("--max_train_examples", type=int, default=0, help="first N training examples only (quick checks)")
    p.add_argument("--work_dir", default="", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json_out", default="", help="append each run's result as one JSON line")
    args = p.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-peft-")
    configs = args.configs.split(",")
    rates = dict(item.split("=", 1) for item in args.lr)
    unknown = sorted(set(configs + list(rates)) - set(CONFIGS))
    if unknown:
        p.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    results = []
    for task in args.tasks.split(","):
        data = task_dir(task, work)
        for seed in args.seeds:
            for name in configs:
                out = os.path.join(work, task, f"seed{seed}", name)
                result = run(task, name, data, out, args.epochs, os.path.join(work, task, f"seed{seed}", "full", "final"),
                             args.max_train_examples, seed, rates.get(name, ""))
                result.update(machine=cpu_model_name(), load_average=load_average(), epochs=args.epochs)
                results.append(result)
                print(json.dumps(result), flush=True)
                if args.json_out:
                    with open(args.json_out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(result) + "\n")
    print(table(results))
    return 0


def table(results: list) -> str:
    """One row per task and configuration: dev accuracy as mean (± population spread over seeds)."""
    lines = ["| task | config | lr | seeds | dev accuracy | trainable | % of total | stored apart | peak memory (MiB) "
             "| examples/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in results:
        groups.setdefault((r["task"], r["config"], r["learning_rate"]), []).append(r)
    for (task, name, rate), runs in groups.items():
        accuracy = [100 * r["accuracy"] for r in runs]
        spread = f" ± {statistics.pstdev(accuracy):.1f}" if len(runs) > 1 else ""
        first = runs[0]
        lines.append(f"| {task} | {name} | {rate:g} | {len(runs)} | {statistics.mean(accuracy):.1f}{spread} | "
                     f"{first['trainable']:,} | {100 * first['trainable'] / first['total']:.2f} | "
                     f"{first['stored_apart']:,} | {max(r['peak_rss_mib'] for r in runs):.0f} | "
                     f"{statistics.mean(r['examples_per_s'] for r in runs):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
