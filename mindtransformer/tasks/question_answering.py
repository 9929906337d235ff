"""Answer SQuAD-format questions with a fine-tuned model and score them, or score a predictions file.

    python -m mindtransformer.tasks.question_answering --auto_model=bert_squad \
        --eval_data_path=dev-v1.1.json --load_checkpoint_path=outputs/squad/final
    python -m mindtransformer.tasks.question_answering --eval_data_path=dev-v1.1.json \
        --predictions_file=predictions.json                      # score only, like evaluate-v1.1.py

With a checkpoint: every question of --eval_data_path (a SQuAD v1.1/v2.0, CMRC 2018 or DRCD JSON
file, or evaluation records with their .maps.json from generate_squad_mindrecord.py) is windowed,
each window run exactly once, and the logits post-processed as google's run_squad does;
predictions.json and nbest_predictions.json go to --output_dir. The scores of the data's metric
(v1.1 EM/F1; v2.0 with --version_2_with_negative; CMRC's for Chinese) are printed as one JSON
object on the last line, in percent like the official scripts; a question without a prediction
counts as wrong and the number of such questions is reported.
"""

from __future__ import annotations

import json
import os
import sys

from mindtransformer.data import squad_metrics
from mindtransformer.errors import UserInputError
from mindtransformer.tasks.checkpoint import load_fine_tuned, model_size_config, select_device, tokenizer_for
from mindtransformer.trainer.settings import add_setting_flags
from mindtransformer.utils.cli import StrictParser, run_main

WINDOW_AND_ANSWER_FLAGS = ("doc_stride", "doc_stride_semantics", "max_query_length", "n_best_size", "max_answer_length",
                           "version_2_with_negative", "null_score_diff_threshold")


def build_parser() -> StrictParser:
    p = StrictParser(prog="python -m mindtransformer.tasks.question_answering", description=__doc__.split("\n\n")[0])
    p.add_argument("--eval_data_path", required=True,
                   help="SQuAD-format JSON with the questions and gold answers (or evaluation records + .maps.json)")
    p.add_argument("--predictions_file", default="",
                   help="score this {question id: answer} JSON instead of running a model (like evaluate-v1.1.py)")
    p.add_argument("--load_checkpoint_path", default="",
                   help="HF folder, MindSpore .ckpt (config.json beside it, or the size flags) or a trainer checkpoint "
                        "directory")
    p.add_argument("--auto_model", default="bert_squad", choices=("bert_squad",), help="the original scripts' model name")
    p.add_argument("--backend", default="torch", choices=("torch", "mindspore"), help="framework that runs the model")
    p.add_argument("--device_target", default="CPU", choices=("CPU", "GPU"), help="where the model runs")
    p.add_argument("--vocab_file_path", default="", help="vocab.txt (default: the checkpoint folder's)")
    p.add_argument("--checkpoint_prefix", default="",
                   help="with a --load_checkpoint_path directory of several .ckpt files: load the newest <prefix>*.ckpt")
    p.add_argument("--embedding_size", type=int, default=0, help="hidden size of a bare .ckpt (no config.json beside it)")
    p.add_argument("--num_layers", type=int, default=0, help="transformer layers of a bare .ckpt")
    p.add_argument("--num_heads", type=int, default=0, help="attention heads of a bare .ckpt")
    p.add_argument("--output_dir", default="", help="where predictions.json and nbest_predictions.json go "
                                                    "(default: the checkpoint's folder)")
    p.add_argument("--seq_length", type=int, default=384, help="tokens per window ([CLS] question [SEP] text [SEP])")
    p.add_argument("--batch_size", type=int, default=64, help="windows per batch")
    p.add_argument("--metric", default="auto", choices=("auto",) + squad_metrics.METRICS,
                   help="auto: v2.0 with --version_2_with_negative, cmrc for Chinese text, else v1.1")
    add_setting_flags(p, WINDOW_AND_ANSWER_FLAGS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.predictions_file) == bool(args.load_checkpoint_path):
        raise UserInputError("pass --load_checkpoint_path (answer and score) or --predictions_file (score only)")
    if args.predictions_file:
        return score_file(args)
    from mindtransformer.backends import get_backend
    from mindtransformer.trainer.question_answering import (add_windows, answer_and_score, read_eval_set, span_logits,
                                                             window_options)

    from_records = os.path.isfile(args.eval_data_path + ".maps.json")
    eval_set = read_eval_set(args.eval_data_path, args.version_2_with_negative, from_records)  # checked first
    select_device(args.backend, args.device_target)
    path = checkpoint_file(args.load_checkpoint_path, args.checkpoint_prefix)
    size = None
    if args.embedding_size or args.num_layers or args.num_heads:
        if not (args.embedding_size and args.num_layers and args.num_heads and args.vocab_file_path):
            raise UserInputError("a bare .ckpt needs all of --embedding_size, --num_layers, --num_heads and "
                                 "--vocab_file_path")
        size = model_size_config(args.vocab_file_path, args.embedding_size, args.num_layers, args.num_heads)
    model = load_fine_tuned(path, "question_answering", args.backend, config=size, what="question-answering head")
    if args.seq_length > model.config.max_position_embeddings:
        raise UserInputError(f"--seq_length={args.seq_length} exceeds the model's max_position_embeddings "
                             f"{model.config.max_position_embeddings}; lower it")
    tokenizer = tokenizer_for(model, args.vocab_file_path)
    backend = get_backend(args.backend)
    add_windows(eval_set, tokenizer, window_options(args))  # the flags have the trainer's names
    if args.metric != "auto":
        eval_set.metric = args.metric

    def run_batch(batch):
        outputs = backend.infer(model, batch)
        return outputs["start_logits"], outputs["end_logits"]

    starts, ends = span_logits(run_batch, eval_set, args.batch_size, args.seq_length)
    output_dir = args.output_dir or model.pretrained_path
    metrics = answer_and_score(eval_set, starts, ends, tokenizer, args, output_dir)
    print(f"{args.eval_data_path}: {len(eval_set.examples)} questions in {len(eval_set.features)} windows answered; "
          f"predictions.json and nbest_predictions.json in {output_dir}", file=sys.stderr)
    print(json.dumps(metrics))
    return 0


