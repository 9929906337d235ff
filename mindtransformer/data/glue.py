"""Text-classification tasks as table entries: files, text and label columns, label set, metrics.

A task is a `Task`: reading its files and scoring predictions follow from the entry, so a new
task is a few lines here, not a script. The nine GLUE tasks read GLUE's own files (`train.tsv`,
`dev.tsv`; MNLI: `dev_matched.tsv` / `dev_mismatched.tsv`) as GLUE writes them: tab-separated,
no quoting, UTF-8 (MRPC's byte-order mark dropped), a header row except for CoLA. `csv_task`
makes the entry of any CSV/TSV with a header (e.g. `label,review`), its labels read from the
training file. Metrics come from scikit-learn and SciPy.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mindtransformer.errors import UserInputError, closest_name


@dataclasses.dataclass(frozen=True)
class Example:
    guid: str
    text_a: str
    text_b: Optional[str]
    label: object  # a label string, a float (STS-B) or None (test files)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    text_a: object                 # header name, or column index for header-less files
    text_b: object = None
    label: object = "label"
    labels: Tuple[str, ...] = ("0", "1")  # empty: regression (one float output)
    metrics: Tuple[str, ...] = ("accuracy",)
    dev_files: Tuple[str, ...] = ("dev.tsv",)
    header: bool = True
    delimiter: str = "\t"         # GLUE: tabs and no quoting; "," : CSV with its quoting rules

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: Dict[str, Task] = {t.name: t for t in (
    Task("cola", text_a=3, label=1, metrics=("matthews_corrcoef",), header=False),
    Task("sst-2", text_a="sentence"),
    Task("mrpc", text_a="#1 String", text_b="#2 String", label="Quality", metrics=("f1", "accuracy")),
    Task("sts-b", text_a="sentence1", text_b="sentence2", label="score", labels=(), metrics=("pearson", "spearman")),
    Task("qqp", text_a="question1", text_b="question2", label="is_duplicate", metrics=("f1", "accuracy")),
    Task("mnli", text_a="sentence1", text_b="sentence2", label="gold_label",
         labels=("contradiction", "entailment", "neutral"), dev_files=("dev_matched.tsv", "dev_mismatched.tsv")),
    Task("qnli", text_a="question", text_b="sentence", labels=("entailment", "not_entailment")),
    Task("rte", text_a="sentence1", text_b="sentence2", labels=("entailment", "not_entailment")),
    Task("wnli", text_a="sentence1", text_b="sentence2"),
)}


GENERIC = "csv"  # --task_name of a CSV/TSV task described by --text_column/--label_column
WEIGHTED_METRICS = ("accuracy", "f1_weighted", "precision_weighted", "recall_weighted")


def get_task(name: str) -> Task:
    key = name.lower().replace("_", "-")
    key = {"sst2": "sst-2", "stsb": "sts-b"}.get(key, key)
    if key not in TASKS:
        raise UserInputError(f"--task_name={name}: not a known task{closest_name(key, [*TASKS, GENERIC])}; "
                             f"use one of {', '.join(TASKS)}, or {GENERIC} with --text_column/--label_column")
    return TASKS[key]


def csv_task(path: str, text_column: str, label_column: str, text_b_column: str = "") -> Task:
    """The entry of a CSV (or .tsv) file with a header: its labels are the label column's values
    in the training file `path`, sorted (numerically when they are all integers)."""
    delimiter = "\t" if path.endswith(".tsv") else ","
    probe = Task(GENERIC, text_a=text_column, text_b=text_b_column or None, label=label_column, labels=("",),
                 delimiter=delimiter)
    header, rows = _read_rows(probe, path)
    if label_column not in header:
        raise UserInputError(f"{path}: no {label_column!r} column in the header ({', '.join(header)}); "
                             "set --label_column to one of them")
    column = header.index(label_column)
    found = {row[column] for _, row in rows if len(row) > column and row[column] != ""}
    if len(found) < 2:
        raise UserInputError(f"{path}: column {label_column!r} has {len(found)} distinct label(s); "
                             "classification needs at least 2")
    ordered = sorted(found, key=int) if all(v.lstrip("-").isdigit() for v in found) else sorted(found)
    return dataclasses.replace(probe, labels=tuple(ordered), metrics=WEIGHTED_METRICS, dev_files=())


def dev_sets(task: Task, data_dir: str) -> List[Tuple[str, str]]:
    """[(set name, path)] of the task's dev files in data_dir: ("dev", .../dev.tsv); MNLI's two."""
    return [(os.path.splitext(name)[0], os.path.join(data_dir, name)) for name in task.dev_files]


def split_examples(examples: Sequence[Example], dev_fraction: float, seed: int) -> tuple:
    """(train, dev): a seeded random `dev_fraction` of the examples held out, for files without a dev split."""
    order = np.random.default_rng(seed).permutation(len(examples))
    held = max(1, int(round(len(examples) * dev_fraction)))
    dev = sorted(order[:held].tolist())
    train = sorted(order[held:].tolist())
    return [examples[i] for i in train], [examples[i] for i in dev]


def _read_rows(task: Task, path: str) -> tuple:
    """(header, [(line number, row)]) of a task file; one-line errors for missing or non-UTF-8 files."""
    quoting = csv.QUOTE_NONE if task.delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=task.delimiter, quoting=quoting)
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such file; --data_dir must hold the task's files") from None
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise UserInputError(f"{path}: not a readable {'TSV' if task.delimiter == chr(9) else 'CSV'} file ({err})") from None
    if task.header:
        return (rows[0][1] if rows else []), rows[1:]
    return [], rows


def read_examples(task: Task, path: str, with_labels: bool = True) -> List[Example]:
    """A GLUE TSV as Examples; a missing column or an unknown label is an error naming the file,
    the line and the fix. `with_labels=False` reads test files (no label column)."""
    header, rows = _read_rows(task, path)
    columns = {}
    for role in ("text_a", "text_b", "label"):
        wanted = getattr(task, role)
        if wanted is None or (role == "label" and not with_labels):
            continue
        if isinstance(wanted, int):
            columns[role] = wanted
        elif wanted in header:
            columns[role] = header.index(wanted)
        else:
            raise UserInputError(f"{path}: no {wanted!r} column in the header ({', '.join(header)}); "
                                 + (f"set --{role}_column to one of them" if task.name == GENERIC
                                    else f"pass the {task.name.upper()} files of GLUE"))
    examples = []
    for number, row in rows:
        if not row or row == [""]:
            continue
        if max(columns.values()) >= len(row):
            raise UserInputError(f"{path}:{number}: {len(row)} fields, the {task.name.upper()} layout needs "
                                 f"{max(columns.values()) + 1}; the file is damaged or of another task")
        label = row[columns["label"]] if "label" in columns else None
        if label is not None:
            if task.is_regression:
                try:
                    label = float(label)
                except ValueError:
                    raise UserInputError(f"{path}:{number}: label {label!r} is not a number") from None
            elif label not in task.labels:
                raise UserInputError(f"{path}:{number}: label {label!r} is not one of {', '.join(task.labels)}")
        examples.append(Example(f"{os.path.basename(path)}-{number}", row[columns["text_a"]],
                                row[columns["text_b"]] if "text_b" in columns else None, label))
    return examples


def label_ids(task: Task, examples: Sequence[Example]) -> np.ndarray:
    """(N,) int64 class ids in the order of task.labels, or (N,) float32 scores for regression."""
    if task.is_regression:
        return np.asarray([e.label for e in examples], dtype=np.float32)
    index = {label: i for i, label in enumerate(task.labels)}
    return np.asarray([index[e.label] for e in examples], dtype=np.int64)


def score(task: Task, predictions: np.ndarray, references: np.ndarray) -> Dict[str, float]:
    """The task's metrics: predictions are class ids (N,) or, for regression, scores (N,)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, precision_score, recall_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} examples")
    functions = {
        "accuracy": lambda: accuracy_score(references, predictions),
        "f1": lambda: f1_score(references, predictions),
        "matthews_corrcoef": lambda: matthews_corrcoef(references, predictions),
        "pearson": lambda: pearsonr(predictions, references)[0],
        "spearman": lambda: spearmanr(predictions, references)[0],
        "f1_weighted": lambda: f1_score(references, predictions, average="weighted", zero_division=0),
        "precision_weighted": lambda: precision_score(references, predictions, average="weighted", zero_division=0),
        "recall_weighted": lambda: recall_score(references, predictions, average="weighted", zero_division=0),
    }
    return {name: float(functions[name]()) for name in task.metrics}
