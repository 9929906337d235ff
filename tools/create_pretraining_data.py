#!/usr/bin/env python
"""Text -> MLM/NSP pretraining records (google's flags); see `--help` (mindtransformer/data/create_pretraining_data.py)."""

import os
import sys

# No BLAS call makes records, but numpy's import starts OpenBLAS's thread pool (one thread per
# core) unless told otherwise: one thread made a one-worker run 1-12 % faster (4 alternating
# pairs, sys time 0.21-0.24 -> 0.09-0.13 s) and its import ~50 ms shorter. --num_workers is the
# tool's one parallelism knob. Set before anything imports numpy; a user's own setting stays.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from mindtransformer.data.create_pretraining_data import main  # noqa: E402
from mindtransformer.utils.cli import run_main  # noqa: E402
from mindtransformer.utils.heap import keep_freed_blocks  # noqa: E402

if __name__ == "__main__":
    # Each chunk allocates ~17 MB of arrays of about the last chunk's sizes; glibc's defaults hand
    # such blocks back to the kernel and fault them in again (42k page faults for the enwiki
    # excerpt, 16k with this). Forked workers inherit it.
    keep_freed_blocks()
    sys.exit(run_main(main))
