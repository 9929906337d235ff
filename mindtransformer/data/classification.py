"""Sentence(-pair) classification features and batches: tokenized once, padded per batch.

Examples -> `Features` (each example's token ids, unpadded, and its label) -> batches.

- Training (`TrainBatches`): per epoch a seeded permutation; with `group_by_length` it is cut
  into mega-batches of 50 batches, each sorted by length and cut into batches whose order is
  then shuffled (HF's `group_by_length`, so a batch holds examples of similar length and pads
  little). A batch is padded to its longest example, rounded up to `pad_multiple` (MindSpore's
  compiled graph is built once per shape, so it gets few shapes). As in pretraining, batch m of
  the epoch goes to data-parallel rank m % W and only whole groups of W batches are dealt: W
  ranks see the batches one process with W times the accumulation sees.
- Evaluation (`eval_batches`): example i goes to rank i % W, every example exactly once
  (no dropped last batch), in batches sorted by length; the caller gathers by index.
- Records (`write_records` / `read_records`): the MindSpore BERT zoo's classifier schema
  (`input_ids`, `input_mask`, `segment_ids` of length T, `label_ids`), padded to T in the file
  and trimmed again on reading, in TFRecord or MindRecord (data/records.py).

Shape legend: N examples, B batch, T the batch's padded length (<= max_seq_length).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, List, Sequence

import numpy as np

from mindtransformer.data import records
from mindtransformer.data.glue import Example, Task, label_ids
from mindtransformer.errors import UserInputError

MEGA_BATCH = 50  # batches per length-sorted group (HF's LengthGroupedSampler uses 50)


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
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


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


def pad_batch(features: Features, indices: Sequence[int], pad_multiple: int = 1, pad_to: int = 0) -> dict:
    """The model's inputs for `indices`: input_ids, attention_mask, token_type_ids (B, T) int64 and
    labels (B,); T is the longest example rounded up to pad_multiple, or `pad_to` when given."""
    longest = max(len(features.input_ids[i]) for i in indices)
    length = pad_to or -(-longest // pad_multiple) * pad_multiple
    ids = np.zeros((len(indices), length), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, i in enumerate(indices):
        n = len(features.input_ids[i])
        ids[row, :n], types[row, :n], mask[row, :n] = features.input_ids[i], features.segment_ids[i], 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "labels": features.labels[np.asarray(indices)]}


class TrainBatches:
    """This rank's training batches of an epoch, from a position (see the module docstring)."""

    def __init__(self, features: Features, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, group_by_length: bool = True, pad_multiple: int = 1, pad_to: int = 0):
        self.features, self.batch_size, self.seed = features, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.group_by_length, self.pad_multiple, self.pad_to = group_by_length, pad_multiple, pad_to
        self.lengths = features.lengths

    @property
    def batches_per_epoch(self) -> int:
        """Batches each rank takes per epoch (the same on every rank)."""
        return -(-len(self.features) // self.batch_size) // self.world_size

    def epoch_batches(self, epoch: int) -> List[np.ndarray]:
        """Every batch of the epoch (all ranks), as index arrays."""
        n, size = len(self.features), self.batch_size
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if not self.group_by_length:
            return [order[i:i + size] for i in range(0, n, size)]
        batches = []
        for start in range(0, n, MEGA_BATCH * size):
            mega = order[start:start + MEGA_BATCH * size]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]  # longest first
            batches += [mega[i:i + size] for i in range(0, len(mega), size)]
        if self.shuffle:  # mix long and short batches over the epoch
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        mine = self.epoch_batches(epoch)[self.rank::self.world_size][:self.batches_per_epoch]
        for indices in mine[skip:]:
            yield pad_batch(self.features, indices, self.pad_multiple, self.pad_to)


def eval_batches(features: Features, batch_size: int, rank: int = 0, world_size: int = 1,
                 pad_multiple: int = 1, pad_to: int = 0) -> Iterator[tuple]:
    """(indices (B,), batch) over this rank's examples i % world_size == rank, every one once,
    shortest first."""
    mine = np.arange(rank, len(features), world_size)
    mine = mine[np.argsort(features.lengths[mine], kind="stable")]
    for start in range(0, len(mine), batch_size):
        indices = mine[start:start + batch_size]
        yield indices, pad_batch(features, indices, pad_multiple, pad_to)


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
              "segment_ids": arrays["token_type_ids"], "label_ids": arrays["labels"].reshape(-1, 1)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = records.open_writer(output_format, path, lengths)
    try:
        writer.write(arrays, range(len(features)))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    records.write_manifest(path, output_format, len(features), lengths, extra)


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
