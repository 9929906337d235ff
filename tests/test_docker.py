"""The Dockerfiles mirror the README: they set up with the script the README's commands run and
start the README's test command (no Docker engine runs here; CI builds nothing)."""

import json
import os
import re

import pytest

from tests.conftest import REPO_ROOT


def readme_commands() -> list:
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_runs_the_readme_commands(name):
    with open(os.path.join(REPO_ROOT, "docker", name), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    demo, test = readme_commands()
    assert (demo, test) == ("bash scripts/demo.sh", "bash scripts/test.sh")
    for script in ("scripts/demo.sh", "scripts/test.sh"):  # both README commands start with the set-up
        with open(os.path.join(REPO_ROOT, script), encoding="utf-8") as f:
            assert "bash scripts/setup.sh" in f.read()
    assert "RUN bash scripts/setup.sh" in lines
    cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[len("CMD "):])
    assert " ".join(cmd) == test
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert test in f.read()  # CI runs the same command
