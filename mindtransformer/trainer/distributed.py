"""Who am I in a data-parallel run: rank, world size and rank 0's address, from the launcher.

Launchers announce ranks through their own environment variables; we read OpenMPI's (mpirun),
torchrun's and MindSpore's (msrun / RANK_ID), in that order. Each backend's engine then joins
its own collective library with these numbers (backends/*/distributed.py). Nothing here
imports a framework.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket

from mindtransformer.errors import UserInputError

# (rank, world size, local rank, ranks on this host) variables of each launcher.
LAUNCHERS = (
    ("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("msrun", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "LOCAL_WORLD_SIZE"),
)
DEFAULT_PORT = 29500


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # ranks on this host; 0 when the launcher does not say
    launcher: str = "none"
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    network_interface: str = ""
    timeout_s: int = 45

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env(settings=None, environ=None) -> World:
    """The World of this process: launcher variables, then the settings' address overrides."""
    env = os.environ if environ is None else environ
    rank, size, local, local_size, launcher = 0, 1, 0, 1, "none"
    for name, rank_var, size_var, local_var, local_size_var in LAUNCHERS:
        if rank_var in env and size_var in env:
            try:
                rank, size, local = int(env[rank_var]), int(env[size_var]), int(env.get(local_var, 0))
                local_size = int(env.get(local_size_var, 0))
            except ValueError:
                raise UserInputError(f"${rank_var}={env[rank_var]!r} / ${size_var}={env[size_var]!r}: "
                                     f"not numbers; check the {name} launch") from None
            launcher = name
            break
    addr = (settings.master_addr if settings else "") or env.get("MASTER_ADDR") or "127.0.0.1"
    port = (settings.master_port if settings else 0) or int(env.get("MASTER_PORT") or DEFAULT_PORT)
    return World(rank=rank, size=size, local_rank=local, local_size=local_size, launcher=launcher,
                 master_addr=addr, master_port=port,
                 network_interface=(settings.network_interface if settings else ""),
                 timeout_s=(settings.collective_timeout if settings else 45))


