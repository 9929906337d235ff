"""Text classification (GLUE and CSV tasks) as a job of the one trainer.

    python -m mindtransformer.trainer.trainer --auto_model=bert_glue --task_name=RTE --data_dir=DIR \
        --init_from=HF_FOLDER [--key=value ...]

The task entry (data/glue.py) gives the files, labels and metrics; the examples are tokenized
once at start (or read from records made by generate_glue_mindrecord.py) and batched with
dynamic padding (data/classification.py). Evaluation runs on every dev file of the task at each
--eval_steps and at the end, every example exactly once over all ranks, and the best checkpoint is
kept by the task's main metric (or --assessment_method). The export `final/` is an HF folder
with the label names in config.json.

Shape legend: N examples, B batch, T padded length, L labels.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Tuple

import numpy as np

from mindtransformer.data import classification, glue
from mindtransformer.data.batches import TrainBatches
from mindtransformer.data.loaders import record_files
from mindtransformer.errors import UserInputError
from mindtransformer.trainer.loop import Best
from mindtransformer.trainer.prediction import predict_all
from mindtransformer.trainer.runner import Job, micro_batch_size, model_config
from mindtransformer.trainer.settings import METRIC_OF_METHOD, reads_records


def load_tokenizer_for(settings):
    """--vocab_file_path, else the tokenizer files of the --init_from (or --distill_from) folder."""
    from mindtransformer.data.tokenization import load_tokenizer

    if settings.vocab_file_path:
        return load_tokenizer(settings.vocab_file_path)
    source = settings.init_from or settings.distill_from
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    if folder and os.path.isfile(os.path.join(folder, "vocab.txt")):
        return load_tokenizer(folder)
    raise UserInputError("no tokenizer: pass --vocab_file_path=vocab.txt (or --init_from an HF folder holding one)")


def resolve_task(settings) -> glue.Task:
    s = settings
    if s.task_name.lower() == glue.GENERIC:
        if reads_records(s):
            raise UserInputError("--task_name=csv reads the CSV/TSV file itself; leave --dataset_format empty")
        return glue.csv_task(s.train_data_path, s.text_column, s.label_column, s.text_b_column)
    return glue.get_task(s.task_name)


def dev_examples(settings, task: glue.Task, train: list, train_path: str) -> Tuple[list, List[Tuple[str, list]]]:
    """(training examples, [(dev set name, examples)]): the task's dev files, --eval_data_path, or a
    seeded --dev_fraction of the training file (CSV tasks without a dev file)."""
    s = settings
    if task.name != glue.GENERIC:
        return train, [(name, glue.read_examples(task, path)) for name, path in glue.dev_sets(task, s.data_dir)]
    if s.eval_data_path:
        return train, [("dev", glue.read_examples(task, s.eval_data_path))]
    kept, held = glue.split_examples(train, s.dev_fraction, s.seed)
    print(f"{train_path}: no --eval_data_path; {len(held)} of {len(train)} examples held out for evaluation "
          f"(--dev_fraction={s.dev_fraction}, --seed={s.seed})", flush=True)
    return kept, [("dev", held)]


def read_features(settings, task: glue.Task, tokenizer) -> Tuple[classification.Features, list]:
    """(training features, [(dev set name, features)]) from the task files or from records."""
    s = settings
    if reads_records(s):
        train = classification.read_records(record_files(s.train_data_path), task.is_regression)
        devs = [("dev", classification.read_records(record_files(s.eval_data_path), task.is_regression))]
        return train.head(s.max_train_examples), devs
    train_path = s.train_data_path if task.name == glue.GENERIC else os.path.join(s.data_dir, "train.tsv")
    train, devs = dev_examples(s, task, glue.read_examples(task, train_path), train_path)
    featurize = lambda examples: classification.featurize(tokenizer, task, examples, s.seq_length)  # noqa: E731
    return featurize(train).head(s.max_train_examples), [(name, featurize(examples)) for name, examples in devs]


def main_metric(settings, task: glue.Task) -> str:
    if not settings.assessment_method:
        return task.main_metric
    metric = METRIC_OF_METHOD[settings.assessment_method]
    if metric not in task.metrics:
        raise UserInputError(f"--assessment_method={settings.assessment_method}: {task.name.upper()} is scored by "
                             f"{', '.join(task.metrics)}; pick one of those")
    return metric


def pad_multiple(settings) -> int:
    if settings.pad_to_multiple_of:
        return settings.pad_to_multiple_of
    # MindSpore GRAPH keeps one compiled graph per input shape, ~1.5 GB each for MiniLM on CPU
    # (measured: 8.2 GB peak with one shape, 14.3 GB with five): few shapes, at some padding cost.
    return 64 if settings.backend == "mindspore" and settings.mindspore_mode == "graph" else 1


def predictions_of(task: glue.Task, logits: np.ndarray) -> np.ndarray:
    """(N,) class ids (argmax) or regression scores."""
    return logits[:, 0] if task.is_regression else logits.argmax(axis=1)


def score_sets(task: glue.Task, run_batch, sets: Iterable, settings, rank: int, world_size: int, all_sum) -> dict:
    """Metrics of every dev set: the first set's under the plain names (accuracy, f1, ...), others
    suffixed with the set's name (MNLI: accuracy_dev_mismatched)."""
    metrics, pad_to = {}, settings.seq_length if settings.pad_to_max_length else 0
    for k, (name, features) in enumerate(sets):
        logits, loss = predict_all(run_batch, features, settings.eval_batch_size, rank, world_size, all_sum,
                                   pad_multiple(settings), pad_to)
        suffix = f"_{name}" if k else ""
        for metric, value in glue.score(task, predictions_of(task, logits), features.labels).items():
            metrics[metric + suffix] = value
        metrics["eval_loss" + suffix] = loss / len(features)
        metrics["eval_examples" + suffix] = len(features)
    return metrics


