#!/usr/bin/env python
"""HF <-> MindSpore BERT checkpoint conversion; see `--help` (mindtransformer/convert.py)."""

import sys

from mindtransformer.convert import main
from mindtransformer.utils.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main(main))
