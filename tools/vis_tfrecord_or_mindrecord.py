#!/usr/bin/env python
"""Print or validate pretraining records; see `--help` (mindtransformer/data/inspect_records.py)."""

import sys

from mindtransformer.data.inspect_records import main
from mindtransformer.utils.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
