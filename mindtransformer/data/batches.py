"""Batches of tokenized, unpadded features, padded per batch: shared by the fine-tuning tasks.

A features object has `input_ids` and `segment_ids` (N arrays or lists (T_i,)), `lengths` (N,),
`len()`, and `targets(indices) -> dict` (the labels the head takes: `labels`, or
`start_positions` and `end_positions`; empty when the examples are unlabelled).

- Training (`TrainBatches`): per epoch a seeded permutation; with `group_by_length` it is
  regrouped as HF Trainer's `group_by_length` does (`length_grouped`), so a batch holds examples
  of similar length and pads little. A batch is padded to its longest example, rounded up to
  `pad_multiple` (MindSpore's compiled graph is built once per shape, so it gets few shapes).
  As in pretraining, batch m of the epoch goes to data-parallel rank m % W and only whole groups
  of W batches are dealt: W ranks see the batches one process with W times the accumulation sees.
- Evaluation (`eval_batches`): example i goes to rank i % W, every example exactly once
  (no dropped last batch), in batches sorted by length; the caller gathers by index.

Shape legend: N examples, B batch, T the batch's padded length (<= max_seq_length).
"""

from __future__ import annotations

from typing import Iterator, List, Sequence

import numpy as np

MEGA_BATCH = 50  # at most this many batches per length-sorted group (as HF's LengthGroupedSampler)


def pad_batch(features, indices: Sequence[int], pad_multiple: int = 1, pad_to: int = 0) -> dict:
    """The model's inputs for `indices`: input_ids, attention_mask, token_type_ids (B, T) int64 and
    the targets; T is the longest example rounded up to pad_multiple, or `pad_to` when given.
    Multiple-choice features (each example a list of C windows) give (B, C, T)."""
    choices = not np.isscalar(features.input_ids[indices[0]][0])  # a list of C windows, not of token ids
    if choices:  # flatten to B * C windows, pad, and fold back
        rows = [w for i in indices for w in features.input_ids[i]]
        types_of = [w for i in indices for w in features.segment_ids[i]]
    else:
        rows = [features.input_ids[i] for i in indices]
        types_of = [features.segment_ids[i] for i in indices]
    longest = max(len(r) for r in rows)
    length = pad_to or -(-longest // pad_multiple) * pad_multiple
    ids = np.zeros((len(rows), length), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (tokens, segments) in enumerate(zip(rows, types_of)):
        n = len(tokens)
        ids[row, :n], types[row, :n], mask[row, :n] = tokens, segments, 1
    if choices:
        shape = (len(indices), len(rows) // len(indices), length)
        ids, types, mask = ids.reshape(shape), types.reshape(shape), mask.reshape(shape)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            **features.targets(np.asarray(indices))}


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> np.ndarray:
    """A permutation `order` (N,) regrouped as HF Trainer's `group_by_length` does
    (`get_length_grouped_indices`): cut into mega-batches of k batches, k = min(N // (4 B), 50)
    and at least 1 (an epoch has four mega-batches or more), each sorted longest first (ties keep
    their order); the overall longest example then swaps places with the first one, so the first
    batch is the largest (memory runs out at once if it will). Batches are consecutive slices of
    the result: within a mega-batch they go from long to short, not shuffled further."""
    order = np.array(order, copy=True)
    if len(order) == 0:
        return order
    mega = max(min(len(order) // (batch_size * 4), MEGA_BATCH), 1) * batch_size
    starts = range(0, len(order), mega)
    for start in starts:
        part = order[start:start + mega]
        order[start:start + mega] = part[np.argsort(-lengths[part], kind="stable")]
    # the mega-batch whose longest example is longest; the first of equals, as torch.argmax
    longest = max(starts, key=lambda start: (lengths[order[start]], -start))
    order[0], order[longest] = order[longest], order[0]
    return order


class TrainBatches:
    """This rank's training batches of an epoch, from a position (see the module docstring)."""

    def __init__(self, features, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
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
        if self.group_by_length:
            order = length_grouped(order, self.lengths, size)
        return [order[i:i + size] for i in range(0, n, size)]

    def batches(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        mine = self.epoch_batches(epoch)[self.rank::self.world_size][:self.batches_per_epoch]
        for indices in mine[skip:]:
            yield pad_batch(self.features, indices, self.pad_multiple, self.pad_to)


def eval_batches(features, batch_size: int, rank: int = 0, world_size: int = 1,
                 pad_multiple: int = 1, pad_to: int = 0) -> Iterator[tuple]:
    """(indices (B,), batch) over this rank's examples i % world_size == rank, every one once,
    shortest first."""
    mine = np.arange(rank, len(features), world_size)
    mine = mine[np.argsort(features.lengths[mine], kind="stable")]
    for start in range(0, len(mine), batch_size):
        indices = mine[start:start + batch_size]
        yield indices, pad_batch(features, indices, pad_multiple, pad_to)


def lengths_of(input_ids: Sequence) -> np.ndarray:
    """(N,) token counts."""
    return np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
