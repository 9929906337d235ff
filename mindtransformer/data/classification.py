"""Sentence(-pair) classification features and batches: tokenized once, padded per batch.

Examples -> `Features` (each example's token ids, unpadded, and its label) -> batches
(data/batches.py: length-grouped training batches, evaluation shards, padding per batch).

- Records (`write_records` / `read_records`): the MindSpore BERT zoo's classifier schema
  (`input_ids`, `input_mask`, `segment_ids` of length T, `label_ids`), padded to T in the file
  and trimmed again on reading, in TFRecord or MindRecord (data/records.py).

Shape legend: N examples, B batch, T the batch's padded length (<= max_seq_length).
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

import numpy as np

from mindtransformer.data import records
from mindtransformer.data.batches import lengths_of, pad_batch
from mindtransformer.data.glue import Example, Task, label_ids
from mindtransformer.errors import UserInputError


@dataclasses.dataclass
class Features:
    input_ids: List[np.ndarray]    # N arrays (T_i,) with [CLS] ... [SEP] (... [SEP])
    segment_ids: List[np.ndarray]  # N arrays (T_i,) of 0/1
    labels: np.ndarray             # (N,) int64 class ids or float32 scores; -1 / nan: unlabelled

    def __len__(self) -> int:
        return len(self.input_ids)

    def head(self, count: int) -> "Features":
        """The first `count` examples (all when count is 0)."""
        if not count:
            return self
        return Features(self.input_ids[:count], self.segment_ids[:count], self.labels[:count])

    @property
    def lengths(self) -> np.ndarray:
        return lengths_of(self.input_ids)

    def targets(self, indices: np.ndarray) -> dict:
        """{"labels": (B,)}, or {} when none of them is labelled (-1 / nan: texts to predict)."""
        labels = self.labels[indices]
        unlabelled = np.isnan(labels) if labels.dtype == np.float32 else labels == -1
        return {} if np.all(unlabelled) else {"labels": labels}


def featurize(tokenizer, task: Task, examples: Sequence[Example], max_seq_length: int) -> Features:
    """Tokenize (pairs longest-first truncated to max_seq_length with specials), not padded."""
    pairs = [e.text_b or "" for e in examples] if task.text_b is not None else None
    ids, segments = tokenizer.encode_unpadded([e.text_a for e in examples], pairs, max_seq_length)
    if all(e.label is not None for e in examples):
        labels = label_ids(task, examples)
    else:
        labels = np.full(len(examples), np.nan if task.is_regression else -1,
                         dtype=np.float32 if task.is_regression else np.int64)
    return Features(ids, segments, labels)


# ---- records: the MindSpore BERT zoo's classifier schema ---------------------------------------

def record_lengths(max_seq_length: int, regression: bool) -> dict:
    """name -> (dtype, length) of the classifier records."""
    return {"input_ids": ("int64", max_seq_length), "input_mask": ("int64", max_seq_length),
            "segment_ids": ("int64", max_seq_length), "label_ids": ("float32" if regression else "int64", 1)}


def write_records(features: Features, path: str, output_format: str, max_seq_length: int, extra: dict) -> None:
    """All features into one record file (padded to max_seq_length) and its manifest."""
    lengths = record_lengths(max_seq_length, features.labels.dtype == np.float32)
    arrays = pad_batch(features, range(len(features)), pad_to=max_seq_length)
    arrays = {"input_ids": arrays["input_ids"], "input_mask": arrays["attention_mask"],
              "segment_ids": arrays["token_type_ids"], "label_ids": features.labels.reshape(-1, 1)}
    records.write_file(path, output_format, arrays, lengths, extra)


def read_records(files: Sequence[str], regression: bool) -> Features:
    """Features from classifier record files (padding trimmed by input_mask)."""
    dtypes = {name: dtype for name, (dtype, _) in record_lengths(1, regression).items()}
    ids, segments, labels = [], [], []
    for path in files:
        for record in records.iter_records(path, dtypes=dtypes):
            n = int(record["input_mask"].sum())
            ids.append(record["input_ids"][:n].astype(np.int32))
            segments.append(record["segment_ids"][:n].astype(np.int8))
            labels.append(record["label_ids"][0])
    if not ids:
        raise UserInputError(f"{', '.join(files)}: no records; make them with "
                             "examples/generate_mindrecord/generate_glue_mindrecord.py")
    return Features(ids, segments, np.asarray(labels, dtype=np.float32 if regression else np.int64))
