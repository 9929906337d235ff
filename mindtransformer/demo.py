"""The main job, end to end on bundled real data and weights.

Today: convert the real pretrained MiniLM BERT (HF folder) to a MindSpore checkpoint, encode the
bundled SQuAD v1.1 dev question/sentence pairs with our tokenizer, run every head through
`transformers`, our torch model and our MindSpore model (from the converted checkpoint), and
print the parity table (exit 1 beyond tolerance).
"""

import os
import sys

from mindtransformer import convert, verify
from mindtransformer.utils.bundled import minilm_path
from mindtransformer.utils.cli import StrictParser, run_main


def main(argv=None) -> int:
    parser = StrictParser(prog="python -m mindtransformer.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=None, help="HF BERT folder; default: the bundled MiniLM")
    parser.add_argument("--output_dir", default="outputs/demo", help="where the converted checkpoint is written")
    args = parser.parse_args(argv)
    model_path = args.model_path or minilm_path()
    ckpt = os.path.join(args.output_dir, "model.ckpt")
    print("== 1. convert the HF checkpoint to MindSpore")
    convert.main(["--torch_path", model_path, "--mindspore_path", ckpt])
    print("\n== 2. the same real batch through transformers, our torch model and our MindSpore model")
    return verify.main(["--model_path", model_path, "--mindspore_path", ckpt])


if __name__ == "__main__":
    sys.exit(run_main(main))
