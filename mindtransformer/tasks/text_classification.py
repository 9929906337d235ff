"""Evaluate a fine-tuned classifier on a task's dev files, or predict labels for new text.

    python -m mindtransformer.tasks.text_classification --load_checkpoint_path=run/final \
        --task_name=RTE --data_dir=glue/RTE                      # metrics: JSON on the last line
    python -m mindtransformer.tasks.text_classification --load_checkpoint_path=run/final \
        --text "A man is playing." --text_b "Someone plays."     # one prediction (JSON)
    python -m mindtransformer.tasks.text_classification --load_checkpoint_path=run/final/bert.ckpt \
        --backend=mindspore --input_file=texts.tsv               # a file of texts (tab: a pair)

--load_checkpoint_path is an HF folder (model.safetensors or pytorch_model.bin + config.json),
a MindSpore .ckpt beside its config.json, or a training checkpoint directory of the trainer.
The label names come from the checkpoint's config.json (id2label). Every dev example is
evaluated exactly once (counts asserted); per-example predictions go to
`<output_dir>/predictions_<dev set>.tsv`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np

from mindtransformer.data import classification, glue
from mindtransformer.errors import UserInputError
from mindtransformer.tasks.checkpoint import load_fine_tuned, select_device, tokenizer_for
from mindtransformer.utils.cli import StrictParser, run_main
from mindtransformer.utils.files import atomic_write_text


def build_parser() -> StrictParser:
    p = StrictParser(prog="python -m mindtransformer.tasks.text_classification", description=__doc__.split("\n\n")[0])
    p.add_argument("--load_checkpoint_path", required=True,
                   help="HF folder, MindSpore .ckpt (config.json beside it) or a trainer checkpoint directory")
    p.add_argument("--backend", default="torch", choices=("torch", "mindspore"), help="framework that runs the model")
    p.add_argument("--task_name", default="", help="evaluate on this task's dev files (a GLUE task, or csv)")
    p.add_argument("--data_dir", default="", help="directory of the GLUE task's files")
    p.add_argument("--eval_data_path", default="", help="--task_name=csv: the CSV/TSV file to evaluate on")
    p.add_argument("--text_column", default="", help="--task_name=csv: column of the text")
    p.add_argument("--text_b_column", default="", help="--task_name=csv: column of an optional second text")
    p.add_argument("--label_column", default="label", help="--task_name=csv: column of the label")
    p.add_argument("--text", default="", help="predict the label of this text")
    p.add_argument("--text_b", default="", help="second text of a pair, with --text")
    p.add_argument("--input_file", default="", help="predict every line of this file (a tab separates a pair)")
    p.add_argument("--output_dir", default="", help="where predictions files go (default: the checkpoint's folder)")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per example; longer pairs are truncated")
    p.add_argument("--batch_size", type=int, default=64, help="examples per batch")
    p.add_argument("--vocab_file_path", default="", help="vocab.txt (default: the checkpoint folder's)")
    p.add_argument("--device_target", default="CPU", choices=("CPU", "GPU"), help="where the model runs")
    return p


def label_names(config) -> list:
    if config.id2label:
        return [config.id2label[i] for i in range(config.num_labels)]
    return [str(i) for i in range(config.num_labels)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.task_name) + bool(args.text) + bool(args.input_file) != 1:
        raise UserInputError("pass one of --task_name (evaluate), --text or --input_file (predict)")
    from mindtransformer.backends import get_backend
    from mindtransformer.trainer.prediction import predict_all

    select_device(args.backend, args.device_target)
    model = load_fine_tuned(args.load_checkpoint_path, "sequence_classification", args.backend, what="classifier")
    backend = get_backend(args.backend)
    folder = model.pretrained_path
    tokenizer = tokenizer_for(model, args.vocab_file_path)
    regression = model.regression
    names = label_names(model.config)

    def run_batch(batch):
        return None, backend.infer(model, batch)["logits"]

    def infer(features):
        logits, _ = predict_all(run_batch, features, args.batch_size)
        return logits

    output_dir = args.output_dir or folder
    if args.task_name:
        return evaluate(args, tokenizer, infer, regression, names, output_dir)
    if args.text:
        texts, pairs = [args.text], ([args.text_b] if args.text_b else None)
    else:
        texts, pairs = read_inputs(args.input_file)
    task = glue.Task("predict", text_a=0, text_b=1 if pairs else None, labels=() if regression else tuple(names))
    examples = [glue.Example(str(i), t, pairs[i] if pairs else None, None) for i, t in enumerate(texts)]
    logits = infer(classification.featurize(tokenizer, task, examples, args.seq_length))
    rows = [prediction_row(row, regression, names) for row in logits]
    if args.input_file:
        path = os.path.join(output_dir, "predictions_" + os.path.splitext(os.path.basename(args.input_file))[0] + ".tsv")
        write_tsv(path, ["index", "prediction", "score"], [[i, r["label"], r["score"]] for i, r in enumerate(rows)])
        print(json.dumps({"predicted": len(rows), "predictions_file": path}))
    else:
        print(json.dumps({"text": args.text, **({"text_b": args.text_b} if args.text_b else {}), **rows[0]},
                         ensure_ascii=False))
    return 0


def prediction_row(logits: np.ndarray, regression: bool, names: list) -> dict:
    if regression:
        return {"label": float(logits[0]), "score": float(logits[0])}
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    best = int(probabilities.argmax())
    return {"label": names[best], "score": float(probabilities[best]),
            "probabilities": {name: round(float(p), 6) for name, p in zip(names, probabilities)}}


def evaluate(args, tokenizer, infer, regression: bool, names: list, output_dir: str) -> int:
    from mindtransformer.trainer.classification import predictions_of

    if args.task_name.lower() == glue.GENERIC:
        if not args.eval_data_path or not args.text_column:
            raise UserInputError("--task_name=csv needs --eval_data_path and --text_column")
        task = glue.csv_task(args.eval_data_path, args.text_column, args.label_column, args.text_b_column)
        task = dataclasses.replace(task, labels=tuple(names))  # the checkpoint's label order
        files = [("dev", args.eval_data_path)]
    else:
        if not args.data_dir:
            raise UserInputError(f"--task_name={args.task_name} needs --data_dir, the directory of its GLUE files")
        task = glue.get_task(args.task_name)
        files = glue.dev_sets(task, args.data_dir)
    if task.is_regression != regression or (not regression and task.num_labels != len(names)):
        raise UserInputError(f"{args.load_checkpoint_path}: a classifier of {len(names)} labels ({', '.join(names)}) "
                             f"cannot be scored on {task.name.upper()} ({task.num_labels}); pass its own checkpoint")
    if not regression and list(task.labels) != names and task.name != glue.GENERIC:
        raise UserInputError(f"{args.load_checkpoint_path}: labels {names} differ from {task.name.upper()}'s "
                             f"{list(task.labels)}; pass a checkpoint fine-tuned on {task.name.upper()}")
    metrics = {"task": task.name}
    for k, (name, path) in enumerate(files):
        examples = glue.read_examples(task, path)
        features = classification.featurize(tokenizer, task, examples, args.seq_length)
        logits = infer(features)
        assert len(logits) == len(examples), f"{len(logits)} predictions for {len(examples)} examples"
        predicted = predictions_of(task, logits)
        suffix = f"_{name}" if k else ""
        metrics.update({m + suffix: v for m, v in glue.score(task, predicted, features.labels).items()})
        metrics["examples" + suffix] = len(examples)
        shown = predicted if regression else [names[i] for i in predicted]
        path_out = os.path.join(output_dir, f"predictions_{name}.tsv")
        write_tsv(path_out, ["guid", "prediction", "label"],
                  [[e.guid, p, e.label] for e, p in zip(examples, shown)])
        print(f"{path}: {len(examples)} examples evaluated; predictions in {path_out}", file=sys.stderr)
    print(json.dumps(metrics))
    return 0


def read_inputs(path: str) -> tuple:
    """(texts, pairs or None) from a UTF-8 file: one example per line, a tab separating a pair."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        raise UserInputError(f"--input_file={path}: no such file") from None
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not lines:
        raise UserInputError(f"{path}: no text in it; one example per line (a tab separates a pair)")
    split = [line.split("\t") for line in lines]
    if any(len(parts) > 2 for parts in split):
        number = next(i for i, parts in enumerate(split, 1) if len(parts) > 2)
        raise UserInputError(f"{path}:{number}: more than two tab-separated texts; one text or one pair per line")
    if any(len(parts) == 2 for parts in split):
        if not all(len(parts) == 2 for parts in split):
            number = next(i for i, parts in enumerate(split, 1) if len(parts) != 2)
            raise UserInputError(f"{path}:{number}: one text where the other lines hold pairs; make every line a pair")
        return [p[0] for p in split], [p[1] for p in split]
    return lines, None


def write_tsv(path: str, header: list, rows: list) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(run_main(main))
