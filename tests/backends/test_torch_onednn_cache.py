"""The torch binding gives oneDNN's kernel cache room for fine-tuning's many batch lengths
(mindtransformer/backends/torch/__init__.py), before oneDNN first reads the setting."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROBE = ("import os, mindtransformer.backends.torch as b, torch; "
         "x = torch.ones(4, 4, dtype=torch.bfloat16); x @ x; "  # oneDNN's first use comes after the import
         "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])")


@pytest.mark.parametrize("user_value, expected", [(None, "8192"), ("64", "64")])
def test_the_torch_binding_sets_onednns_cache_size_unless_the_user_did(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    if user_value:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = user_value
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert done.stdout.split()[-1] == expected
