"""Child processes started after `import mindspore` keep the user's thread settings."""

import os
import subprocess
import sys

CHILD_THREADS = ("import subprocess, sys, mindspore; from mindtransformer.utils.env import child_environment; "
                 "show = ['sh', '-c', 'echo ${OMP_NUM_THREADS:-unset}']; "
                 "print(subprocess.run(show, capture_output=True, text=True).stdout.strip(), "
                 "subprocess.run(show, env=child_environment(), capture_output=True, text=True).stdout.strip())")


def test_a_child_started_after_importing_mindspore_keeps_the_thread_settings():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", CHILD_THREADS], capture_output=True, text=True, env=env, check=True)
    inherited, passed = done.stdout.split()[-2:]
    # MindSpore set OMP_NUM_THREADS=1 behind os.environ's back; child_environment() leaves it out.
    assert (inherited, passed) == ("1", "unset")
    env["OMP_NUM_THREADS"] = "2"  # a user's own setting is passed on
    done = subprocess.run([sys.executable, "-c", CHILD_THREADS], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split()[-1] == "2"
