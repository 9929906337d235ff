"""BERT pretraining (MLM + NSP) on record files, standalone or data-parallel, either backend.

    python -m mindtransformer.models.bert.bert_trainer --train_data_path=DIR [--key=value ...]

(the same as `python -m mindtransformer.trainer.trainer --auto_model=bert ...`). Everything cheap
is checked before anything heavy starts: the flags (settings.check), the records' sizes against
--seq_length/--max_predictions_per_seq, a checkpoint to resume against the model and run shape.
Then trainer/runner.train: the model (random, --init_from an HF folder or .ckpt, or the
checkpoint), the engine of the backend, the one loop (trainer/loop.py), and at the end an HF
folder `<save_checkpoint_path>/final/` (plus `<prefix>.ckpt` for MindSpore).

Shape legend: B micro-batch, T seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

import numpy as np

from mindtransformer.data import loaders
from mindtransformer.trainer.loop import Best
from mindtransformer.trainer.runner import Job, micro_batch_size, model_config


def pretraining_inputs(batch: dict) -> dict:
    """Record columns (google's names) -> BertForPreTraining's inputs.

    The MLM head runs at masked_lm_positions (B, P) only, with labels (B, P) = masked_lm_ids where
    masked_lm_weights is 1 and -100 in the padding slots: the loss is the mean over real
    predictions, google's weighted sum / sum of weights."""
    labels = np.where(batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], -100).astype(np.int64)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["input_mask"],
            "token_type_ids": batch["segment_ids"], "labels": labels,
            "next_sentence_label": batch["next_sentence_labels"].reshape(-1).astype(np.int64),
            "masked_lm_positions": batch["masked_lm_positions"]}


def pretraining_job(settings, world) -> Job:
    """The records, their stream and the evaluation of a pretraining run (checked before anything heavy)."""
    s = settings
    files = loaders.record_files(s.train_data_path)
    loaders.check_sizes(files, s.seq_length, s.max_predictions_per_seq)
    eval_files = loaders.record_files(s.eval_data_path) if s.eval_data_path else []
    if eval_files:
        loaders.check_sizes(eval_files, s.seq_length, s.max_predictions_per_seq)
    micro_batch = micro_batch_size(s, world)
    stream = loaders.PretrainingStream(files, micro_batch, shuffle=s.do_shuffle, seed=s.seed, rank=world.rank,
                                       world_size=world.size, buffer_size=s.shuffle_buffer)
    per_epoch = stream.batches_per_epoch(loaders.count_records(files))

    def make_epoch(epoch: int, skip: int):
        return map(pretraining_inputs, stream.batches(epoch, skip))

    def evaluate(engine, step: int) -> dict:
        eval_stream = loaders.PretrainingStream(eval_files, micro_batch, shuffle=False, rank=world.rank,
                                                world_size=world.size, drop_remainder=False)
        total, count = 0.0, 0
        for batch in eval_stream.batches(0):
            n = len(batch["input_ids"])
            total, count = total + engine.evaluate(pretraining_inputs(batch)) * n, count + n
        total, count = engine.all_sum([total, count], step)
        return {"eval_loss": total / max(count, 1), "eval_instances": int(count)}

    return Job(config=model_config(s), task="pretraining", batches_per_epoch=per_epoch, make_epoch=make_epoch,
               best=Best(), evaluate=evaluate if eval_files else None,
               manifest={"records": {"files": len(files), "batches_per_epoch_per_rank": per_epoch}})


def main(argv=None) -> int:
    from mindtransformer.trainer.trainer import main as trainer_main

    return trainer_main(argv, prog="bert_trainer")


if __name__ == "__main__":
    from mindtransformer.utils.cli import run_main

    raise SystemExit(run_main(main))
