#!/usr/bin/env python
"""TFRecord -> MindRecord conversion of pretraining records; see `--help` (mindtransformer/data/convert_records.py)."""

import sys

from mindtransformer.data.convert_records import main
from mindtransformer.utils.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
