"""GLUE fine-tuning, ours against HF `Trainer`, side by side: dev scores and training throughput.

The real MiniLM-L6-H384 checkpoint fine-tuned on real RTE and MRPC (../shared/data/glue) with the
same settings everywhere: max_seq 128, batch 32, lr 3e-5, 3 epochs, weight decay 0.01, linear
decay without warmup, dynamic padding. Configurations:

    ours_torch   python -m mindtransformer.trainer.trainer --auto_model=bert_glue --backend=torch
                 --precision=auto (bf16 on a CPU with AVX512-BF16/AMX), length-grouped batches
    ours_ms      the same with --backend=mindspore (fp32, GRAPH mode)
    hf_best      transformers.Trainer with bf16=True and group_by_length=True
    hf_default   transformers.Trainer with its defaults (fp32, no length grouping)
    hf_ours_model  hf_best's Trainer driving our torch model (not a target: a diagnostic that
                 tells whether a score gap between ours and hf_best comes from the model or the loop)

Each configuration runs in its own process, one after the other (never two at once on this
machine). Throughput = training examples processed / training wall time (HF: train_runtime;
ours: the sum of the step times in metrics.jsonl; both include batching, neither evaluation).

    .venv/bin/python bench/glue.py [--tasks rte,mrpc] [--seeds 0,1,2] [--configs ...] [--epochs 3]
        [--json_out results.jsonl]   # appends one line per run; the summary table is printed at the end

Targets (issue 6): our dev accuracy/F1 mean >= HF Trainer's mean minus one standard deviation;
our throughput >= 1.5x hf_best and >= 3x hf_default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, cpu_model_name, load_average, seed_list  # noqa: E402

GLUE = os.path.join(os.path.dirname(ROOT), "shared", "data", "glue")
# adam_epsilon: HF TrainingArguments' default, which our trainer takes as a flag (its own default
# is google's 1e-6).
SETTINGS = {"max_seq": 128, "batch": 32, "lr": 3e-5, "weight_decay": 0.01, "adam_epsilon": 1e-8}
CONFIGS = ("ours_torch", "ours_ms", "hf_best", "hf_default")  # the targets' runs, the default
DIAGNOSTICS = ("hf_ours_model",)
KNOWN = CONFIGS + DIAGNOSTICS
PYTHON = sys.executable


def run_ours(backend: str, task: str, seed: int, epochs: int, model: str, out: str, limit: int) -> dict:
    cmd = [PYTHON, "-m", "mindtransformer.trainer.trainer", "--auto_model=bert_glue", f"--task_name={task}",
           f"--data_dir={os.path.join(GLUE, task.upper())}", f"--init_from={model}", f"--backend={backend}",
           f"--seq_length={SETTINGS['max_seq']}", f"--global_batch_size={SETTINGS['batch']}",
           f"--learning_rate={SETTINGS['lr']}", f"--weight_decay={SETTINGS['weight_decay']}",
           f"--adam_epsilon={SETTINGS['adam_epsilon']}", f"--epoch_size={epochs}",
           "--precision=auto", f"--seed={seed}", f"--save_checkpoint_path={out}", "--save_checkpoint_steps=1000000",
           "--keep_checkpoint_max=1", "--log_steps=50"]
    if limit:
        cmd.append(f"--max_train_examples={limit}")
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"ours ({backend}) failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in records if "samples_per_s" in r]
    evaluation = [r for r in records if "eval_loss" in r][-1]
    train_time = sum(SETTINGS["batch"] / r["samples_per_s"] for r in steps)
    with open(os.path.join(out, "run_manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    examples = manifest["train_examples"]
    return {"accuracy": evaluation["accuracy"], "f1": evaluation.get("f1"), "train_s": train_time,
            "examples_per_s": len(steps) * SETTINGS["batch"] / train_time, "steps": len(steps),
            "train_examples": examples, "precision": manifest["precision"],
            "wall_s": time.perf_counter() - started}


HF_SCRIPT = r"""
import json, sys, os, numpy as np
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import (AutoTokenizer, AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                          TrainingArguments, set_seed)
from sklearn.metrics import accuracy_score, f1_score
sys.path.insert(0, {root!r})
from mindtransformer.data import glue
args = json.loads(sys.argv[1])
task = glue.get_task(args["task"])
tok = AutoTokenizer.from_pretrained(args["model"])
def dataset(name, limit=0):
    examples = glue.read_examples(task, os.path.join(args["data_dir"], name))
    if limit:
        examples = examples[:limit]
    labels = glue.label_ids(task, examples)
    enc = tok([e.text_a for e in examples], [e.text_b for e in examples], truncation=True, max_length=args["max_seq"])
    return [{{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "labels": int(labels[i])}} for i in range(len(examples))]
