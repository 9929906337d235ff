"""Evaluate models on multiple-choice questions, per subject and overall, side by side.

    python -m mindtransformer.tasks.multiple_choice --questions=outputs/multiple_choice/test_questions.json \
        --model base=MLM_FOLDER --model fine_tuned=outputs/multiple_choice/final

Each --model NAME=PATH is answered the way its checkpoint allows: a multiple-choice head
(BertForMultipleChoice, e.g. the trainer's final/ folder) scores [CLS] question [SEP] option [SEP];
a masked-LM checkpoint (BertForMaskedLM or BertForPreTraining) answers zero-shot by the options'
masked-LM likelihood (tasks/masked_lm.py). The questions are a JSON file written by a training
run (`test_questions.json`) or --data_dir with --subjects, split as the trainer splits it
(--split, --split_seed). Writes accuracy.json, accuracy.md (the table) and accuracy.png (a bar
chart, chance level marked) into --output_dir.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from mindtransformer.data import multiple_choice as mc
from mindtransformer.errors import UserInputError
from mindtransformer.utils.cli import StrictParser, run_main
from mindtransformer.utils.files import atomic_path, atomic_write_text

HEAD, MLM = "multiple-choice head", "masked-LM scoring"


def build_parser() -> StrictParser:
    p = StrictParser(prog="python -m mindtransformer.tasks.multiple_choice", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="a model to evaluate (repeat for a side-by-side table): an HF folder with a multiple-choice "
                        "head or a masked-LM head, a MindSpore .ckpt beside its config.json, or a trainer checkpoint")
    p.add_argument("--questions", default="", help="questions JSON written by a training run (test_questions.json)")
    p.add_argument("--data_dir", default="", help="or: a CSV, a folder of subject CSVs or TMMLU's folder, split as "
                   "the trainer does")
    p.add_argument("--subjects", default="", help="with --data_dir: comma-separated subjects (empty: all)")
    p.add_argument("--split", default="test", choices=mc.SPLITS, help="with --data_dir: which part to evaluate")
    p.add_argument("--split_seed", type=int, default=0, help="with --data_dir: the trainer's --split_seed")
    p.add_argument("--num_choices", type=int, default=4, help="with --data_dir: options per question")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per [CLS] question [SEP] option [SEP]")
    p.add_argument("--batch_size", type=int, default=32, help="questions (head) or windows (masked LM) per batch")
    p.add_argument("--output_dir", default="outputs/multiple_choice_eval", help="where the table and chart go")
    p.add_argument("--backend", default="torch", choices=("torch", "mindspore"), help="framework that runs the models")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is there (default: detect)")
    return p


def parse_models(specs: list) -> list:
    models = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserInputError(f"--model {spec}: write NAME=PATH, e.g. --model fine_tuned=outputs/multiple_choice/final")
        models.append((name, path))
    if len({n for n, _ in models}) != len(models):
        raise UserInputError("--model: two models share a name; give each its own NAME")
    return models


def method_of(path: str) -> str:
    """HEAD or MLM from the checkpoint's config.json architectures (trainer checkpoints: their state)."""
    from mindtransformer.pretrained import find_weights
    from mindtransformer.trainer.checkpoints import STATE_FILE

    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if os.path.isfile(os.path.join(folder, STATE_FILE)):  # a trainer checkpoint: what did the run train?
        with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as f:
            trained = json.load(f).get("settings", {}).get("auto_model")
        return {"bert_multiple_choice": HEAD, "bert": MLM}.get(trained) or _no_head(path, trained)
    config_file = os.path.join(find_weights(path)[0], "config.json")
    try:
        with open(config_file, encoding="utf-8") as f:
            architectures = json.load(f).get("architectures") or []
    except (OSError, json.JSONDecodeError):
        raise UserInputError(f"{config_file}: missing or not JSON; the model's config.json must be beside its weights") from None
    if "BertForMultipleChoice" in architectures:
        return HEAD
    if {"BertForMaskedLM", "BertForPreTraining"} & set(architectures):
        return MLM
    return _no_head(path, ", ".join(architectures) or "bare BERT")


def _no_head(path: str, kind: str) -> str:
    raise UserInputError(f"{path}: a {kind} checkpoint has neither a multiple-choice head nor a masked-LM head; "
                         "fine-tune one with --auto_model=bert_multiple_choice")


def head_predictions(path: str, questions: list, args) -> np.ndarray:
    from mindtransformer.backends import get_backend
    from mindtransformer.tasks.checkpoint import load_fine_tuned, pick_device, tokenizer_for
    from mindtransformer.trainer.prediction import predict_all

    model = load_fine_tuned(path, "multiple_choice", args.backend, what="multiple-choice head")
    if args.backend == "torch":
        model.to(pick_device(args.cpu))
    features = mc.featurize(tokenizer_for(model, ""), questions, args.seq_length)
    backend = get_backend(args.backend)
    logits, _ = predict_all(lambda batch: (None, backend.infer(model, batch)["logits"]), features, args.batch_size)
    return logits.argmax(axis=1)


