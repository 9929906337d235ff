"""The main job, end to end on bundled real data and weights.

Today: (1) convert the real pretrained MiniLM BERT (HF folder) to a MindSpore checkpoint;
(2) encode the bundled SQuAD v1.1 dev question/sentence pairs with our tokenizer, run every head
through `transformers`, our torch model and our MindSpore model (from the converted checkpoint)
and print the parity table (exit 1 beyond tolerance); (3) extract the bundled Wikipedia excerpt,
make MLM/NSP pretraining records from it as TFRecord and as MindRecord, validate them and print
one decoded record.
"""

import os
import subprocess
import sys

from mindtransformer import convert, verify
from mindtransformer.utils.bundled import RESOURCES, minilm_path
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
    status = verify.main(["--model_path", model_path, "--mindspore_path", ckpt])
    print("\n== 3. pretraining records from the bundled Wikipedia excerpt")
    return status or pretraining_data(os.path.join(model_path, "vocab.txt"), args.output_dir)


def pretraining_data(vocab_file: str, output_dir: str) -> int:
    """Extraction, records in both containers, validation and one decoded record, each tool run as
    users run it (a process of its own: TensorFlow and MindSpore never share one)."""
    tools = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    text_dir, records_dir = os.path.join(output_dir, "wiki"), os.path.join(output_dir, "records")
    steps = [["extract_wiki.py", "--input_file", os.path.join(RESOURCES, "enwiki-excerpt-6-articles.xml.bz2"),
              "--output_dir", text_dir, "--quiet"]]
    for fmt in ("tfrecord", "mindrecord"):
        steps.append(["create_pretraining_data.py", "--input_file", os.path.join(text_dir, "wiki_*.txt"),
                      "--output_file", os.path.join(records_dir, f"wiki.{fmt}"), "--vocab_file", vocab_file,
                      "--output_format", fmt, "--max_seq_length", "128", "--max_predictions_per_seq", "20",
                      "--dupe_factor", "5", "--quiet"])
    steps.append(["vis_tfrecord_or_mindrecord.py", "--file_name", os.path.join(records_dir, "wiki.mindrecord"),
                  "--vis_option", "vis_mindrecord", "--num_records", "1", "--validate"])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GLOG_v="3")  # the frameworks' start-up chatter off
    for step in steps:
        done = subprocess.run([sys.executable, os.path.join(tools, step[0]), *step[1:]], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
        print("\n".join(lines))
        if done.returncode != 0:
            print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"{step[0]} failed", file=sys.stderr)
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
