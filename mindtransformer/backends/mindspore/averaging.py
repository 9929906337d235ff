"""The data-parallel sum of the MindSpore engine's gradients (and of the loss riding along) over
the ranks, two ways; `sum_over_ranks` picks one (--allreduce, backends/mpi.py). The engine scales
each rank's loss by 1 / world size before differentiation, so the sum is the mean.

- framework: mindspore.communication's AllReduce in one compiled graph. Every launcher and
  device; on CPU it is MindSpore's TCP ring: 88 ms for BERT-tiny's 17.7 MB over 2 ranks on one
  host (16 pieces; 108-140 ms as one).
- mpi: on CPU under mpirun, MPI_Allreduce in place on each gradient's own memory. No copies:
  flattening BERT-base's 440 MB of gradients into one buffer and splitting it back took
  0.3-0.6 s of a two-rank step.
"""

from __future__ import annotations

import functools

import mindspore as ms
import numpy as np
from mindspore import ops

from mindtransformer.backends import mpi


def sum_over_ranks(world, requested: str, device_target: str):
    """(callable: (tuple of gradient tensors, local loss, step) -> (their sums over the ranks, the
    summed loss), the transport taken: "mpi" or "framework", as mpi.transport decides)."""
    taken = mpi.transport(world, requested, device_target)
    return (functools.partial(_mpi_sum, world) if taken == "mpi" else _ring_sum(ops.AllReduce())), taken


def _mpi_sum(world, tensors, loss: float, step: int):
    """On CPU, asnumpy() of a computed tensor is that tensor's memory, writable (checked by
    tests/trainer/test_engines.py), so the tensors themselves come back summed."""
    loss_sum = np.array([loss], np.float64)
    mpi.sum_in_place([*(tensor.asnumpy() for tensor in tensors), loss_sum], world, step)
    return tensors, float(loss_sum[0])


_ALL_REDUCE_PIECES = 16


def _ring_sum(all_reduce):
    """Every tensor summed over the ranks, compiled (eager MindSpore would keep the flat copies
    around): their concatenation, with the loss as one more element, is all-reduced in pieces of
    ceil(total / 16) elements (16 pieces, fewer for a concatenation under 16 x 16 elements).
    Why pieces: in a compiled graph MindSpore's CPU AllReduce of one large buffer is slow (2 ranks
    here: 229 ms for 17.6 MB, 2.4 s for 176 MB), while pieces overlap (16 pieces: 72 ms, 759 ms;
    8: 78 ms, 767 ms). Why not one collective per parameter: each call also costs ~10-30 ms."""

    @ms.jit
    def total(tensors):
        flat = ops.cat([t.reshape(-1) for t in tensors])  # (sum of sizes,)
        size = flat.shape[0]
        piece = (size + _ALL_REDUCE_PIECES - 1) // _ALL_REDUCE_PIECES
        flat = ops.cat([all_reduce(flat[start:min(start + piece, size)]) for start in range(0, size, piece)])
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset:offset + t.size].reshape(t.shape))
            offset += t.size
        return tuple(out)

    def sum_with_loss(tensors, loss: float, step: int):  # step: only the MPI path names it
        *summed, loss_sum = total(ms.mutable((*tensors, ms.Tensor([loss], ms.float32))))
        return tuple(summed), float(loss_sum.asnumpy()[0])

    return sum_with_loss
