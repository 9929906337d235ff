"""Every example's model outputs over all data-parallel ranks, each example exactly once.

Used by evaluation during training (each task's job) and by the evaluation entry points
(tasks/); the batches come from data/batches.py.

Shape legend: N examples, B batch, W output values per example.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from mindtransformer.data.batches import eval_batches
from mindtransformer.errors import CollectiveError


def predict_all(run_batch: Callable, features, batch_size: int, rank: int = 0, world_size: int = 1,
                all_sum: Callable = None, pad_multiple: int = 1, pad_to: int = 0) -> Tuple[np.ndarray, float]:
    """(outputs (N, W) of every example, summed loss) over all ranks: each rank runs its examples
    (i % W == rank) through run_batch(batch) -> (loss or None, rows (B, W)); the rows are summed
    over ranks with a count column, and any example not seen exactly once is an error."""
    rows, total, width = {}, 0.0, None
    for indices, batch in eval_batches(features, batch_size, rank, world_size, pad_multiple, pad_to):
        loss, outputs = run_batch(batch)
        width = outputs.shape[1]
        total += (loss or 0.0) * len(indices)
        rows.update(zip(indices.tolist(), outputs))
    width = width or 1
    table = np.zeros((len(features), width + 1), dtype=np.float64)  # (N, W + 1): outputs, count
    for i, values in rows.items():
        table[i, :width], table[i, width] = values, 1.0
    if world_size > 1:
        summed = all_sum(table.reshape(-1).tolist() + [total])
        table, total = np.asarray(summed[:-1], dtype=np.float64).reshape(table.shape), summed[-1]
        width = table.shape[1] - 1
    counts = table[:, width]
    if not np.all(counts == 1):
        bad = int(np.flatnonzero(counts != 1)[0])
        raise CollectiveError(f"rank {rank}: example {bad} was evaluated {int(counts[bad])} times; every example "
                              "must be evaluated exactly once (the ranks disagree on the data)")
    return table[:, :width], total
