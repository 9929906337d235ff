"""GLUE (or CSV) task files -> classifier records for the trainer's --dataset_format=tfrecord|mindrecord.

    python examples/generate_mindrecord/generate_glue_mindrecord.py --task_name=RTE \
        --vocab_path=vocab.txt --input_dir=glue/RTE --output_dir=records/RTE [--output_format=mindrecord]

Writes OUTPUT_DIR/train.<format> and one file per dev file (dev.<format>; MNLI:
dev_matched/dev_mismatched), each with a JSON manifest, in the MindSpore BERT zoo's classifier
schema: input_ids, input_mask, segment_ids (int64, padded to --max_seq_length) and label_ids
(int64; float32 for STS-B). Train with
    python -m mindtransformer.trainer.trainer --auto_model=bert_glue --task_name=RTE \
        --dataset_format=mindrecord --train_data_path=records/RTE/train.mindrecord \
        --eval_data_path=records/RTE/dev.mindrecord ...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mindtransformer.data import classification, glue  # noqa: E402
from mindtransformer.data.records import FORMATS, file_sha256  # noqa: E402
from mindtransformer.errors import UserInputError  # noqa: E402
from mindtransformer.utils.cli import StrictParser, boolean, run_main  # noqa: E402


def main(argv=None) -> int:
    p = StrictParser(prog="generate_glue_mindrecord.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--task_name", required=True, help="a GLUE task (cola, sst-2, mrpc, sts-b, qqp, mnli, qnli, rte, "
                   "wnli) or csv")
    p.add_argument("--vocab_path", required=True, help="vocab.txt of the model to fine-tune (or its HF folder)")
    p.add_argument("--input_dir", required=True, help="directory of the task's files (train.tsv, dev.tsv, ...)")
    p.add_argument("--output_dir", required=True, help="where the record files and manifests go")
    p.add_argument("--output_format", default="mindrecord", choices=FORMATS, help="record container")
    p.add_argument("--max_seq_length", type=int, default=128, help="tokens per example (pairs truncated longest-first)")
    p.add_argument("--do_lower_case", type=boolean, default=None,
                   help="lower-case the text (default: the tokenizer_config.json beside the vocab, else true)")
    p.add_argument("--text_column", default="", help="--task_name=csv: column of the text")
    p.add_argument("--text_b_column", default="", help="--task_name=csv: column of an optional second text")
    p.add_argument("--label_column", default="label", help="--task_name=csv: column of the label")
    args = p.parse_args(argv)
    from mindtransformer.data.tokenization import BertTokenizer, load_tokenizer

    tokenizer = load_tokenizer(args.vocab_path)
    if args.do_lower_case is not None and args.do_lower_case != tokenizer.do_lower_case:
        tokenizer = BertTokenizer(tokenizer.vocab_file, do_lower_case=args.do_lower_case)
    if args.task_name.lower() == glue.GENERIC:
        if not args.text_column:
            raise UserInputError("--task_name=csv needs --text_column (and --label_column if it is not 'label')")
        train_file = next((os.path.join(args.input_dir, n) for n in ("train.csv", "train.tsv")
                           if os.path.isfile(os.path.join(args.input_dir, n))), None)
        if train_file is None:
            raise UserInputError(f"{args.input_dir}: no train.csv or train.tsv")
        task = glue.csv_task(train_file, args.text_column, args.label_column, args.text_b_column)
        splits = [("train", train_file)] + [("dev", os.path.join(args.input_dir, n)) for n in ("dev.csv", "dev.tsv")
                                            if os.path.isfile(os.path.join(args.input_dir, n))]
    else:
        task = glue.get_task(args.task_name)
        splits = [("train", os.path.join(args.input_dir, "train.tsv"))] + glue.dev_sets(task, args.input_dir)
    examples = {name: glue.read_examples(task, path) for name, path in splits}  # every file checked first
    for name, path in splits:
        features = classification.featurize(tokenizer, task, examples[name], args.max_seq_length)
        out = os.path.join(args.output_dir, f"{name}.{args.output_format}")
        truncated = int((features.lengths >= args.max_seq_length).sum())
        classification.write_records(features, out, args.output_format, args.max_seq_length, {
            "task": task.name, "labels": list(task.labels), "source": os.path.abspath(path),
            "source_sha256": file_sha256(path), "vocab_file": os.path.abspath(tokenizer.vocab_file),
            "do_lower_case": tokenizer.do_lower_case, "max_seq_length": args.max_seq_length,
            "truncated_examples": truncated})
        print(f"{out}: {len(features)} examples ({truncated} at the length limit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
