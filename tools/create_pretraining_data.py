#!/usr/bin/env python
"""Text -> MLM/NSP pretraining records (google's flags); see `--help` (mindtransformer/data/create_pretraining_data.py)."""

import os
import sys

# No BLAS call makes records, but numpy's import starts OpenBLAS's thread pool (one thread per
# core) unless told otherwise: one thread made a one-worker run 1-12 % faster (4 alternating
# pairs, sys time 0.21-0.24 -> 0.09-0.13 s) and its import ~50 ms shorter. --num_workers is the
# tool's one parallelism knob. Set before anything imports numpy; a user's own setting stays.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def keep_freed_memory() -> None:
    """Each chunk allocates ~17 MB of arrays of about the same sizes as the last one's. glibc hands
    blocks that large back to the kernel when they are freed (mmap), so every chunk paid ~4k fresh
    page faults (42k for the enwiki excerpt, about a fifth of a one-worker run's time). Serve them
    from the heap and keep freed memory there: 16k faults, peak memory unchanged (84 MB). Forked
    workers inherit it; without glibc this does nothing."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks below 64 MB from the heap
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of freed heap


from mindtransformer.data.create_pretraining_data import main  # noqa: E402
from mindtransformer.utils.cli import run_main  # noqa: E402

if __name__ == "__main__":
    keep_freed_memory()
    sys.exit(run_main(main))
