"""Ranks from each launcher's environment, core binding, and hostfiles."""

import json
import os
import subprocess
import sys

import pytest

from mindtransformer.errors import UserInputError
from mindtransformer.trainer.distributed import rank_cores, read_hostfile, world_from_env
from mindtransformer.trainer.settings import parse_settings


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, 0, "none")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (1, 4, 1, "mpirun")),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, (3, 8, 3, "torchrun")),
    ({"RANK_ID": "2", "RANK_SIZE": "4", "DEVICE_ID": "2"}, (2, 4, 2, "msrun")),
    # mpirun wins when a stale torchrun variable is also present
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2", "RANK": "5", "WORLD_SIZE": "9"}, (0, 2, 0, "mpirun")),
])
def test_ranks_come_from_the_launcher(env, expected):
    world = world_from_env(None, env)
    assert (world.rank, world.size, world.local_rank, world.launcher) == expected


@pytest.mark.parametrize("env, local_size", [
    ({}, 1),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, 4),
    ({"RANK_ID": "2", "RANK_SIZE": "4"}, 0),  # not said: no core binding
])
def test_ranks_per_host_come_from_the_launcher(env, local_size):
    assert world_from_env(None, env).local_size == local_size


def _bound_cores(rank: int, size: int, local_size: int, **env) -> dict:
    """bind_cores in a fresh process (it pins the calling process): what it returned and the
    affinity the process has afterwards."""
    code = ("import json, os; from mindtransformer.trainer.distributed import World, bind_cores; "
            f"got = bind_cores(World(rank={rank}, size={size}, local_rank={rank}, local_size={local_size})); "
            "print(json.dumps({'returned': got, 'affinity': sorted(os.sched_getaffinity(0))}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    return json.loads(done.stdout)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores this process may use")
def test_each_rank_of_a_host_is_pinned_to_its_own_share_of_the_cores():
    cores = sorted(os.sched_getaffinity(0))
    half = len(cores) // 2
    first, second = _bound_cores(0, 2, 2), _bound_cores(1, 2, 2)
    assert first == {"returned": cores[:half], "affinity": cores[:half]}
    assert second == {"returned": cores[half:2 * half], "affinity": cores[half:2 * half]}
    assert not set(first["affinity"]) & set(second["affinity"])
    # Nothing is pinned for a single rank, an unknown number of ranks per host, or more ranks than cores.
    for rank, size, local_size in ((0, 1, 1), (1, 2, 0), (0, len(cores) + 1, len(cores) + 1)):
        assert _bound_cores(rank, size, local_size) == {"returned": [], "affinity": cores}
    # Nor when mpirun already bound the ranks (its default --bind-to core/socket).
    assert _bound_cores(1, 2, 2, OMPI_MCA_orte_bound_at_launch="1") == {"returned": [], "affinity": cores}


# Two sockets x 4 cores x 2 hardware threads, numbered as Linux does: CPU n and n + 8 are one core.
SMT_HOST = {cpu: ((cpu % 8) // 4, cpu % 4) for cpu in range(16)}


@pytest.mark.parametrize("allowed, topology, local_size, expected", [
    # whole cores with both their threads, one socket per rank; not 0-7 (every core's first
    # thread) against 8-15 (their siblings)
    (list(range(16)), SMT_HOST, 2, [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]),
    (list(range(16)), SMT_HOST, 4, [[0, 1, 8, 9], [2, 3, 10, 11], [4, 5, 12, 13], [6, 7, 14, 15]]),
    # a job restricted to part of the host (taskset): only the allowed threads
    ([0, 1, 2, 8, 9], SMT_HOST, 2, [[0, 8], [1, 2, 9]]),
    # fewer cores than ranks: the hardware threads are split
    ([0, 8], SMT_HOST, 2, [[0], [8]]),
    # no topology known: each CPU is a core; a remainder goes to the later ranks
    ([0, 1, 2], {}, 2, [[0], [1, 2]]),
    ([0, 1], {}, 3, [[], [], []]),
])
def test_ranks_get_whole_physical_cores(allowed, topology, local_size, expected):
    assert [rank_cores(allowed, topology, rank, local_size) for rank in range(local_size)] == expected


def test_address_settings_override_the_environment():
    env = {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "23456"}
    assert (world_from_env(None, env).master_addr, world_from_env(None, env).master_port) == ("10.0.0.5", 23456)
    settings = parse_settings(["--master_addr=10.0.0.9", "--master_port=30000", "--network_interface=eth1"])
    world = world_from_env(settings, env)
    assert (world.master_addr, world.master_port, world.network_interface) == ("10.0.0.9", 30000, "eth1")
    assert world_from_env(None, {}).master_addr == "127.0.0.1"


def test_hostfiles(tmp_path):
    good = tmp_path / "hosts"
    good.write_text("# cluster\nnode1 slots=8\nnode2 slots=8 max_slots=8\n\nnode3\n")
    assert read_hostfile(str(good)) == [("node1", 8), ("node2", 8), ("node3", 1)]
    bad = tmp_path / "bad"
    bad.write_text("node1 slots=8\nnode2 slots=0\n")
    with pytest.raises(UserInputError, match=r"bad:2: 'node2 slots=0' is not a hostfile line"):
        read_hostfile(str(bad))
    with pytest.raises(UserInputError, match="no such hostfile"):
        read_hostfile(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(UserInputError, match="holds no host"):
        read_hostfile(str(tmp_path / "empty"))