train, dev = dataset("train.tsv", args["limit"]), dataset(task.dev_files[0])
set_seed(args["seed"])
if args["ours_model"]:
    import types, torch, mindtransformer as mt
    class OursForTrainer(torch.nn.Module):  # Trainer sets model.config.use_cache; ours' config is frozen
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, types.SimpleNamespace(use_cache=False)
        def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
            return self.inner(input_ids, attention_mask, token_type_ids, labels)  # {{"loss", "logits"}}
    model = OursForTrainer(mt.from_pretrained(args["model"], task="sequence_classification", backend="torch",
                                              num_labels=task.num_labels))
else:
    model = AutoModelForSequenceClassification.from_pretrained(args["model"], num_labels=task.num_labels)
targs = TrainingArguments(output_dir=args["out"], per_device_train_batch_size=args["batch"],
                          per_device_eval_batch_size=64, learning_rate=args["lr"], num_train_epochs=args["epochs"],
                          weight_decay=args["weight_decay"], adam_epsilon=args["adam_epsilon"],
                          bf16=args["bf16"],
                          train_sampling_strategy="group_by_length" if args["group"] else "random",
                          seed=args["seed"], save_strategy="no", eval_strategy="no", report_to=[],
                          logging_strategy="no", disable_tqdm=True, use_cpu=True)
trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
result = trainer.train()
# Trainer's evaluation sampler follows group_by_length too, which would return the predictions in
# a shuffled order: predict in file order.
trainer.args.train_sampling_strategy = "random"
logits = trainer.predict(dev).predictions
predicted = logits.argmax(-1)
references = np.array([d["labels"] for d in dev])
print(json.dumps({{"accuracy": accuracy_score(references, predicted),
                  "f1": f1_score(references, predicted) if "f1" in task.metrics else None,
                  "train_s": result.metrics["train_runtime"],
                  "examples_per_s": result.metrics["train_samples_per_second"],
                  "steps": result.global_step, "train_examples": len(train), "dev_examples": len(dev)}}))
