#!/usr/bin/env python
"""Text -> MLM/NSP pretraining records (google's flags); see `--help` (mindtransformer/data/create_pretraining_data.py)."""

import sys

from mindtransformer.data.create_pretraining_data import main
from mindtransformer.utils.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
