"""The benchmarks' shared --seeds parsing: a list of integers, or argparse's one-line error."""

import os
import subprocess
import sys

import pytest

from bench.common import seed_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_list_parses_comma_separated_integers():
    assert seed_list("0,1,2") == [0, 1, 2]
    assert seed_list("7") == [7]


@pytest.mark.parametrize("script", ["squad", "glue", "peft"])
def test_a_malformed_seed_list_is_a_one_line_usage_error(script):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{script}.py"), "--seeds", "0,x"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "--seeds" in last and "'0,x' is not a comma-separated list of integers" in last
