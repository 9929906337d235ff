"""SQuAD-format question answering (SQuAD v1.1/v2.0, CMRC 2018, DRCD) as a job of the one trainer.

    python -m mindtransformer.trainer.trainer --auto_model=bert_squad --train_data_path=train-v1.1.json \
        --eval_data_path=dev-v1.1.json --init_from=HF_FOLDER --seq_length=384 [--key=value ...]

Training examples are windowed into features once at start (data/squad.py: --seq_length,
--doc_stride, --max_query_length, --doc_stride_semantics), or read from records made by
generate_squad_mindrecord.py; answers that cannot be placed in their paragraph are skipped,
counted and listed in the run manifest. Features are batched with dynamic padding
(data/batches.py). Evaluation (at each --eval_steps and at the end) runs every evaluation
feature exactly once over all ranks, turns the start/end logits into answers (google's
post-processing, data/squad_answers.py), writes predictions.json and nbest_predictions.json
into the run directory and scores them with the official metric (v1.1, v2.0, or CMRC for
Chinese); the best checkpoint is kept by F1.

Shape legend: F features, B batch, T the batch's padded length, S --seq_length.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable, List, Optional

import numpy as np

from mindtransformer.data import squad, squad_answers, squad_metrics, squad_records
from mindtransformer.data.batches import TrainBatches
from mindtransformer.data.loaders import record_files
from mindtransformer.errors import UserInputError
from mindtransformer.trainer.classification import load_tokenizer_for, pad_multiple
from mindtransformer.trainer.loop import Best
from mindtransformer.trainer.prediction import predict_all
from mindtransformer.trainer.runner import Job, micro_batch_size, model_config
from mindtransformer.trainer.settings import reads_records, run_dir
from mindtransformer.utils.files import atomic_write_text


@dataclasses.dataclass
class EvalSet:
    """What evaluation needs: the questions, their windows and the metric that scores them."""
    path: str
    examples: List[squad.Example]
    features: Optional[List[squad.Feature]]  # None until add_windows
    metric: str                     # one of squad_metrics.METRICS

    @property
    def gold(self) -> list:
        """The questions as a SQuAD `data` list, for the metrics."""
        return [{"paragraphs": [{"qas": [{"id": e.qas_id, "answers": e.answers} for e in self.examples]}]}]


def window_options(settings) -> dict:
    s = settings
    return {"max_seq_length": s.seq_length, "doc_stride": s.doc_stride, "max_query_length": s.max_query_length,
            "doc_stride_semantics": s.doc_stride_semantics}


def read_eval_set(path: str, version_2_with_negative: bool, from_records: bool) -> EvalSet:
    """The evaluation questions of a SQuAD JSON file (checked; windows made later by `add_windows`),
    or the questions and windows of evaluation records and their maps."""
    if from_records:
        examples, features = squad_records.read_eval(path)
    else:
        examples = squad.read_examples(path, is_training=False, version_2_with_negative=version_2_with_negative).examples
        features = None
    metric = squad_metrics.metric_for((e.context for e in examples), version_2_with_negative)
    return EvalSet(path, examples, features, metric)


def add_windows(eval_set: EvalSet, tokenizer, options: dict) -> EvalSet:
    """Window the questions (records come windowed: their windows must fit max_seq_length)."""
    if eval_set.features is None:
        eval_set.features = squad.featurize(tokenizer, eval_set.examples, is_training=False, **options)
    longest = max((len(f.input_ids) for f in eval_set.features), default=0)
    if longest > options["max_seq_length"]:
        raise UserInputError(f"{eval_set.path}: windows of {longest} tokens, longer than --seq_length="
                             f"{options['max_seq_length']}; pass the --max_seq_length the records were made with")
    return eval_set


def read_train(settings, tokenizer) -> tuple:
    """(training features, ids of skipped questions)."""
    s = settings
    if reads_records(s):
        spans = squad_records.read_train(record_files(s.train_data_path))
        if s.max_train_examples:  # records hold windows: the first N windows
            spans = squad.SpanFeatures(spans.features[:s.max_train_examples], is_training=True)
        return spans, []
    read = squad.read_examples(s.train_data_path, is_training=True, version_2_with_negative=s.version_2_with_negative)
    examples = read.examples[:s.max_train_examples] if s.max_train_examples else read.examples
    features = squad.featurize(tokenizer, examples, is_training=True, **window_options(s))
    return squad.SpanFeatures(features, is_training=True), read.skipped


def span_logits(run_batch: Callable, eval_set: EvalSet, batch_size: int, seq_length: int, rank: int = 0,
                world_size: int = 1, all_sum: Callable = None, pad_multiple_: int = 1) -> tuple:
    """(start logits (F, S), end logits (F, S)) of every evaluation feature over all ranks;
    run_batch(batch) -> (start (B, T), end (B, T)). Past a feature's length the values are 0."""
    def rows(batch):
        start, end = run_batch(batch)
        both = np.zeros((len(start), 2 * seq_length), dtype=np.float32)  # (B, 2S): start | end
        both[:, :start.shape[1]], both[:, seq_length:seq_length + end.shape[1]] = start, end
        return None, both

    features = squad.SpanFeatures(eval_set.features, is_training=False)
    table, _ = predict_all(rows, features, batch_size, rank, world_size, all_sum, pad_multiple_)
    return table[:, :seq_length], table[:, seq_length:]


