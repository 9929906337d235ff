"""Gradient sums over the ranks by MPI_Allreduce (mpi4py), for both engines on CPU under mpirun.

Why: Open MPI moves a host's buffers through shared memory, where the frameworks' own CPU
collectives go through TCP: 17.7 MB (BERT-tiny's gradients) over 2 ranks on one host takes
2.8 ms by MPI, 26-30 ms by torch.distributed's gloo and 88 ms by mindspore.communication's ring.
The engines still join their framework's group for the small collectives (metrics, barriers,
fingerprints); a rank killed under mpirun ends the job through mpirun, and a rank that stops
answering without exiting is caught by sum_in_place's own timeout (MPI's blocking collectives
have none).

--allreduce picks: "framework" (the backend's own collectives: any launcher and device), "mpi"
(CPU under mpirun only, with mpi4py), or "auto" (mpi where it applies, else framework).
"""

from __future__ import annotations

import os
import sys
import threading

from mindtransformer.errors import UserInputError, first_line

CHOICES = ("auto", "mpi", "framework")


def transport(world, requested: str, device_target: str) -> str:
    """"mpi" or "framework" for a data-parallel run; an explicit "mpi" that cannot apply is a
    UserInputError naming why."""
    if requested not in CHOICES:
        raise UserInputError(f"--allreduce={requested!r}; use one of {', '.join(CHOICES)}")
    if requested == "framework":
        return "framework"
    why_not = _why_not(world, device_target)
    if why_not is None:
        return "mpi"
    if requested == "mpi":
        raise UserInputError(f"--allreduce=mpi: {why_not}; use --allreduce=framework (or auto)")
    return "framework"


def announce(world, taken: str, framework_way: str) -> None:
    """Rank 0 says how the gradients are averaged (the tests and a user's log read it)."""
    if world.is_main:
        how = "MPI_Allreduce (mpi4py)" if taken == "mpi" else framework_way
        print(f"gradients averaged over {world.size} ranks by {how}", flush=True)


def _why_not(world, device_target: str):
    if device_target != "CPU":
        return f"MPI sums host memory, and --device_target={device_target}"
    if world.launcher != "mpirun":
        return f"the ranks were started by {world.launcher}, not mpirun"
    try:
        from mpi4py import MPI  # initializes MPI from mpirun's environment
    except ImportError as err:  # mpi4py missing, or no libmpi on this host
        return f"mpi4py does not load ({first_line(err)}; pip install 'mindtransformer[mpi]')"
    if MPI.COMM_WORLD.Get_size() != world.size:
        return f"MPI sees {MPI.COMM_WORLD.Get_size()} ranks where the launcher announced {world.size}"
    return None


def sum_in_place(arrays, world, step: int) -> None:
    """Each numpy array replaced by its sum over the ranks, in place (no copies: the engines pass
    views of the gradients' own memory). An MPI failure is a RuntimeError, as the frameworks'.

    If the sums take longer than the timeout (another rank stopped answering without exiting, so
    mpirun does not end the job), this rank says so in one line on stderr and exits 1, and mpirun
    then stops the others. A watchdog thread does it: MPI_Allreduce blocks without a timeout
    (mpi4py releases the GIL meanwhile; the thread costs ~0.12 ms a call), and the non-blocking
    Iallreduce, polled, was 2-3x slower here. The timeout is world.timeout_s; step names the wait."""
    from mpi4py import MPI

    watchdog = threading.Timer(world.timeout_s, _give_up, (f"rank {world.rank}: the all-reduce of step {step}",
                                                           world.timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        for array in arrays:
            MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, array)
    except MPI.Exception as err:
        raise RuntimeError(first_line(err)) from None
    finally:
        watchdog.cancel()


def _give_up(what: str, timeout_s: float) -> None:
    print(f"error: {what} got no answer within {timeout_s:g} s (--collective_timeout): another rank stopped "
          "answering; stopping this rank", file=sys.stderr, flush=True)
    os._exit(1)  # from this thread: the main thread is inside MPI_Allreduce
