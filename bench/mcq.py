"""TMMLU multiple choice: the untuned model against the fine-tuned one, two ways of answering.

The real TMMLU copy (../shared/data/tmmlu, 3,239 four-option questions over 49 subjects) split
per subject 70/25/5 with --split_seed (the trainer's split). The real MiniLM-L6-H384 checkpoint.
Four models, all through our command lines:

    head_base       MiniLM + a freshly initialised (seed 0) multiple-choice head: the untuned model
    head_tuned      --auto_model=bert_multiple_choice on the training split (--epochs, lr 5e-5, batch 16)
    mlm_base        MiniLM + its masked-LM head trained by a short MLM run on text outside TMMLU
                    (the Chinese food-delivery reviews of ../shared/data/chinese_sentiment): the
                    untuned model for zero-shot option scoring
    mlm_tuned       mlm_base after MLM on the training split's questions with their right answers

Each is scored on the validation (812) and test (164) splits by
`python -m mindtransformer.tasks.multiple_choice` (accuracy per subject and overall; chance 25 %).

    .venv/bin/python bench/mcq.py [--epochs 2] [--mlm_steps 300] [--json_out F]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, cpu_model_name, load_average  # noqa: E402
from mindtransformer.utils import bundled  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
TMMLU = os.path.join(SHARED, "tmmlu")
REVIEWS = os.path.join(SHARED, "chinese_sentiment", "waimai_10k", "waimai_10k.csv")
PYTHON = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def call(*args) -> float:
    """Run our command line; its wall time."""
    started = time.perf_counter()
    done = subprocess.run([PYTHON, *args], capture_output=True, text=True, cwd=ROOT, env=ENV)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def write_documents(path: str, documents) -> None:
    """create_pretraining_data's input: one sentence per line, a blank line between documents."""
    with open(path, "w", encoding="utf-8") as f:
        for sentences in documents:
            f.write("\n".join(s.replace("\n", " ") for s in sentences) + "\n\n")


def mlm_run(text: str, init: str, out: str, steps: int, seed: int) -> float:
    records = os.path.join(out, "records")
    seconds = call("tools/create_pretraining_data.py", f"--input_file={text}", f"--output_file={records}/r.tfrecord",
                   f"--vocab_file={os.path.join(bundled.minilm_path(), 'vocab.txt')}", "--dupe_factor=2",
                   f"--random_seed={seed}", "--quiet")
    return seconds + call("-m", "mindtransformer.trainer.trainer", "--auto_model=bert", f"--train_data_path={records}",
                          f"--init_from={init}", "--seq_length=128", "--global_batch_size=32", "--learning_rate=1e-4",
                          f"--train_steps={steps}", f"--warmup_steps={steps // 10}", "--precision=auto",
                          f"--seed={seed}", f"--save_checkpoint_path={out}", "--save_checkpoint_steps=1000000",
                          "--log_steps=50")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="multiple-choice fine-tuning epochs")
    p.add_argument("--mlm_steps", type=int, default=300, help="steps of each MLM run (batch 32)")
    p.add_argument("--split_seed", type=int, default=0)
    p.add_argument("--max_train_questions", type=int, default=0, help="fine-tune on the first N only (0: all; quick checks)")
    p.add_argument("--work_dir", default="", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json_out", default="", help="append the result as one JSON line")
    args = p.parse_args()
    if not os.path.isdir(TMMLU):
        raise SystemExit(f"{TMMLU}: the TMMLU copy is needed")
    work = args.work_dir or tempfile.mkdtemp(prefix="bench-mcq-")
    os.makedirs(work, exist_ok=True)
    minilm, seconds = bundled.minilm_path(), {}
    sys.path.insert(0, ROOT)
    from mindtransformer.backends import get_backend
    from mindtransformer.data import multiple_choice as mc
    from mindtransformer.pretrained import from_pretrained, save_pretrained

    # head_base: the untuned model with a seeded multiple-choice head
    get_backend("torch").manual_seed(0)
    save_pretrained(from_pretrained(minilm, task="multiple_choice"), os.path.join(work, "head_base"))
    # head_tuned
    seconds["head_tuned"] = call(
        "-m", "mindtransformer.trainer.trainer", "--auto_model=bert_multiple_choice", f"--data_dir={TMMLU}",
        f"--split_seed={args.split_seed}", f"--init_from={minilm}", "--seq_length=128", "--global_batch_size=16",
        "--learning_rate=5e-5", f"--epoch_size={args.epochs}", "--warmup_ratio=0.1", "--precision=auto",
        f"--save_checkpoint_path={os.path.join(work, 'head_tuned')}", "--save_checkpoint_steps=1000000",
        f"--max_train_examples={args.max_train_questions}", "--log_steps=20")
    # mlm_base: an MLM head trained on Chinese reviews (outside TMMLU), 5 reviews a document
    with open(REVIEWS, encoding="utf-8", newline="") as f:
        reviews = [row["review"] for row in csv.DictReader(f)]
    write_documents(os.path.join(work, "reviews.txt"), [reviews[i:i + 5] for i in range(0, len(reviews), 5)])
    seconds["mlm_base"] = mlm_run(os.path.join(work, "reviews.txt"), minilm, os.path.join(work, "mlm_base"),
                                  args.mlm_steps, 0)
    # mlm_tuned: MLM on the training split's questions with their right answers
    train = mc.split(mc.read_subjects(TMMLU).questions, args.split_seed)["train"]
    write_documents(os.path.join(work, "train.txt"), [[q.question, q.options[q.answer]] for q in train])
    seconds["mlm_tuned"] = mlm_run(os.path.join(work, "train.txt"), os.path.join(work, "mlm_base", "final"),
                                   os.path.join(work, "mlm_tuned"), args.mlm_steps, 1)

    models = {"head_base": "head_base", "head_tuned": "head_tuned/final", "mlm_base": "mlm_base/final",
              "mlm_tuned": "mlm_tuned/final"}
    result = {"bench": "mcq", "machine": cpu_model_name(), "load_average": load_average(), "epochs": args.epochs,
              "mlm_steps": args.mlm_steps, "split_seed": args.split_seed, "train_seconds": seconds, "splits": {}}
    for split in ("validation", "test"):
        out = os.path.join(work, f"eval_{split}")
        call("-m", "mindtransformer.tasks.multiple_choice", f"--data_dir={TMMLU}", f"--split={split}",
             f"--split_seed={args.split_seed}", "--seq_length=128", f"--output_dir={out}",
             *[f"--model={name}={os.path.join(work, path)}" for name, path in models.items()])
        with open(os.path.join(out, "accuracy.json"), encoding="utf-8") as f:
            summary = json.load(f)
        result["splits"][split] = {"questions": summary["questions"]["overall"], "chance": summary["chance"],
                                   **{n: summary["models"][n]["accuracy"]["overall"] for n in models}}
        print(f"{split}: {summary['questions']['overall']} questions; table and chart in {out}", file=sys.stderr)
    print("| split | questions | chance | " + " | ".join(models) + " |")
    print("|---|---|---|" + "---|" * len(models))
    for split, row in result["splits"].items():
        print(f"| {split} | {row['questions']} | {100 * row['chance']:.0f} % | "
              + " | ".join(f"{100 * row[n]:.1f}" for n in models) + " |")
    if args.json_out:
        with open(args.json_out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