def checkpoint_file(path: str, prefix: str) -> str:
    """The checkpoint to load: `path`, or with --checkpoint_prefix the newest <prefix>*.ckpt in it."""
    if not prefix or not os.path.isdir(path):
        return path
    found = [os.path.join(path, n) for n in os.listdir(path) if n.startswith(prefix) and n.endswith(".ckpt")]
    if not found:
        raise UserInputError(f"{path}: no {prefix}*.ckpt file; check --checkpoint_prefix")
    return max(found, key=os.path.getmtime)


def score_file(args) -> int:
    """Score --predictions_file against --eval_data_path with the data's metric."""
    try:
        with open(args.eval_data_path, encoding="utf-8") as f:
            dataset = json.load(f)["data"]
    except FileNotFoundError:
        raise UserInputError(f"--eval_data_path={args.eval_data_path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise UserInputError(f"{args.eval_data_path}: not a SQuAD-format JSON file with a 'data' list ({err})") from None
    try:
        with open(args.predictions_file, encoding="utf-8") as f:
            predictions = json.load(f)
    except FileNotFoundError:
        raise UserInputError(f"--predictions_file={args.predictions_file}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{args.predictions_file}: not valid JSON ({err})") from None
    if not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        raise UserInputError(f"{args.predictions_file}: expected one JSON object {{question id: answer text}}")
    try:
        contexts = [p["context"] for article in dataset for p in article["paragraphs"]]
        metric = args.metric if args.metric != "auto" else squad_metrics.metric_for(contexts, args.version_2_with_negative)
        result = squad_metrics.evaluate(dataset, predictions, metric)
    except (KeyError, TypeError) as err:
        raise UserInputError(f"{args.eval_data_path}: a paragraph or question lacks the field {err}; fix the file") from None
    missing = result.pop("missing")
    if missing:
        print(f"{args.predictions_file}: {len(missing)} questions have no prediction and count as wrong "
              f"(first: {missing[0]})", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
