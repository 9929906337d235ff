"""What every training run does around the one loop, whatever it trains (pretraining,
classification, ...): the model (random, --init_from an HF folder or .ckpt, or a checkpoint to
resume), the backend's engine, the schedule, logs and pictures, checkpoints, the data-parallel
replica check and the HF export. A `Job` says what differs: the model's head and config, the
batches, the evaluation and the metric that picks the best checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from typing import Callable, Iterator, Optional

import numpy as np

from mindtransformer.errors import CollectiveError, UserInputError, first_line
from mindtransformer.models.bert import BertConfig, build_model
from mindtransformer.trainer import checkpoints as ckpt
from mindtransformer.trainer.loop import Best, MicroBatches, Plan, run
from mindtransformer.trainer.reporting import RunLog, write_run_manifest
from mindtransformer.trainer.schedule import learning_rate
from mindtransformer.trainer.settings import effective_precision, run_dir


@dataclasses.dataclass
class Job:
    config: BertConfig
    task: str                                          # the model's head: "pretraining", "sequence_classification"
    batches_per_epoch: int                             # this rank's micro-batches per epoch
    make_epoch: Callable[[int, int], Iterator[dict]]   # (epoch, batches to skip) -> model inputs
    best: Best
    evaluate: Optional[Callable] = None                # (engine, step) -> {metric: value}
    manifest: dict = dataclasses.field(default_factory=dict)  # what the run read, for run_manifest.json
    tokenizer: object = None                           # saved with the HF export


def model_config(settings) -> BertConfig:
    """The model's config: --init_from's config.json, else the size flags; --dropout overrides."""
    s = settings
    if s.init_from:
        folder = s.init_from if os.path.isdir(s.init_from) else os.path.dirname(s.init_from) or "."
        config = BertConfig.from_pretrained(os.path.join(folder, "config.json"))
    elif s.distill_from:  # a student shaped after its teacher
        from mindtransformer.models.bert.distill import student_config
        from mindtransformer.pretrained import find_weights

        teacher = BertConfig.from_pretrained(os.path.join(find_weights(s.distill_from)[0], "config.json"))
        config = student_config(teacher, s.student_layers, s.student_hidden_size)
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


def micro_batch_size(settings, world) -> int:
    return settings.global_batch_size // (world.size * settings.grad_accumulation_steps)


def total_steps(settings, job: Job) -> int:
    steps_per_epoch = job.batches_per_epoch // settings.grad_accumulation_steps
    if job.batches_per_epoch < 1 or (steps_per_epoch < 1 and not settings.train_steps):
        raise UserInputError(f"fewer training examples than one global batch ({settings.global_batch_size}); "
                             "lower --global_batch_size" + (" or set --train_steps" if job.batches_per_epoch else ""))
    return settings.train_steps or settings.epoch_size * steps_per_epoch


def train(settings, world, job: Job) -> int:
    """Train `job` from scratch or from --load_checkpoint_path, then export; returns 0."""
    s, config = settings, job.config
    out = run_dir(s)
    run_shape = {"backend": s.backend, "world_size": world.size, "global_batch_size": s.global_batch_size,
                 "grad_accumulation_steps": s.grad_accumulation_steps, "seq_length": s.seq_length}
    resume_dir = ckpt.resolve(s.load_checkpoint_path, s.ckpt_id) if s.load_checkpoint_path else None
    state = ckpt.read_state(resume_dir, config.to_dict(), run_shape) if resume_dir else None
    steps = total_steps(s, job)
    warmup = s.warmup_steps or int(round(s.warmup_ratio * steps))

    backend = importlib.import_module(f"mindtransformer.backends.{s.backend}")
    backend.manual_seed(s.seed)  # the same initial weights on every rank
    if s.init_from:
        from mindtransformer.pretrained import from_pretrained

        model = from_pretrained(s.init_from, task=job.task, backend=s.backend, config=config)
        for line in model.load_report.lines():
            if world.is_main:
                print(line, file=sys.stderr)
    else:
        model = build_model(config, job.task, s.backend)
    if s.distill_from:
        model = with_teacher(s, model, job.task, world)
    if s.peft == "lora":
        from mindtransformer.models.bert.lora import LoraSettings, apply_lora

        apply_lora(model, LoraSettings(r=s.lora_rank, alpha=s.lora_alpha, dropout=s.lora_dropout,
                                       target_modules=tuple(t.strip() for t in s.lora_target_modules.split(",") if t.strip())))
    elif s.peft == "prefix":
        from mindtransformer.models.bert.prefix import PrefixSettings, apply_prefix

        apply_prefix(model, PrefixSettings(length=s.prefix_length, mlp_hidden=s.prefix_mlp_hidden))
    rank_budget = None
    if s.peft == "svd_lora":
        model, rank_budget = with_rank_budget(s, model, steps)
    if world.is_main:
        print(parameter_table(model, s.peft), flush=True)
    backend.manual_seed(s.seed + 1 + world.rank)  # dropout differs by rank
    engine = make_engine(s, model, world)
    best = job.best
    position, start_step = {"epoch": 0, "batches": 0}, 0
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
    batches = MicroBatches(job.make_epoch, job.batches_per_epoch, position["epoch"], position["batches"])

    log = RunLog(out, steps, start_step, s.log_steps, enabled=world.is_main)
    if world.is_main:
        write_run_manifest(out, s, world, {**job.manifest, "resumed_from": resume_dir, "model": config.to_dict(),
                                           "precision": effective_precision(s), "warmup_steps": warmup})
    checkpoints = ckpt.Checkpoints(out, s.checkpoint_prefix, s.keep_checkpoint_max, engine)

    def schedule(step: int) -> float:
        return learning_rate(step, s.learning_rate, warmup, steps, s.lr_decay, s.end_learning_rate, s.lr_power)

    def state_of(step: int) -> dict:
        return {"step": step, "data": batches.position, "best": {"step": best.step, "value": best.value},
                "learning_rate": schedule(step), "config": config.to_dict(), "run": run_shape,
                "settings": dataclasses.asdict(s)}

    plan = Plan(start_step=start_step, total_steps=steps, accumulation=s.grad_accumulation_steps,
                samples_per_step=s.global_batch_size, save_steps=s.save_checkpoint_steps, eval_steps=s.eval_steps,
                learning_rate=schedule)
    evaluate = (lambda step: job.evaluate(engine, step)) if job.evaluate else None
    try:
        run(engine, batches, plan, log, checkpoints, state_of, best, evaluate, rank_budget)
        if world.size > 1:
            log.note({"step": steps, "replica_fingerprints": replica_fingerprints(engine, world, steps)})
    finally:
        log.close()
    if world.is_main:
        export(engine, trained_model(model), os.path.join(out, "final"), s, job.tokenizer)
        kept = f"; best {best.metric} {best.value:.4f} at step {best.step}" if best.value is not None else ""
        print(f"done: {steps} steps{kept}; checkpoints, metrics.jsonl, loss_curve.png and the HF export "
              f"(final/) are in {out}", file=sys.stderr)
    engine.close()
    return 0


def make_engine(settings, model, world):
    """The backend's engine; with --deepspeed the DeepSpeed engine, or (DeepSpeed absent or failing
    to start) the plain one with the same settings and one warning."""
    s = settings
    options = dict(optimizer=s.optimizer, learning_rate=s.learning_rate, weight_decay=s.weight_decay,
                   adam_epsilon=s.adam_epsilon, precision=effective_precision(s), device_target=s.device_target, num_threads=s.num_threads)
    if s.deepspeed:
        from mindtransformer.trainer import deepspeed_config

        config = deepspeed_config.filled_config(deepspeed_config.read_config(s.deepspeed), s, world.size)
        try:
            from mindtransformer.backends.torch.deepspeed_engine import DeepSpeedEngine

            return DeepSpeedEngine(model, world, config, **options)
        except ImportError as err:
            why = f"DeepSpeed is not installed ({first_line(err)}; pip install deepspeed)"
        except Exception as err:  # noqa: BLE001  DeepSpeed raises many kinds when it cannot start
            why = f"DeepSpeed failed to start ({type(err).__name__}: {first_line(err)})"
        if world.is_main:
            print(f"WARNING: {why}; training with the plain trainer and the same settings from {s.deepspeed} "
                  "(no ZeRO partitioning)", file=sys.stderr, flush=True)
    only_mindspore = {"jit": s.mindspore_mode == "graph", "seed": s.seed} if s.backend == "mindspore" else {}
    return importlib.import_module(f"mindtransformer.backends.{s.backend}.train").Engine(
        model, world, clip_grad_norm=s.clip_grad_norm, allreduce=s.allreduce, **options, **only_mindspore)


def replica_fingerprints(engine, world, step: int) -> list:
    """Every rank's fingerprint of its parameters (sum of |w| in float64), gathered on every
    rank; data parallelism is only correct while they are all equal, so a difference stops the
    run with an error naming the ranks."""
    mine = float(sum(np.abs(a.astype(np.float64)).sum() for a in engine.named_arrays().values()))
    slots = [0.0] * world.size
    slots[world.rank] = mine
    found = engine.all_sum(slots, step)
    if any(value != found[0] for value in found):
        raise CollectiveError(f"rank {world.rank}: the ranks' parameters differ after step {step} "
                              f"(fingerprints {found}); the replicas diverged")
    return found


def trained_model(model):
    """The model being trained inside a training wrapper (a distillation's student, a regularised model)."""
    return getattr(model, "student", None) or getattr(model, "model", None) or model


def with_rank_budget(settings, model, steps: int):
    """SVD-LoRA: the model with its adapters and orthogonality penalty, and the after-step
    function that prunes singular values to the budget (models/bert/svd_lora.py)."""
    from mindtransformer.backends.torch.rank_budget import Sensitivity
    from mindtransformer.models.bert import modeling_for
    from mindtransformer.models.bert.svd_lora import SvdLoraSettings, apply_svd_lora, budget, prune, ranks, svd_layers

    s = settings
    options = SvdLoraSettings(init_rank=s.svd_init_rank, target_rank=s.svd_target_rank, alpha=s.lora_alpha,
                              dropout=s.lora_dropout, orthogonality_weight=s.orthogonality_weight,
                              target_modules=tuple(t.strip() for t in s.lora_target_modules.split(",") if t.strip()))
    apply_svd_lora(model, options)
    layers = svd_layers(model)
    sensitivity = Sensitivity(layers)
    total, target = len(layers) * options.init_rank, len(layers) * options.target_rank
    warmup, final = int(0.1 * steps), int(0.7 * steps)

    def after_step(done: int) -> dict:
        prune(model, sensitivity.numpy(), budget(done, total, target, warmup, final))
        return {"svd_lora_rank": sum(ranks(model).values())}

    wrapped = modeling_for(model.backend).OrthogonalityRegularized(model, list(layers.values()),
                                                                   options.orthogonality_weight)
    wrapped.config, wrapped.task, wrapped.backend = model.config, model.task, model.backend
    return wrapped, after_step


def with_teacher(settings, student, task: str, world):
    """The student wrapped with the --distill_from teacher (models/bert/distill.py)."""
    from mindtransformer.models.bert.distill import distillation, init_from_teacher
    from mindtransformer.tasks.checkpoint import load_fine_tuned

    s = settings
    teacher = load_fine_tuned(s.distill_from, task, s.backend, what="teacher's task head",
                              fix="--distill_from takes a teacher fine-tuned on this task (its final/ folder)")
    if teacher.config.num_labels != student.config.num_labels:
        raise UserInputError(f"--distill_from={s.distill_from}: the teacher has {teacher.config.num_labels} labels, "
                             f"the task {student.config.num_labels}; distil a teacher of this task")
    if not s.init_from:
        copied = init_from_teacher(student, teacher)
        if world.is_main:
            print(f"student: {student.config.num_hidden_layers} layers, hidden {student.config.hidden_size}; "
                  f"{len(copied)} of its weights from the teacher ({teacher.config.num_hidden_layers} layers)", flush=True)
    return distillation(student, teacher, s.temperature, s.distill_alpha, s.distill_hidden_weight)


def parameter_table(model, peft: str = "") -> str:
    """One line: the trained model's total and trainable parameters (a student: without its teacher)."""
    from mindtransformer.models.bert.lora import parameter_counts

    counts = parameter_counts(trained_model(model))
    teacher = f"; the teacher's {parameter_counts(model.teacher)['total']:,} frozen" if hasattr(model, "teacher") else ""
    if getattr(model, "project", None) is not None:  # hidden-state matching across hidden sizes
        from mindtransformer.backends import get_backend

        size = sum(int(np.prod(shape)) for shape in get_backend(model.backend).parameter_shapes(model.project).values())
        teacher += f"; a {size:,}-parameter projection to the teacher's hidden size (trained, not exported)"
    return (f"parameters: {counts['total']:,} total, {counts['trainable']:,} trainable "
            f"({counts['percent']:.2f} %){' with ' + peft if peft else ''}{teacher}")


def export(engine, model, folder: str, settings, tokenizer=None) -> None:
    """The trained model as an HF folder (and a MindSpore .ckpt for the MindSpore backend). With
    --peft=lora the adapter is saved apart (`final/adapter/`) and merged into the folder's weights;
    with --peft=prefix the folded prefixes are saved apart (`final/prefix/`) and kept in the
    folder's weights (our loaders attach them; transformers alone would ignore them)."""
    from mindtransformer.pretrained import save_pretrained

    if getattr(model, "lora", None) is not None:
        from mindtransformer.adapters import save_adapter
        from mindtransformer.models.bert.lora import merge_lora

        save_adapter(model, os.path.join(folder, "adapter"), settings.init_from)
        merge_lora(model)
    if getattr(model, "svd_lora", None) is not None:  # the ranks it ended with, then merged
        from mindtransformer.models.bert.svd_lora import merge_svd_lora, ranks
        from mindtransformer.utils.files import atomic_write_text

        os.makedirs(folder, exist_ok=True)
        atomic_write_text(os.path.join(folder, "svd_lora_ranks.json"), json.dumps(ranks(model), indent=1) + "\n")
        merge_svd_lora(model)
    if getattr(model, "prefix_settings", None) is not None:  # folded; final/ keeps the tables
        from mindtransformer.adapters import save_prefix

        save_prefix(model, os.path.join(folder, "prefix"), settings.init_from)

    with engine.full_parameters():  # ZeRO-3: gather the partitions
        save_pretrained(model, folder, tokenizer)
    if settings.backend == "mindspore":
        from mindtransformer.backends.mindspore import write_checkpoint

        from mindtransformer.backends import get_backend

        write_checkpoint(get_backend("mindspore").named_arrays(model),
                         os.path.join(folder, f"{settings.checkpoint_prefix}.ckpt"))
