"""Process environment settings shared by entry points."""

import os


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported (records are parsed with tf.data):
    keep its start-up chatter (oneDNN notes, info lines) from burying a tool's own output. TF is
    only a parser here, so oneDNN's numerics do not matter. An explicit setting by the user wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def child_environment() -> dict:
    """The environment to start a child process with: this process's `os.environ`, passed
    explicitly. Why: `import mindspore` sets OMP_NUM_THREADS=1 with C's setenv, which Python's
    os.environ does not see but a child started without `env=` inherits, so a torch run started
    from a process that imported MindSpore would get one thread (the demo's fine-tuning did)."""
    return dict(os.environ)
