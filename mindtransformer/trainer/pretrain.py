"""BERT pretraining (MLM + NSP) on record files, standalone or data-parallel, either backend.

    python -m mindtransformer.models.bert.bert_trainer --train_data_path=DIR [--key=value ...]

Everything cheap is checked before anything heavy starts: the flags (settings.check), the
records' sizes against --seq_length/--max_predictions_per_seq, a checkpoint to resume against
the model and run shape. Then: model (random, --init_from an HF folder or .ckpt, or the
checkpoint), the engine of the backend, the one loop (trainer/loop.py), and at the end an HF
folder `<save_checkpoint_path>/final/` (plus `<prefix>.ckpt` for MindSpore).

Shape legend: B micro-batch, T seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys

import numpy as np

from mindtransformer.data import loaders
from mindtransformer.errors import UserInputError, first_line
from mindtransformer.models.bert import BertConfig, build_model
from mindtransformer.trainer import checkpoints as ckpt
from mindtransformer.trainer.distributed import prepare_mindspore, world_from_env
from mindtransformer.trainer.loop import Best, MicroBatches, Plan, run
from mindtransformer.trainer.reporting import RunLog, write_run_manifest
from mindtransformer.trainer.schedule import learning_rate
from mindtransformer.trainer.settings import check, parse_settings


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


def model_config(settings) -> BertConfig:
    """The model's config: --init_from's config.json, else the size flags; --dropout overrides."""
    s = settings
    if s.init_from:
        folder = s.init_from if os.path.isdir(s.init_from) else os.path.dirname(s.init_from) or "."
        config = BertConfig.from_pretrained(os.path.join(folder, "config.json"))
    else:
        config = BertConfig(vocab_size=s.vocab_size, hidden_size=s.embedding_size, num_hidden_layers=s.num_layers,
                            num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size or 4 * s.embedding_size,
                            max_position_embeddings=s.max_position_embeddings)
    if s.dropout is not None:
        config = config.replace(hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.dropout)
    if s.seq_length > config.max_position_embeddings:
        raise UserInputError(f"--seq_length={s.seq_length} exceeds the model's max_position_embeddings "
                             f"{config.max_position_embeddings}; lower --seq_length")
    return config


def engine_module(backend: str):
    return importlib.import_module(f"mindtransformer.backends.{backend}.train")


def main(argv=None) -> int:
    settings = parse_settings(argv, prog="bert_trainer", description=__doc__.split("\n\n")[0])
    world = world_from_env(settings)
    check(settings, world.size)
    s = settings
    files = loaders.record_files(s.train_data_path)
    loaders.check_sizes(files, s.seq_length, s.max_predictions_per_seq)
    eval_files = loaders.record_files(s.eval_data_path) if s.eval_data_path else []
    if eval_files:
        loaders.check_sizes(eval_files, s.seq_length, s.max_predictions_per_seq)
    config = model_config(s)
    micro_batch = s.global_batch_size // (world.size * s.grad_accumulation_steps)
    run_shape = {"backend": s.backend, "world_size": world.size, "global_batch_size": s.global_batch_size,
                 "grad_accumulation_steps": s.grad_accumulation_steps, "seq_length": s.seq_length}
    resume_dir = ckpt.resolve(s.load_checkpoint_path) if s.load_checkpoint_path else None
    state = ckpt.read_state(resume_dir, config.to_dict(), run_shape) if resume_dir else None

    stream = loaders.PretrainingStream(files, micro_batch, shuffle=s.do_shuffle, seed=s.seed, rank=world.rank,
                                       world_size=world.size, buffer_size=s.shuffle_buffer)
    per_epoch = stream.batches_per_epoch(loaders.count_records(files))
    steps_per_epoch = per_epoch // s.grad_accumulation_steps
    if per_epoch < 1 or (steps_per_epoch < 1 and not s.train_steps):
        raise UserInputError(f"--train_data_path={s.train_data_path}: fewer records than one global batch "
                             f"({s.global_batch_size}); lower --global_batch_size"
                             + (" or set --train_steps" if per_epoch >= 1 else ""))
    total_steps = s.train_steps or s.epoch_size * steps_per_epoch

    if s.backend == "mindspore":
        prepare_mindspore(world)  # before mindspore is imported
    backend = importlib.import_module(f"mindtransformer.backends.{s.backend}")
    backend.manual_seed(s.seed)  # the same initial weights on every rank
    if s.init_from:
        from mindtransformer.pretrained import from_pretrained

        model = from_pretrained(s.init_from, task="pretraining", backend=s.backend, config=config)
    else:
        model = build_model(config, "pretraining", s.backend)
    backend.manual_seed(s.seed + 1 + world.rank)  # dropout differs by rank
    only_mindspore = {"jit": s.mindspore_mode == "graph", "seed": s.seed} if s.backend == "mindspore" else {}
    engine = engine_module(s.backend).Engine(
        model, world, optimizer=s.optimizer, learning_rate=s.learning_rate, weight_decay=s.weight_decay,
        clip_grad_norm=s.clip_grad_norm, precision=s.precision, device_target=s.device_target,
        num_threads=s.num_threads, **only_mindspore)
    best = Best()
    position = {"epoch": 0, "batches": 0}
    start_step = 0
    if state:
        try:
            engine.load(resume_dir, state["engine"])
        except UserInputError:
            raise
        except Exception as err:  # noqa: BLE001  safetensors/torch/MindSpore raise many kinds on damage
            raise UserInputError(f"{resume_dir}: a damaged checkpoint ({first_line(err)}); resume from an earlier "
                                 "one (pass its directory to --load_checkpoint_path)") from None
        start_step, position = state["step"], state["data"]
        best.step, best.value = state["best"]["step"], state["best"]["value"]
    batches = MicroBatches(stream.batches, per_epoch, position["epoch"], position["batches"], pretraining_inputs)

    log = RunLog(s.save_checkpoint_path, total_steps, start_step, s.log_steps, enabled=world.is_main)
    if world.is_main:
        write_run_manifest(s.save_checkpoint_path, s, world, {
            "records": {"files": len(files), "batches_per_epoch_per_rank": per_epoch},
            "resumed_from": resume_dir, "model": config.to_dict()})
    checkpoints = ckpt.Checkpoints(s.save_checkpoint_path, s.checkpoint_prefix, s.keep_checkpoint_max, engine)

    def state_of(step: int) -> dict:
        return {"step": step, "data": batches.position, "best": {"step": best.step, "value": best.value},
                "learning_rate": schedule(step), "config": config.to_dict(), "run": run_shape,
                "settings": dataclasses.asdict(s)}

    def schedule(step: int) -> float:
        return learning_rate(step, s.learning_rate, s.warmup_steps, total_steps, s.lr_decay, s.end_learning_rate, s.lr_power)

    def evaluate(step: int) -> dict:
        eval_stream = loaders.PretrainingStream(eval_files, micro_batch, shuffle=False, rank=world.rank,
                                                world_size=world.size, drop_remainder=False)
        total, count = 0.0, 0
        for batch in eval_stream.batches(0):
            n = len(batch["input_ids"])
            total, count = total + engine.evaluate(pretraining_inputs(batch)) * n, count + n
        total, count = engine.all_sum([total, count], step)
        return {"eval_loss": total / max(count, 1), "eval_instances": int(count)}

    plan = Plan(start_step=start_step, total_steps=total_steps, accumulation=s.grad_accumulation_steps,
                samples_per_step=s.global_batch_size, save_steps=s.save_checkpoint_steps, eval_steps=s.eval_steps,
                learning_rate=schedule)
    try:
        run(engine, batches, plan, log, checkpoints, state_of, best, evaluate if eval_files else None)
        if world.size > 1:
            log.note({"step": total_steps, "replica_fingerprints": replica_fingerprints(engine, world, total_steps)})
    finally:
        log.close()
    if world.is_main:
        export(engine, model, os.path.join(s.save_checkpoint_path, "final"), s)
        print(f"done: {total_steps} steps; checkpoints, metrics.jsonl, loss_curve.png and the HF export "
              f"(final/) are in {s.save_checkpoint_path}", file=sys.stderr)
    engine.close()
    return 0


def replica_fingerprints(engine, world, step: int) -> list:
    """Every rank's fingerprint of its parameters (sum of |w| in float64), gathered on every
    rank; data parallelism is only correct while they are all equal, so a difference stops the
    run with an error naming the ranks."""
    mine = float(sum(np.abs(a.astype(np.float64)).sum() for a in engine.named_arrays().values()))
    slots = [0.0] * world.size
    slots[world.rank] = mine
    found = engine.all_sum(slots, step)
    if any(value != found[0] for value in found):
        from mindtransformer.errors import CollectiveError

        raise CollectiveError(f"rank {world.rank}: the ranks' parameters differ after step {step} "
                              f"(fingerprints {found}); the replicas diverged")
    return found


def export(engine, model, folder: str, settings) -> None:
    """The trained model as an HF folder (and a MindSpore .ckpt for the MindSpore backend)."""
    from mindtransformer.pretrained import save_pretrained

    save_pretrained(model, folder)
    if settings.backend == "mindspore":
        from mindtransformer.backends.mindspore import write_checkpoint

        write_checkpoint(engine.named_arrays(), os.path.join(folder, f"{settings.checkpoint_prefix}.ckpt"))


if __name__ == "__main__":
    from mindtransformer.utils.cli import run_main

    raise SystemExit(run_main(main))
