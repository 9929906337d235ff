"""SQuAD-format JSON -> squad records for the trainer's --dataset_format=tfrecord|mindrecord.

    python examples/generate_mindrecord/generate_squad_mindrecord.py --vocab_file=vocab.txt \
        --train_file=train-v1.1.json --predict_file=dev-v1.1.json --output_dir=records/squad \
        [--output_format=mindrecord] [--max_seq_length=384 --doc_stride=128 --max_query_length=64]

Writes OUTPUT_DIR/train.<format> (training windows with their answer spans) and
OUTPUT_DIR/dev.<format> (evaluation windows) in the MindSpore BERT zoo's squad schema, each with
a JSON manifest; the evaluation file also gets dev.<format>.maps.json (the questions, contexts,
gold answers and each window's token -> word and max-context maps), which is what turns the
model's logits back into answer text and scores. Train and evaluate with
    python -m mindtransformer.trainer.trainer --auto_model=bert_squad --dataset_format=mindrecord \
        --train_data_path=records/squad/train.mindrecord --eval_data_path=records/squad/dev.mindrecord ...
Questions whose answer is not found at its answer_start are skipped for training and listed.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mindtransformer.data import squad, squad_records  # noqa: E402
from mindtransformer.data.records import FORMATS, file_sha256  # noqa: E402
from mindtransformer.errors import UserInputError  # noqa: E402
from mindtransformer.trainer.settings import add_setting_flags  # noqa: E402
from mindtransformer.utils.cli import StrictParser, boolean, run_main  # noqa: E402


def main(argv=None) -> int:
    p = StrictParser(prog="generate_squad_mindrecord.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab_file", required=True, help="vocab.txt of the model to fine-tune (or its HF folder)")
    p.add_argument("--train_file", default="", help="SQuAD-format JSON to train on")
    p.add_argument("--predict_file", default="", help="SQuAD-format JSON to evaluate on")
    p.add_argument("--output_dir", required=True, help="where the record files, manifests and maps go")
    p.add_argument("--output_format", default="mindrecord", choices=FORMATS, help="record container")
    p.add_argument("--max_seq_length", type=int, default=384, help="tokens per window")
    p.add_argument("--do_lower_case", type=boolean, default=None,
                   help="lower-case the text (default: the tokenizer_config.json beside the vocab, else true)")
    add_setting_flags(p, ("doc_stride", "doc_stride_semantics", "max_query_length", "version_2_with_negative"))
    args = p.parse_args(argv)
    if not args.train_file and not args.predict_file:
        raise UserInputError("pass --train_file, --predict_file or both")
    from mindtransformer.data.tokenization import BertTokenizer, load_tokenizer

    tokenizer = load_tokenizer(args.vocab_file)
    if args.do_lower_case is not None and args.do_lower_case != tokenizer.do_lower_case:
        tokenizer = BertTokenizer(tokenizer.vocab_file, do_lower_case=args.do_lower_case)
    options = {"max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride,
               "max_query_length": args.max_query_length, "doc_stride_semantics": args.doc_stride_semantics}
    splits = [(name, path, name == "train") for name, path in (("train", args.train_file), ("dev", args.predict_file))
              if path]
    read = {name: squad.read_examples(path, training, args.version_2_with_negative)  # every file checked first
            for name, path, training in splits}
    for name, path, training in splits:
        examples = read[name].examples
        features = squad.featurize(tokenizer, examples, is_training=training, **options)
        out = os.path.join(args.output_dir, f"{name}.{args.output_format}")
        squad_records.write_records(features, out, args.output_format, args.max_seq_length, {
            "source": os.path.abspath(path), "source_sha256": file_sha256(path), "split": name,
            "vocab_file": os.path.abspath(tokenizer.vocab_file), "do_lower_case": tokenizer.do_lower_case,
            "questions": len(examples), "skipped_questions": read[name].skipped, **options},
            examples=None if training else examples)
        skipped = f"; {len(read[name].skipped)} questions skipped (answer not at its answer_start)" \
            if read[name].skipped else ""
        print(f"{out}: {len(features)} windows of {len(examples)} questions{skipped}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