"""


def run_hf(best: bool, task: str, seed: int, epochs: int, model: str, out: str, limit: int,
           ours_model: bool = False) -> dict:
    args = {"task": task, "model": model, "data_dir": os.path.join(GLUE, task.upper()), "seed": seed,
            "epochs": epochs, "bf16": best, "group": best, "out": out, "limit": limit, "ours_model": ours_model,
            "max_seq": SETTINGS["max_seq"], "batch": SETTINGS["batch"], "lr": SETTINGS["lr"],
            "weight_decay": SETTINGS["weight_decay"], "adam_epsilon": SETTINGS["adam_epsilon"]}
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-c", HF_SCRIPT.format(root=ROOT), json.dumps(args)], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"HF Trainer failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["precision"] = "bf16" if best else "fp32"
    result["wall_s"] = time.perf_counter() - started
    return result


def summarize(results: list) -> list:
    """One line per (task, config): mean ± std of accuracy / F1 over seeds, median throughput, and
    Welch's t-test of the accuracies against hf_best's (scipy; does the gap exceed the seeds' noise?)."""
    from scipy import stats

    lines, groups = [], {}
    for r in results:
        groups.setdefault((r["task"], r["config"]), []).append(r)

    def mean_std(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"

    def welch_p(runs, peer_runs):
        ours, theirs = [r["accuracy"] for r in runs], [r["accuracy"] for r in peer_runs or ()]
        if runs is peer_runs or len(ours) < 2 or len(theirs) < 2:
            return "-"
        return f"{stats.ttest_ind(ours, theirs, equal_var=False).pvalue:.3f}"

    lines.append("| task | config | seeds | accuracy | F1 | examples/s (median) | vs hf_best | vs hf_default "
                 "| accuracy vs hf_best: Welch p |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for (task, config), runs in sorted(groups.items()):
        speed = statistics.median(r["examples_per_s"] for r in runs)
        ratios = []
        for peer in ("hf_best", "hf_default"):
            other = groups.get((task, peer))
            ratios.append(f"{speed / statistics.median(r['examples_per_s'] for r in other):.2f}x" if other else "-")
        lines.append(f"| {task} | {config} | {len(runs)} | {mean_std([r['accuracy'] for r in runs])} | "
                     f"{mean_std([r['f1'] for r in runs])} | {speed:.1f} | {ratios[0]} | {ratios[1]} | "
                     f"{welch_p(runs, groups.get((task, 'hf_best')))} |")
    return lines


def read_results(paths: str) -> list:
    """The runs of comma-separated --json_out files; a (task, config, seed, epochs) run that is in
    several files (the same run summarized twice) counts once, as its last line."""
    runs = {}
    for path in paths.split(","):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file; give the --json_out files of earlier runs")
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    r = json.loads(line) if line.strip() else None
                    if r is not None:
                        runs[(r["task"], r["config"], r["seed"], r.get("epochs"))] = r
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}:{number}: not a run of bench/glue.py --json_out "
                                     "(one JSON object with task, config, seed a line)") from None
    return list(runs.values())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", default="rte,mrpc")
    p.add_argument("--seeds", type=seed_list, default="0,1,2", help="comma-separated seeds")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {', '.join(KNOWN)}")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max_train_examples", type=int, default=0, help="first N training examples only (0: all)")
    p.add_argument("--model_path", default=None, help="HF folder (default: the bundled MiniLM)")
    p.add_argument("--json_out", default="", help="append each run's result here as one JSON line")
    p.add_argument("--summarize", default="",
                   help="only print the table of earlier --json_out files (comma-separated; a run in several counts once)")
    args = p.parse_args()
    unknown = sorted(set(args.configs.split(",")) - set(KNOWN))
    if unknown:
        p.error(f"--configs: no configuration {', '.join(unknown)}; choose from {', '.join(KNOWN)}")
    if args.summarize:
        try:
            results = read_results(args.summarize)
        except ValueError as error:
            p.error(f"--summarize: {error}")
        print("\n".join(summarize(results)))
        return 0
    from mindtransformer.utils.bundled import minilm_path

    model = args.model_path or minilm_path()
    if not os.path.isdir(GLUE):
        raise SystemExit(f"{GLUE}: the GLUE data is not there (../shared/data beside the checkout)")
    print(f"# {cpu_model_name()}, {os.cpu_count()} CPUs, load average {load_average():.2f} at start", flush=True)
    results = []
    for task in args.tasks.split(","):
        for seed in args.seeds:
            for config in args.configs.split(","):
                with tempfile.TemporaryDirectory(prefix="glue-bench-") as out:
                    if config.startswith("ours"):
                        r = run_ours("torch" if config == "ours_torch" else "mindspore", task, seed, args.epochs,
                                     model, out, args.max_train_examples)
                    else:
                        r = run_hf(config != "hf_default", task, seed, args.epochs, model, out,
                                   args.max_train_examples, ours_model=config == "hf_ours_model")
                r.update(task=task, config=config, seed=seed, epochs=args.epochs, load_average=load_average())
                results.append(r)
                print(json.dumps(r), flush=True)
                if args.json_out:
                    with open(args.json_out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(r) + "\n")
    print("\n".join(summarize(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
