"""The main job, end to end on bundled real data and weights.

Today: load the real pretrained MiniLM BERT, encode the bundled SQuAD v1.1 dev question/sentence
pairs with our tokenizer, run every head through `transformers` and our model, print the parity
table (exit 1 beyond tolerance).
"""

import sys

from mindtransformer import verify
from mindtransformer.utils.bundled import minilm_path
from mindtransformer.utils.cli import StrictParser, run_main


def main(argv=None) -> int:
    parser = StrictParser(prog="python -m mindtransformer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="HF BERT folder; default: the bundled MiniLM")
    args = parser.parse_args(argv)
    return verify.main(["--model_path", args.model_path or minilm_path()])


if __name__ == "__main__":
    sys.exit(run_main(main))