def classification_job(settings, world) -> Job:
    s = settings
    task = resolve_task(s)
    if s.num_labels and s.num_labels != task.num_labels:
        raise UserInputError(f"--num_labels={s.num_labels} but {task.name.upper()} has {task.num_labels} "
                             f"({', '.join(task.labels) or 'a regression score'}); drop --num_labels or fix it")
    metric = main_metric(s, task)
    tokenizer = load_tokenizer_for(s)
    train, devs = read_features(s, task, tokenizer)
    config = model_config(s).replace(
        num_labels=task.num_labels, id2label=None if task.is_regression else dict(enumerate(task.labels)),
        problem_type="regression" if task.is_regression else "single_label_classification")
    batches = TrainBatches(
        train, micro_batch_size(s, world), seed=s.seed, rank=world.rank, world_size=world.size, shuffle=s.do_shuffle,
        group_by_length=s.group_by_length, pad_multiple=pad_multiple(s), pad_to=s.seq_length if s.pad_to_max_length else 0)

    def evaluate(engine, step: int) -> dict:
        def run_batch(batch):
            outputs = engine.outputs(batch)
            return (float(outputs["loss"]) if "loss" in outputs else None), outputs["logits"]

        return score_sets(task, run_batch, devs, s, world.rank, world.size, lambda v: engine.all_sum(v, step))

    if world.is_main:
        print(f"{task.name.upper()}: {len(train)} training examples, "
              + ", ".join(f"{len(f)} in {name}" for name, f in devs)
              + f"; best checkpoint by {metric}", flush=True)
    return Job(config=config, task="sequence_classification", batches_per_epoch=batches.batches_per_epoch,
               make_epoch=batches.batches, best=Best(metric=metric, higher_is_better=True), evaluate=evaluate,
               tokenizer=tokenizer,
               manifest={"task": task.name, "labels": list(task.labels), "main_metric": metric,
                         "train_examples": len(train), "dev_examples": {name: len(f) for name, f in devs}})
