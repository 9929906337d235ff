"""--deepspeed ds_config.json: read it, carry its blocks into our settings, and fill its "auto" values.

One set of numbers drives both engines, so a run that falls back to the plain trainer (DeepSpeed
absent or failing to start) trains the same way:
- the batch keys (`train_batch_size`, `train_micro_batch_size_per_gpu`,
  `gradient_accumulation_steps`) set --global_batch_size and --grad_accumulation_steps;
- `gradient_clipping` sets --clip_grad_norm; `fp16.enabled` / `bf16.enabled` set --precision;
- the optimizer block (Adam, AdamW, Lamb: `lr`, `weight_decay`, `eps`) sets --optimizer,
  --learning_rate, --weight_decay, --adam_epsilon; the scheduler block (WarmupLR, WarmupDecayLR:
  `warmup_num_steps`, `warmup_max_lr`, `total_num_steps`) sets --warmup_steps and the decay.
Values written "auto" (HF's convention), and keys left out, are filled from the flags instead.
DeepSpeed then runs with the trainer's optimizer and learning-rate schedule built from those
settings (see filled_config), so that both engines compute the same steps.
"""

from __future__ import annotations

import dataclasses
import json

from mindtransformer.errors import UserInputError

OPTIMIZERS = {"adam": "adamw", "adamw": "adamw", "lamb": "lamb"}
SCHEDULERS = {"warmuplr": "constant", "warmupdecaylr": "linear"}


def read_config(path: str) -> dict:
    from mindtransformer.utils.files import read_json

    config = read_json(path, "a DeepSpeed JSON config (--deepspeed)")
    if not isinstance(config, dict):
        raise UserInputError(f"{path}: a DeepSpeed config is a JSON object of settings")
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserInputError(f"{path}: zero_optimization.stage={stage!r}; use 0, 1, 2 or 3")
    return config


def _given(block: dict, key: str):
    value = block.get(key) if isinstance(block, dict) else None
    return None if value in (None, "auto") else value


def apply_to_settings(settings, world_size: int):
    """(settings with the config's values, the config itself, [(setting, value) taken from it])."""
    s, path = settings, settings.deepspeed
    config = read_config(path)
    changes = {}
    micro = _given(config, "train_micro_batch_size_per_gpu")
    accumulation = _given(config, "gradient_accumulation_steps")
    total = _given(config, "train_batch_size")
    if accumulation is not None:
        changes["grad_accumulation_steps"] = int(accumulation)
    gas = changes.get("grad_accumulation_steps", s.grad_accumulation_steps)
    if micro is not None:
        changes["global_batch_size"] = int(micro) * gas * world_size
        if total is not None and int(total) != changes["global_batch_size"]:
            raise UserInputError(f"{path}: train_batch_size={total} but train_micro_batch_size_per_gpu={micro} x "
                                 f"gradient_accumulation_steps={gas} x {world_size} ranks = "
                                 f"{changes['global_batch_size']}; fix one of them (or write \"auto\")")
    elif total is not None:
        changes["global_batch_size"] = int(total)
    if _given(config, "gradient_clipping") is not None:
        changes["clip_grad_norm"] = float(config["gradient_clipping"])
    for precision in ("fp16", "bf16"):
        if _given(config.get(precision, {}), "enabled"):
            changes["precision"] = precision
    optimizer = config.get("optimizer")
    if optimizer:
        kind = str(optimizer.get("type", "")).lower()
        if kind not in OPTIMIZERS:
            raise UserInputError(f"{path}: optimizer type {optimizer.get('type')!r}; the plain trainer knows "
                                 f"{', '.join(sorted(OPTIMIZERS))} (a fallback must train the same way)")
        changes["optimizer"] = OPTIMIZERS[kind]
        params = optimizer.get("params", {})
        for ours, theirs in (("learning_rate", "lr"), ("weight_decay", "weight_decay"), ("adam_epsilon", "eps")):
            if _given(params, theirs) is not None:
                changes[ours] = float(params[theirs])
    scheduler = config.get("scheduler")
    if scheduler:
        kind = str(scheduler.get("type", "")).lower()
        if kind not in SCHEDULERS:
            raise UserInputError(f"{path}: scheduler type {scheduler.get('type')!r}; use WarmupLR or WarmupDecayLR "
                                 "(or leave the block out: the trainer's --lr_decay schedule is used)")
        changes["lr_decay"] = SCHEDULERS[kind]
        params = scheduler.get("params", {})
        if _given(params, "warmup_num_steps") is not None:
            changes["warmup_steps"] = int(params["warmup_num_steps"])
        if _given(params, "warmup_max_lr") is not None:
            changes["learning_rate"] = float(params["warmup_max_lr"])
        if _given(params, "total_num_steps") is not None:
            changes["train_steps"] = int(params["total_num_steps"])
    changed = [(k, v) for k, v in changes.items() if getattr(s, k) != v]
    return dataclasses.replace(s, **changes), config, changed


def filled_config(config: dict, settings, world_size: int) -> dict:
    """The config DeepSpeed gets: the batch and clipping values from the settings (after
    apply_to_settings they agree with the config's own), "auto" filled."""
    s = settings
    out = json.loads(json.dumps(config))  # a deep copy
    out["train_micro_batch_size_per_gpu"] = s.global_batch_size // (world_size * s.grad_accumulation_steps)
    out["gradient_accumulation_steps"] = s.grad_accumulation_steps
    out["train_batch_size"] = s.global_batch_size
    out["gradient_clipping"] = s.clip_grad_norm
    out.setdefault("steps_per_print", 10 ** 9)  # our log reports; keep DeepSpeed's own quiet
    # The optimizer and scheduler blocks live on as settings (apply_to_settings): DeepSpeed gets the
    # trainer's optimizer (no weight decay on biases and LayerNorm) and the trainer sets the
    # learning rate each step, so a DeepSpeed run and its fallback train the same way.
    out.pop("optimizer", None)
    out.pop("scheduler", None)
    return out
