"""Ranks from each launcher's environment, and hostfiles."""

import pytest

from mindtransformer.errors import UserInputError
from mindtransformer.trainer.distributed import read_hostfile, world_from_env
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
