"""Process environment settings shared by entry points."""

import os


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported (records are parsed with tf.data):
    keep its start-up chatter (oneDNN notes, info lines) from burying a tool's own output. TF is
    only a parser here, so oneDNN's numerics do not matter. An explicit setting by the user wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
