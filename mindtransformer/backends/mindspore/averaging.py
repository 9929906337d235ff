"""The data-parallel mean of the MindSpore engine's gradients (and the loss riding along), over
the ranks, two ways; `mean_over_ranks` picks one (--mindspore_allreduce):

- "mindspore": mindspore.communication's AllReduce in one compiled graph. Every launcher and
  device; on CPU it is MindSpore's TCP ring: 88 ms for BERT-tiny's 17.7 MB over 2 ranks on one
  host (16 pieces; 108-140 ms as one).
- "mpi": on CPU under mpirun, MPI_Allreduce through mpi4py on the same flat buffer, which Open
  MPI moves through shared memory on one host: 17 ms for the same, flattening and splitting
  included (2.8 ms the collective alone). The ranks still join mindspore.communication for the
  small collectives (metrics, barriers) and its failure detection.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import ops

from mindtransformer.errors import UserInputError, first_line

TRANSPORTS = ("auto", "mpi", "mindspore")


def mean_over_ranks(world, requested: str, device_target: str):
    """(callable: mutable tuple of tensors -> tuple of their means over the ranks, the transport
    taken). "auto" takes "mpi" where it applies (CPU, mpirun, mpi4py loads), else "mindspore";
    an explicit "mpi" that does not apply is a UserInputError naming why."""
    if requested not in TRANSPORTS:
        raise UserInputError(f"--mindspore_allreduce={requested!r}; use one of {', '.join(TRANSPORTS)}")
    if requested != "mindspore":
        why_not = _why_not_mpi(world, device_target)
        if why_not is None:
            return _MpiMean(world.size), "mpi"
        if requested == "mpi":
            raise UserInputError(f"--mindspore_allreduce=mpi: {why_not}; use --mindspore_allreduce=mindspore (or auto)")
    return _ring_mean(ops.AllReduce(), world.size), "mindspore"


def _why_not_mpi(world, device_target: str):
    if device_target != "CPU":
        return f"MPI averages host memory, and --device_target={device_target}"
    if world.launcher != "mpirun":
        return f"the ranks were started by {world.launcher}, not mpirun"
    try:
        from mpi4py import MPI  # initializes MPI from mpirun's environment
    except ImportError as err:  # mpi4py missing, or no libmpi on this host
        return f"mpi4py does not load ({first_line(err)}; pip install 'mindtransformer[mpi]')"
    if MPI.COMM_WORLD.Get_size() != world.size:
        return f"MPI sees {MPI.COMM_WORLD.Get_size()} ranks where the launcher announced {world.size}"
    return None


class _MpiMean:
    """Flatten (compiled) -> MPI_Allreduce in place on the flat buffer's memory -> split and
    divide by the world size (compiled)."""

    def __init__(self, size: int):
        from mpi4py import MPI

        self._mpi, self._size = MPI, size
        self._flatten = ms.jit(_flatten)
        self._split = None  # compiled at the first call, for its shapes

    def __call__(self, tensors):
        flat = self._flatten(tensors)  # (sum of sizes,) float32
        buffer = flat.asnumpy()  # on CPU: the tensor's own memory, writable
        try:
            self._mpi.COMM_WORLD.Allreduce(self._mpi.IN_PLACE, buffer)
        except self._mpi.Exception as err:
            raise RuntimeError(first_line(err)) from None  # the engine's collective failure
        if self._split is None:
            self._split = _compiled_split([tuple(t.shape) for t in tensors], self._size)
        out = self._split(ms.Tensor.from_numpy(buffer))
        out[-1].asnumpy()  # done with `flat`'s memory before it may be freed
        return out


def _flatten(tensors):
    return ops.cat([t.reshape(-1) for t in tensors])


def _compiled_split(shapes: list, size: int):
    sizes = [math.prod(shape) for shape in shapes]

    @ms.jit
    def split(flat):  # (sum of sizes,) -> each tensor / size, in its shape
        return _split(flat / size, shapes, sizes)

    return split


def _split(flat, shapes, sizes) -> tuple:
    """(sum of sizes,) -> consecutive pieces of `sizes` elements in `shapes` (_flatten's inverse)."""
    out, offset = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(flat[offset:offset + n].reshape(shape))
        offset += n
    return tuple(out)


_ALL_REDUCE_PIECES = 16


def _ring_mean(all_reduce, size: int):
    """Every tensor (the gradients, the loss) averaged over the ranks, compiled (eager MindSpore
    would keep the flat copies around): their concatenation is all-reduced in pieces of
    ceil(total / 16) elements (16 pieces, fewer for a concatenation under 16 x 16 elements).
    Why pieces: in a compiled graph MindSpore's CPU AllReduce of one large buffer is slow (2 ranks
    here: 229 ms for 17.6 MB, 2.4 s for 176 MB), while pieces overlap (16 pieces: 72 ms, 759 ms;
    8: 78 ms, 767 ms). Why not one collective per parameter: each call also costs ~10-30 ms."""

    @ms.jit
    def mean(tensors):
        flat = _flatten(tensors)  # (sum of sizes,)
        total = flat.shape[0]
        piece = (total + _ALL_REDUCE_PIECES - 1) // _ALL_REDUCE_PIECES
        flat = ops.cat([all_reduce(flat[start:min(start + piece, total)])
                        for start in range(0, total, piece)]) / size
        return _split(flat, [t.shape for t in tensors], [t.size for t in tensors])

    return mean