def bind_cores(world: World) -> list:
    """Pin this process (and the threads it starts later) to its rank's share of the cores it may
    use (see rank_cores). Returns the CPUs, or [] when nothing is pinned: one rank, a launcher that
    does not say how many ranks share the host, a launcher that already bound the ranks (mpirun's
    default `--bind-to core|socket`: OMPI_MCA_orte_bound_at_launch=1), or more ranks than CPUs.
    Call it before a framework starts its thread pools.

    Why: on CPU a MindSpore rank runs actor and kernel threads beside its Python thread; unpinned,
    two ranks' threads share both cores and a rank's step waits for the other's (2 ranks of a
    tiny BERT on 2 cores: 22.5 samples/s unpinned with steps of half that speed now and then,
    25.5 pinned and even)."""
    if (world.size == 1 or world.local_size < 1 or not hasattr(os, "sched_setaffinity")
            or os.environ.get("OMPI_MCA_orte_bound_at_launch") == "1"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    mine = rank_cores(allowed, cpu_topology(allowed), world.local_rank, world.local_size)
    if mine:
        os.sched_setaffinity(0, mine)
    return mine


def rank_cores(allowed: list, topology: dict, local_rank: int, local_size: int) -> list:
    """The CPUs of local rank r of L: the r-th of L near-equal runs of whole physical cores, each
    with all its allowed hardware threads, ordered by socket; [] when r >= L or there are fewer
    CPUs than ranks.

    topology: CPU -> (socket, core id). Linux numbers the first hardware thread of every core
    before any second one (on 8 cores x 2 threads, CPU 3 and CPU 11 are one core), so a split of
    the sorted CPU ids would give one rank all first threads and the other their siblings: both
    ranks on every core. With fewer physical cores than ranks, hardware threads are split instead."""
    cores = {}
    for cpu in allowed:
        cores.setdefault(topology.get(cpu, (0, ("cpu", cpu))), []).append(cpu)
    units = sorted(cores.values(), key=lambda threads: (topology.get(threads[0], (0,))[0], threads[0]))
    if len(units) < local_size:
        units = [[cpu] for cpu in allowed]
    if local_rank >= local_size or len(units) < local_size:
        return []
    n = len(units)
    return sorted(cpu for unit in units[local_rank * n // local_size:(local_rank + 1) * n // local_size]
                  for cpu in unit)


def cpu_topology(cpus: list) -> dict:
    """CPU -> (socket, core id) from Linux's /sys; CPUs it does not describe are left out (each
    then counts as a core of its own)."""
    topology = {}
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as package, open(base + "core_id") as core:
                topology[cpu] = (int(package.read()), int(core.read()))
        except (OSError, ValueError):
            pass
    return topology


_HOST_LINE = re.compile(r"^(?P<host>[A-Za-z0-9_.:\[\]-]+)(\s+slots\s*=\s*(?P<slots>[1-9][0-9]*))?"
                        r"(\s+max_slots\s*=\s*[1-9][0-9]*)?$")


def read_hostfile(path: str) -> list:
    """[(host, slots)] from an OpenMPI hostfile (`HOST slots=N` lines, # comments); bad lines are
    errors naming the file, the line and the expected form."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError):
        raise UserInputError(f"{path}: no such hostfile; write one line per machine: HOST slots=N") from None
    hosts = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _HOST_LINE.match(text)
        if not match:
            raise UserInputError(f"{path}:{number}: {line.strip()!r} is not a hostfile line; use 'HOST slots=N' "
                                 "(e.g. 'localhost slots=2')")
        hosts.append((match["host"], int(match["slots"] or 1)))
    if not hosts:
        raise UserInputError(f"{path}: holds no host; write one line per machine: HOST slots=N")
    return hosts


# The MindSpore scheduler: rank 0 starts it; it serves the workers' rendezvous and exits with them.
_SCHEDULER = ("import mindspore as ms; ms.set_context(device_target='CPU'); "
              "from mindspore.communication import init; init()")


def prepare_mindspore(world: World) -> None:
    """Let `mindspore.communication.init()` work under mpirun/torchrun on CPU. Call it before
    mindspore is imported.

    MindSpore's CPU collectives need its dynamic-networking roles (MS_ROLE, MS_SCHED_HOST/PORT,
    MS_WORKER_NUM, MS_NODE_ID) and one scheduler process, which a plain `mpirun python` does not
    provide ("Failed to initialize communication library"). (MindSpore 2.10 does have an MPI path
    for CPU, taken when OMPI_COMMAND and PMIX_RANK are set and MS_ROLE is not, but it initializes
    the same MPI library singleton first as the host and then as the device library, and the
    second call fails.) Rank 0 starts the scheduler at
    world.master_addr:master_port without OpenMPI's variables (it must not look like a rank);
    every rank waits until that port answers (connecting earlier stalls init() for ~30 s).
    Under msrun the variables are already set and nothing is done."""
    if world.size == 1 or os.environ.get("MS_ROLE"):
        return
    host, port = world.master_addr, str(world.master_port)
    if world.rank == 0:
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "ORTE_", "OPAL_"))}
        env.update(MS_ROLE="MS_SCHED", MS_SCHED_HOST=host, MS_SCHED_PORT=port, MS_WORKER_NUM=str(world.size))
        subprocess.Popen([sys.executable, "-c", _SCHEDULER], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    os.environ.update(MS_ROLE="MS_WORKER", MS_SCHED_HOST=host, MS_SCHED_PORT=port,
                      MS_WORKER_NUM=str(world.size), MS_NODE_ID=str(world.rank))
    _wait_for_port(host, int(port), world.timeout_s)


def exit_mindspore_rank(code: int):
    """End a finished MindSpore data-parallel rank at once (after the engine's
    `mindspore.communication.release()`), skipping the interpreter's teardown.

    MindSpore's cluster threads outlive release(): when a rank's teardown runs while a peer or the
    scheduler goes away, one of them dereferences a freed object and the finished run ends in
    SIGSEGV (4 of 8 two-rank runs on a loaded machine; 0 of 8 with this exit). Output is flushed and
    MPI (mpi4py, the gradient averaging) finalized first, as mpirun requires."""
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _die_with_parent() -> None:
    """In the scheduler child: get SIGKILL when rank 0 dies (Linux), so a killed job leaves nothing."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_for_port(host: str, port: int, timeout_s: float) -> None:
    import time

    deadline = time.time() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.time() > deadline:
                from mindtransformer.errors import CollectiveError

                raise CollectiveError(f"the MindSpore scheduler at {host}:{port} did not answer within {timeout_s} s; "
                                      "check --master_addr/--master_port and that rank 0 started") from None
            time.sleep(0.05)


def free_port() -> int:
    """A TCP port nobody listens on now (for a single-machine launch)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    """`python -m mindtransformer.trainer.distributed HOSTFILE RANKS`: check a hostfile for the
    launch scripts; prints rank 0's host and a free port, or one error line (exit 2)."""
    import argparse
    import sys

    from mindtransformer.utils.cli import StrictParser

    parser = StrictParser(prog="hostfile", description=main.__doc__, formatter_class=argparse.HelpFormatter)
    parser.add_argument("hostfile", help="OpenMPI hostfile: one 'HOST slots=N' line per machine")
    parser.add_argument("ranks", type=int, help="ranks the run starts (RANK_SIZE)")
    args = parser.parse_args(argv)
    try:
        hosts = read_hostfile(args.hostfile)
        slots = sum(n for _, n in hosts)
        if args.ranks < 1:
            raise UserInputError(f"RANK_SIZE={args.ranks}: must be >= 1")
        if slots < args.ranks:
            print(f"note: {args.hostfile} offers {slots} slots for {args.ranks} ranks; mpirun will oversubscribe",
                  file=sys.stderr)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    first = hosts[0][0]
    print(("127.0.0.1" if first in ("localhost", "127.0.0.1") else first), free_port())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