def answer_and_score(eval_set: EvalSet, starts: np.ndarray, ends: np.ndarray, tokenizer, settings,
                     output_dir: str = "") -> dict:
    """Post-process the logits, write predictions.json and nbest_predictions.json (and
    null_odds.json for v2.0) into output_dir when given, and score: the official metric's keys,
    plus `metric` and `missing_predictions`."""
    s = settings
    predictions, nbest, null_diff = squad_answers.answers(
        eval_set.examples, eval_set.features, starts, ends, tokenizer, n_best_size=s.n_best_size,
        max_answer_length=s.max_answer_length, version_2_with_negative=s.version_2_with_negative,
        null_score_diff_threshold=s.null_score_diff_threshold)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        files = {"predictions.json": predictions, "nbest_predictions.json": nbest}
        if s.version_2_with_negative:
            files["null_odds.json"] = null_diff
        for name, content in files.items():
            atomic_write_text(os.path.join(output_dir, name), json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return scores(eval_set, predictions)


def scores(eval_set: EvalSet, predictions: dict) -> dict:
    result = squad_metrics.evaluate(eval_set.gold, predictions, eval_set.metric)
    missing = result.pop("missing")
    result = {("exact_match" if k == "exact" else k): v for k, v in result.items()}
    return {**result, "metric": eval_set.metric, "missing_predictions": len(missing)}


def squad_job(settings, world) -> Job:
    s = settings
    tokenizer = load_tokenizer_for(s)
    train, skipped = read_train(s, tokenizer)
    eval_set = None
    if s.eval_data_path:
        eval_set = add_windows(read_eval_set(s.eval_data_path, s.version_2_with_negative, reads_records(s)),
                               tokenizer, window_options(s))
    config = model_config(s).replace(num_labels=2)
    batches = TrainBatches(train, micro_batch_size(s, world), seed=s.seed, rank=world.rank, world_size=world.size,
                           shuffle=s.do_shuffle, group_by_length=s.group_by_length, pad_multiple=pad_multiple(s),
                           pad_to=s.seq_length if s.pad_to_max_length else 0)
    out = run_dir(s)

    def evaluate(engine, step: int) -> dict:
        def run_batch(batch):
            outputs = engine.outputs(batch)
            return outputs["start_logits"], outputs["end_logits"]

        starts, ends = span_logits(run_batch, eval_set, s.eval_batch_size, s.seq_length, world.rank, world.size,
                                   lambda v: engine.all_sum(v, step), pad_multiple(s))
        metrics = answer_and_score(eval_set, starts, ends, tokenizer, s, out if world.is_main else "")
        return {k: v for k, v in metrics.items() if k != "metric"}

    if world.is_main:
        shown = f"; {len(skipped)} skipped (answer not found at its answer_start)" if skipped else ""
        print(f"SQuAD: {len(train)} training features{shown}"
              + (f"; {len(eval_set.examples)} questions in {len(eval_set.features)} features to evaluate "
                 f"({eval_set.metric} metric), best checkpoint by f1" if eval_set else "; no --eval_data_path"),
              file=sys.stderr, flush=True)
    return Job(config=config, task="question_answering", batches_per_epoch=batches.batches_per_epoch,
               make_epoch=batches.batches, best=Best(metric="f1", higher_is_better=True),
               evaluate=evaluate if eval_set else None, tokenizer=tokenizer,
               manifest={"train_features": len(train), "skipped_questions": skipped,
                         "eval_questions": len(eval_set.examples) if eval_set else 0,
                         "eval_features": len(eval_set.features) if eval_set else 0,
                         "metric": eval_set.metric if eval_set else None, "windows": window_options(s)})