def mlm_predictions(path: str, questions: list, args) -> np.ndarray:
    from mindtransformer.tasks.masked_lm import MaskedLanguageModel

    mlm = MaskedLanguageModel.load(path, args.backend, args.cpu)
    mlm.max_seq_length = min(mlm.max_seq_length, args.seq_length)
    scores = mlm.option_scores([q.question for q in questions], [q.options for q in questions], args.batch_size,
                               progress=True)
    return np.asarray([int(np.argmax(s)) for s in scores])


def load_questions(args) -> list:
    if bool(args.questions) == bool(args.data_dir):
        raise UserInputError("pass --questions (a run's test_questions.json) or --data_dir, not both")
    if args.questions:
        questions = mc.read_json(args.questions)
    else:
        data = mc.read_subjects(args.data_dir, args.subjects, args.num_choices)
        questions = mc.split(data.questions, args.split_seed)[args.split]
    unanswered = [q.source for q in questions if q.answer < 0]
    if unanswered:
        raise UserInputError(f"{unanswered[0]}: a question without an answer; evaluation needs every answer")
    if not questions:
        raise UserInputError("no questions to evaluate (after --subjects and the split)")
    return questions


def table(results: dict, counts: dict, chance: float) -> str:
    """Markdown: one row per subject (then overall), one column per model."""
    names = list(results)
    subjects = [s for s in counts if s != "overall"]
    lines = ["| # | subject | questions | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for k, subject in enumerate(subjects, 1):
        cells = " | ".join(f"{100 * results[n]['accuracy'][subject]:.1f}" for n in names)
        lines.append(f"| {k} | {subject} | {counts[subject]} | {cells} |")
    cells = " | ".join(f"**{100 * results[n]['accuracy']['overall']:.1f}**" for n in names)
    lines.append(f"| | **overall** | {counts['overall']} | {cells} |")
    methods = "; ".join(f"{n}: {results[n]['method']}" for n in names)
    return "\n".join(lines) + f"\n\nAccuracy in %, chance level {100 * chance:.0f} %. {methods}.\n"


def cjk_font():
    """A font that draws CJK subject names, or None (then the bars are numbered as in the table)."""
    from matplotlib import font_manager

    for font in font_manager.fontManager.ttflist:
        if any(key in font.name for key in ("CJK", "WenQuanYi", "Hei", "Ming", "Song", "Gothic")):
            return font.name
    return None


def bar_chart(results: dict, counts: dict, chance: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = [s for s in counts if s != "overall"]
    font = cjk_font()
    labels = ["overall"] + (subjects if font else [str(k) for k in range(1, len(subjects) + 1)])
    keys = ["overall"] + subjects
    names = list(results)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(keys) * len(names) + 2), 4.5), dpi=100)
    x = np.arange(len(keys))
    for k, name in enumerate(names):
        ax.bar(x + k * width, [100 * results[name]["accuracy"][s] for s in keys], width, label=name)
    ax.axhline(100 * chance, color="gray", ls="--", lw=1, label=f"chance ({100 * chance:.0f} %)")
    ax.set_xticks(x + width * (len(names) - 1) / 2)
    ax.set_xticklabels(labels, rotation=90, fontsize=7, **({"fontname": font} if font else {}))
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("subject" + ("" if font else " (numbered as in accuracy.md)"))
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    models = parse_models(args.model)
    questions = load_questions(args)
    labels = np.asarray([q.answer for q in questions])
    subjects = [q.subject for q in questions]
    counts = {"overall": len(questions), **{s: subjects.count(s) for s in sorted(set(subjects))}}
    chance = float(np.mean([1 / len(q.options) for q in questions]))
    results = {}
    for name, path in models:
        method = method_of(path)
        predict = head_predictions if method == HEAD else mlm_predictions
        predictions = predict(path, questions, args)
        results[name] = {"path": path, "method": method,
                         "accuracy": mc.accuracy_by_subject(subjects, predictions, labels)}
        print(f"{name} ({method}): accuracy {100 * results[name]['accuracy']['overall']:.1f} % on "
              f"{len(questions)} questions", file=sys.stderr, flush=True)
    os.makedirs(args.output_dir, exist_ok=True)
    summary = {"questions": counts, "chance": chance, "models": results}
    atomic_write_text(os.path.join(args.output_dir, "accuracy.json"), json.dumps(summary, ensure_ascii=False, indent=1))
    markdown = table(results, counts, chance)
    atomic_write_text(os.path.join(args.output_dir, "accuracy.md"), markdown)
    bar_chart(results, counts, chance, os.path.join(args.output_dir, "accuracy.png"))
    print(markdown)
    print(f"accuracy.json, accuracy.md and accuracy.png are in {args.output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
