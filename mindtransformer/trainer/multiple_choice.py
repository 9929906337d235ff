"""Multiple-choice question answering (TMMLU, MMLU/C-Eval layouts) as a job of the one trainer.

    python -m mindtransformer.trainer.trainer --auto_model=bert_multiple_choice --data_dir=TMMLU_DIR \
        [--subjects=a,b] --init_from=HF_FOLDER [--key=value ...]

Questions come from --data_dir (a CSV, a folder of subject CSVs or TMMLU's tree), cut per subject
70/25/5 into train/validation/test with --split_seed, or from --train_data_path and
--eval_data_path when the split is given (CSV files or folders, or JSON written by a run). The
three parts are written into the run directory as structured JSON (`test_questions.json` is what
`python -m mindtransformer.tasks.multiple_choice` evaluates). The head is HF's
BertForMultipleChoice: one score per [CLS] question [SEP] option [SEP], softmax over the options.
Evaluation (at each --eval_steps and at the end) scores the validation questions, each exactly
once over all ranks; the best checkpoint is kept by accuracy.

Shape legend: N questions, B batch, C choices, T padded length.
"""

from __future__ import annotations

import os

from mindtransformer.data import multiple_choice as mc
from mindtransformer.data.batches import TrainBatches
from mindtransformer.errors import UserInputError
from mindtransformer.trainer.classification import load_tokenizer_for, pad_multiple
from mindtransformer.trainer.loop import Best
from mindtransformer.trainer.prediction import predict_all
from mindtransformer.trainer.runner import Job, micro_batch_size, model_config
from mindtransformer.trainer.settings import run_dir


def read_questions(path: str, settings) -> mc.Dataset:
    """A CSV, a folder of subjects, or questions JSON (written by a run)."""
    if path.endswith(".json"):
        return mc.Dataset(mc.read_json(path), {})
    return mc.read_subjects(path, settings.subjects, settings.num_choices)


def read_split(settings) -> tuple:
    """({train, validation, test} question lists, skipped reasons -> counts)."""
    s = settings
    if s.data_dir:
        data = read_questions(s.data_dir, s)
        return mc.split(data.questions, s.split_seed), data.skipped
    train, dev = read_questions(s.train_data_path, s), read_questions(s.eval_data_path, s)
    skipped = {k: train.skipped.get(k, 0) + dev.skipped.get(k, 0) for k in {**train.skipped, **dev.skipped}}
    return {"train": train.questions, "validation": dev.questions, "test": []}, skipped


def score(run_batch, features: mc.ChoiceFeatures, settings, rank: int, world_size: int, all_sum) -> dict:
    """accuracy and eval_loss over every question, each exactly once over the ranks."""
    logits, loss = predict_all(run_batch, features, settings.eval_batch_size, rank, world_size, all_sum,
                               pad_multiple(settings))
    accuracy = mc.accuracy_by_subject(features.subjects, logits.argmax(axis=1), features.labels)["overall"]
    return {"accuracy": accuracy, "eval_loss": loss / len(features), "eval_examples": len(features)}


def multiple_choice_job(settings, world) -> Job:
    s = settings
    parts, skipped = read_split(s)
    for name in ("train", "validation"):
        if not parts[name]:
            raise UserInputError(f"no {name} questions (after --subjects and the split); add subjects or data")
    tokenizer = load_tokenizer_for(s)
    train = mc.featurize(tokenizer, parts["train"], s.seq_length)
    if s.max_train_examples:
        train = mc.ChoiceFeatures(train.input_ids[:s.max_train_examples], train.segment_ids[:s.max_train_examples],
                                  train.labels[:s.max_train_examples], train.subjects[:s.max_train_examples])
    dev = mc.featurize(tokenizer, parts["validation"], s.seq_length)
    if world.is_main:
        out = run_dir(s)
        os.makedirs(out, exist_ok=True)
        for name, questions in parts.items():
            if questions:
                mc.write_json(questions, os.path.join(out, f"{name}_questions.json"))
        reasons = "; ".join(f"{n} skipped: {why}" for why, n in sorted(skipped.items()))
        print(f"multiple choice: {len(train)} training, {len(dev)} validation, {len(parts['test'])} test questions "
              f"over {len(set(train.subjects))} subjects" + (f" ({reasons})" if reasons else "")
              + f"; questions JSON in {out}", flush=True)
    batches = TrainBatches(train, micro_batch_size(s, world), seed=s.seed, rank=world.rank, world_size=world.size,
                           shuffle=s.do_shuffle, group_by_length=s.group_by_length, pad_multiple=pad_multiple(s))

    def evaluate(engine, step: int) -> dict:
        def run_batch(batch):
            outputs = engine.outputs(batch)
            return (float(outputs["loss"]) if "loss" in outputs else None), outputs["logits"]

        return score(run_batch, dev, s, world.rank, world.size, lambda v: engine.all_sum(v, step))

    return Job(config=model_config(s), task="multiple_choice",
               batches_per_epoch=batches.batches_per_epoch, make_epoch=batches.batches,
               best=Best(metric="accuracy", higher_is_better=True), evaluate=evaluate, tokenizer=tokenizer,
               manifest={"task": "multiple_choice", "num_choices": s.num_choices, "split_seed": s.split_seed,
                         "questions": {name: len(q) for name, q in parts.items()}, "skipped_questions": skipped,
                         "subjects": sorted(set(train.subjects))})
