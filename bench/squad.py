"""SQuAD v1.1 fine-tuning, ours against an HF `run_qa`-style pipeline, side by side: EM/F1 and wall time.

The real SQuAD v1.1 dev set (../shared/data/squad_v1.1) split by article: the first 38 articles
to fine-tune on, the last 10 to evaluate. The real MiniLM-L6-H384 checkpoint, the same settings
on both sides: max_seq_length 384, doc_stride 128, max_query_length 64, batch 32, lr 5e-5,
2 epochs, linear decay without warmup, weight decay 0 (run_qa's defaults), n-best 20,
max_answer_length 30, bf16 autocast where the CPU has bf16 units (else fp32), seed 0 (--seeds for more).

    ours   python -m mindtransformer.trainer.trainer --auto_model=bert_squad ... (google's windows:
           doc_stride is the step between window starts; dynamic padding, length-grouped batches;
           google's post-processing; the official v1.1 metric)
    hf     transformers' fast tokenizer with return_overflowing_tokens/offsets (stride = overlap),
           every window padded to 384 (run_qa's default), AutoModelForQuestionAnswering + Trainer,
           then run_qa's offset-based post-processing (written here from its documented behaviour),
           scored with the same official v1.1 metric
    hf_best  the same with run_qa's --pad_to_max_length=False (DataCollatorWithPadding: padded per
           batch) and Trainer's group_by_length: HF's fastest way on this machine

Each side runs in its own process, one after the other. Wall time = the whole process: reading
and featurizing, loading the model, training, predicting, post-processing and scoring.

    .venv/bin/python bench/squad.py [--sides ours,hf] [--epochs 2] [--train_articles 38] [--json_out F]

Targets (issue 7): our F1 >= HF's F1 - 0.5; our wall time <= 0.67x HF's.
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

SQUAD_DEV = os.path.join(os.path.dirname(ROOT), "shared", "data", "squad_v1.1", "dev-v1.1.json")
SETTINGS = {"max_seq": 384, "stride": 128, "max_query": 64, "batch": 32, "lr": 5e-5, "weight_decay": 0.0,
            "n_best": 20, "max_answer": 30}
PYTHON = sys.executable


def split(folder: str, train_articles: int, eval_articles: int) -> tuple:
    with open(SQUAD_DEV, encoding="utf-8") as f:
        data = json.load(f)["data"]
    parts = {"train.json": data[:train_articles], "eval.json": data[-eval_articles:]}
    for name, articles in parts.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            json.dump({"version": "1.1", "data": articles}, f)
    return os.path.join(folder, "train.json"), os.path.join(folder, "eval.json")


def run_ours(train: str, dev: str, model: str, out: str, epochs: int, backend: str, seed: int) -> dict:
    s = SETTINGS
    cmd = [PYTHON, "-m", "mindtransformer.trainer.trainer", "--auto_model=bert_squad", f"--backend={backend}",
           f"--train_data_path={train}", f"--eval_data_path={dev}", f"--init_from={model}",
           f"--seq_length={s['max_seq']}", f"--doc_stride={s['stride']}", f"--max_query_length={s['max_query']}",
           f"--global_batch_size={s['batch']}", f"--learning_rate={s['lr']}", f"--weight_decay={s['weight_decay']}",
           f"--epoch_size={epochs}", f"--n_best_size={s['n_best']}", f"--max_answer_length={s['max_answer']}",
           "--precision=auto", f"--seed={seed}", f"--save_checkpoint_path={out}",
           "--save_checkpoint_steps=1000000", "--keep_checkpoint_max=1", "--log_steps=50"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"ours failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in records if "samples_per_s" in r]
    evaluation = [r for r in records if "f1" in r][-1]
    with open(os.path.join(out, "run_manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return {"exact_match": evaluation["exact_match"], "f1": evaluation["f1"], "wall_s": wall,
            "train_s": sum(s["batch"] / r["samples_per_s"] for r in steps), "steps": len(steps),
            "train_features": manifest["train_features"], "eval_features": manifest["eval_features"],
            "questions": evaluation["total"], "precision": manifest["precision"]}


HF_SCRIPT = r"""
import collections, json, os, sys
import numpy as np
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, default_data_collator, set_seed)
sys.path.insert(0, {root!r})
from mindtransformer.data import squad_metrics
a = json.loads(sys.argv[1])
def questions(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    rows = [dict(id=qa["id"], question=qa["question"].lstrip(), context=p["context"], answers=qa["answers"])
            for art in data for p in art["paragraphs"] for qa in p["qas"]]
    return data, rows
tok = AutoTokenizer.from_pretrained(a["model"])
def windows(rows):
    # run_qa's preparation: question first, only the context truncated, overlapping windows
    # (stride = tokens shared), offsets kept; every window padded to max_length (run_qa's default)
    # or, in the best configuration, padded per batch by the collator
    return tok([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
               max_length=a["max_seq"], stride=a["stride"], return_overflowing_tokens=True,
               return_offsets_mapping=True, padding=False if a["best"] else "max_length")
_, train_rows = questions(a["train"])
enc = windows(train_rows)
train = []
for i, offsets in enumerate(enc["offset_mapping"]):
    row = train_rows[enc["overflow_to_sample_mapping"][i]]
    answer = row["answers"][0]
    first, last = answer["answer_start"], answer["answer_start"] + len(answer["text"])
    seq = enc.sequence_ids(i)
    ctx = [k for k, s in enumerate(seq) if s == 1]
    start = end = 0  # [CLS] when the window does not hold the whole answer
    if offsets[ctx[0]][0] <= first and offsets[ctx[-1]][1] >= last:
        start = next(k for k in ctx if offsets[k][1] > first)
        end = next(k for k in reversed(ctx) if offsets[k][0] < last)
    train.append(dict(input_ids=enc["input_ids"][i], token_type_ids=enc["token_type_ids"][i],
                      attention_mask=enc["attention_mask"][i], start_positions=start, end_positions=end))
eval_data, eval_rows = questions(a["eval"])
enc = windows(eval_rows)
evaluation, offsets_of, example_of = [], [], []
for i, offsets in enumerate(enc["offset_mapping"]):
    seq = enc.sequence_ids(i)
    offsets_of.append([o if s == 1 else None for o, s in zip(offsets, seq)])
    example_of.append(enc["overflow_to_sample_mapping"][i])
    evaluation.append(dict(input_ids=enc["input_ids"][i], token_type_ids=enc["token_type_ids"][i],
                           attention_mask=enc["attention_mask"][i]))
set_seed(a["seed"])
model = AutoModelForQuestionAnswering.from_pretrained(a["model"])
targs = TrainingArguments(output_dir=a["out"], per_device_train_batch_size=a["batch"], per_device_eval_batch_size=64,
                          learning_rate=a["lr"], num_train_epochs=a["epochs"], weight_decay=a["weight_decay"],
                          bf16=a["bf16"], seed=a["seed"], save_strategy="no", eval_strategy="no", report_to=[],
                          train_sampling_strategy="group_by_length" if a["best"] else "random",
                          logging_strategy="no", disable_tqdm=True, use_cpu=True)
collator = DataCollatorWithPadding(tok) if a["best"] else default_data_collator
trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
result = trainer.train()
# Trainer's evaluation sampler follows group_by_length too, which would return the predictions in
# a shuffled order: predict in file order, as run_qa does (it does not group by length).
trainer.args.train_sampling_strategy = "random"
starts, ends = trainer.predict(evaluation).predictions
assert len(starts) == len(evaluation)
# run_qa's post-processing: per question, over its windows, the n-best start x end pairs inside
# the context, end >= start, at most max_answer tokens; the answer text is cut from the context
# by the offsets; the best score wins
by_example = collections.defaultdict(list)
for i, e in enumerate(example_of):
    by_example[e].append(i)
predictions = {{}}
for e, row in enumerate(eval_rows):
    candidates = []
    for i in by_example[e]:
        off = offsets_of[i]
        for s in np.argsort(starts[i])[::-1][:a["n_best"]]:
            for t in np.argsort(ends[i])[::-1][:a["n_best"]]:
                if s >= len(off) or t >= len(off) or off[s] is None or off[t] is None:
                    continue
                if t < s or t - s + 1 > a["max_answer"]:
                    continue
                candidates.append((starts[i][s] + ends[i][t], off[s][0], off[t][1]))
    best = max(candidates) if candidates else (0.0, 0, 0)
    predictions[row["id"]] = row["context"][best[1]:best[2]] if candidates else "empty"
scores = squad_metrics.evaluate_v1(eval_data, predictions)
print(json.dumps({{"exact_match": scores["exact_match"], "f1": scores["f1"], "train_s": result.metrics["train_runtime"],
                  "steps": result.global_step, "train_features": len(train), "eval_features": len(evaluation),
                  "questions": scores["total"]}}))
"""


def run_hf(train: str, dev: str, model: str, out: str, epochs: int, bf16: bool, best: bool, seed: int) -> dict:
    s = SETTINGS
    args = {"train": train, "eval": dev, "model": model, "out": out, "epochs": epochs, "bf16": bf16, "best": best,
            "seed": seed, **{k: s[k] for k in ("max_seq", "stride", "batch", "lr", "weight_decay", "n_best", "max_answer")}}
    started = time.perf_counter()
    done = subprocess.run([PYTHON, "-c", HF_SCRIPT.format(root=ROOT), json.dumps(args)], capture_output=True,
                          text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"HF pipeline failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall, "precision": "bf16" if bf16 else "fp32"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sides", default="ours,hf_best", help="some of ours, ours_ms, hf_best, hf")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train_articles", type=int, default=38, help="first N articles of the dev set to fine-tune on")
    p.add_argument("--eval_articles", type=int, default=10, help="last N articles to evaluate on")
    p.add_argument("--model_path", default=None, help="HF folder (default: the bundled MiniLM)")
    p.add_argument("--seeds", type=seed_list, default="0", help="comma-separated seeds, each side run once per seed")
    p.add_argument("--json_out", default="", help="append each side's result here as one JSON line")
    args = p.parse_args()
    from mindtransformer.trainer.settings import TrainSettings, effective_precision
    from mindtransformer.utils.bundled import minilm_path

    if not os.path.isfile(SQUAD_DEV):
        raise SystemExit(f"{SQUAD_DEV}: the SQuAD v1.1 dev set is not there (../shared/data beside the checkout)")
    model = args.model_path or minilm_path()
    bf16 = effective_precision(TrainSettings(precision="auto")) == "bf16"
    print(f"# {cpu_model_name()}, {os.cpu_count()} CPUs, load average {load_average():.2f} at start; "
          f"precision {'bf16' if bf16 else 'fp32'}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="squad-bench-") as folder:
        train, dev = split(folder, args.train_articles, args.eval_articles)
        for side in args.sides.split(","):
            for seed in args.seeds:
                out = os.path.join(folder, f"{side}-{seed}")
                if side.startswith("ours"):
                    r = run_ours(train, dev, model, out, args.epochs, "mindspore" if side == "ours_ms" else "torch", seed)
                else:
                    r = run_hf(train, dev, model, out, args.epochs, bf16, side == "hf_best", seed)
                r.update(side=side, seed=seed, epochs=args.epochs, load_average=load_average())
                results.setdefault(side, []).append(r)
                print(json.dumps(r), flush=True)
                if args.json_out:
                    with open(args.json_out, "a", encoding="utf-8") as f:
                        f.write(json.dumps(r) + "\n")
    mean = lambda runs, key: statistics.mean(r[key] for r in runs)  # noqa: E731
    for peer in ("hf_best", "hf"):
        if "ours" not in results or peer not in results:
            continue
        ours, hf = results["ours"], results[peer]
        print(f"vs {peer} (means over {len(ours)} / {len(hf)} seeds): F1 {mean(ours, 'f1'):.2f} vs {mean(hf, 'f1'):.2f} "
              f"(difference {mean(ours, 'f1') - mean(hf, 'f1'):+.2f}; target >= -0.5); EM {mean(ours, 'exact_match'):.2f} "
              f"vs {mean(hf, 'exact_match'):.2f}; wall {mean(ours, 'wall_s'):.0f} s vs {mean(hf, 'wall_s'):.0f} s = "
              f"{mean(ours, 'wall_s') / mean(hf, 'wall_s'):.2f}x (target <= 0.67x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
