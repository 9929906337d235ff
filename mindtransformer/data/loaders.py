"""Pretraining batches from record files, for both backends, with an exact resume position.

One deterministic stream serves both: for epoch e the files are taken in an order shuffled with
(seed, e) and records pass through a shuffle buffer seeded the same way (tf.data's scheme), then
are cut into batches of `batch_size`; batch m of the epoch goes to data-parallel rank
m % world_size, and only whole groups of world_size batches are dealt (every rank gets the same
number). So W ranks at step s hold exactly the batches that one process with W times the
gradient-accumulation steps holds: data-parallel and single-process runs see the same global
batches. A resume position is (epoch, batches this rank already took), and resuming skips
exactly those batches of the same stream. Adaptors (in the backends, which alone import frameworks):

- torch: `mindtransformer.backends.torch.data.PretrainingData`, an `IterableDataset` of whole
  batches, sharded by rank and by DataLoader worker (worker w of W makes the rank's batches k with (k - skip) % W == w, and the
  DataLoader's round-robin then yields batches in the order k = 0, 1, 2, ...). Use it with
  `DataLoader(dataset, batch_size=None, num_workers=W, multiprocessing_context="spawn")`: a
  worker forked from a process where TensorFlow has started its threads can hang.
- MindSpore: `mindtransformer.backends.mindspore.data.pretraining_dataset(...)`, a
  `mindspore.dataset.GeneratorDataset` over the same batches.

Shape legend: B batch, T max_seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

import glob
import os
import random
from typing import Iterator, List, Optional

import numpy as np

from mindtransformer.data import records
from mindtransformer.errors import UserInputError


def record_files(spec: str) -> List[str]:
    """Data files from a directory, a glob or a comma-separated list (manifests and .db skipped)."""
    paths = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if os.path.isdir(part):
            found = [os.path.join(part, n) for n in sorted(os.listdir(part))]
        else:
            found = sorted(glob.glob(part))
        paths += [p for p in found if os.path.isfile(p) and not p.endswith((".json", ".db"))
                  and not os.path.basename(p).startswith(".")]
    if not paths:
        raise UserInputError(f"--train_data_path={spec}: no record file there; make records with "
                             "tools/create_pretraining_data.py")
    return paths


def check_sizes(files: List[str], max_seq_length: Optional[int], max_predictions_per_seq: Optional[int]) -> dict:
    """The files' (seq, pred) sizes from their manifests (or first records); a mismatch with what
    the run expects is an error naming the file, both numbers and the fix."""
    sizes = None
    for path in files:
        lengths = records.file_lengths(path)
        found = {"seq": lengths["input_ids"][1], "pred": lengths["masked_lm_positions"][1]}
        if sizes is not None and found != sizes:
            raise UserInputError(f"{path}: records of max_seq_length {found['seq']} / max_predictions_per_seq "
                                 f"{found['pred']}, unlike {files[0]} ({sizes['seq']} / {sizes['pred']}); "
                                 "train from records made with the same settings")
        sizes = found
    if max_seq_length is not None and sizes["seq"] != max_seq_length:
        raise UserInputError(f"{files[0]}: records hold max_seq_length {sizes['seq']} but the run has "
                             f"--seq_length {max_seq_length}; set --seq_length {sizes['seq']} or make the records again")
    if max_predictions_per_seq is not None and sizes["pred"] != max_predictions_per_seq:
        raise UserInputError(f"{files[0]}: records hold max_predictions_per_seq {sizes['pred']} but the run has "
                             f"--max_predictions_per_seq {max_predictions_per_seq}; set it to {sizes['pred']} "
                             "or make the records again")
    return sizes


def count_records(files: List[str]) -> int:
    """Records in the files: their manifests' counts, or a read through files without one."""
    total = 0
    for path in files:
        if os.path.isfile(records.manifest_path(path)):
            total += int(records.read_manifest(path)["count"])
        else:
            total += sum(1 for _ in records.iter_records(path))
    return total


class PretrainingStream:
    """The deterministic record stream of module docstring, as batches of one rank."""

    def __init__(self, files: List[str], batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, buffer_size: int = 10000, drop_remainder: bool = True):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise UserInputError(f"batch_size {batch_size}, rank {rank}, world_size {world_size}: need batch_size >= 1 "
                                 "and 0 <= rank < world_size")
        self.files, self.batch_size, self.shuffle, self.seed = list(files), batch_size, shuffle, seed
        self.rank, self.world_size, self.buffer_size, self.drop_remainder = rank, world_size, buffer_size, drop_remainder

    def records(self, epoch: int) -> Iterator[dict]:
        """All records of the epoch in stream order (before sharding)."""
        rng = random.Random(f"{self.seed}/{epoch}")
        files = list(self.files)
        if self.shuffle:
            rng.shuffle(files)
        stream = (record for path in files for record in records.iter_records(path))
        if not self.shuffle:
            yield from stream
            return
        # tf.data's shuffle buffer: fill, then emit a random slot and refill it.
        buffer = []
        for record in stream:
            if len(buffer) < self.buffer_size:
                buffer.append(record)
                continue
            slot = int(rng.random() * len(buffer))
            yield buffer[slot]
            buffer[slot] = record
        rng.shuffle(buffer)
        yield from buffer

    def batches(self, epoch: int, skip: int = 0, worker: int = 0, num_workers: int = 1) -> Iterator[dict]:
        """This rank's batches k >= skip with (k - skip) % num_workers == worker: {name: (B, ...) array}.
        (Counting from `skip` makes worker 0 hold the first batch wanted, which a DataLoader asks first.)"""
        def wanted(k: int) -> bool:
            return k >= skip and (k - skip) % num_workers == worker

        group, index = [], 0  # group: records of the next world_size batches (W x B)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        for record in self.records(epoch):
            group.append(record)
            if len(group) == self.world_size * self.batch_size:
                if wanted(index):
                    yield _stack(group[mine])
                group, index = [], index + 1
        # The last partial group: dealt in order (evaluation), or dropped so ranks stay in step.
        if group[mine] and not self.drop_remainder and wanted(index):
            yield _stack(group[mine])

    def batches_per_epoch(self, records_per_epoch: int) -> int:
        """Whole batches each rank takes from an epoch of that many records (drop_remainder)."""
        return records_per_epoch // (self.world_size * self.batch_size)


def _stack(rows: list) -> dict:
    return {name: np.stack([r[name] for r in rows]) for name in records.FEATURES}
