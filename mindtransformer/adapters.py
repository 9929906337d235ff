"""LoRA adapters as files, in peft's layout: `adapter_model.safetensors` (keys
`base_model.model.<HF name>.lora_A.weight`, `...lora_B.weight` and the task head) and
`adapter_config.json`, so that peft's `PeftModel.from_pretrained` loads ours onto transformers'
BERT and `load_adapter` reads peft's (plain LoRA: no DoRA, rsLoRA or fan_in_fan_out).
"""

from __future__ import annotations

import json
import os

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert.lora import HEAD_PREFIXES, LoraSettings, apply_lora

PEFT_PREFIX = "base_model.model."
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_TASK_TYPES = {"sequence_classification": "SEQ_CLS", "question_answering": "QUESTION_ANS",
                   "token_classification": "TOKEN_CLS", "base": "FEATURE_EXTRACTION"}


def adapter_arrays(model) -> dict:
    """peft's keys -> arrays: the LoRA matrices and the task head."""
    arrays = get_backend(model.backend).named_arrays(model)
    return {PEFT_PREFIX + k: v for k, v in arrays.items()
            if ".lora_A." in k or ".lora_B." in k or k.startswith(HEAD_PREFIXES)}


def save_adapter(model, folder: str, base_model_name_or_path: str = "") -> None:
    """adapter_model.safetensors + adapter_config.json (peft's layout), written atomically."""
    from safetensors.numpy import save_file

    from mindtransformer.utils.files import atomic_path, atomic_write_text

    settings = getattr(model, "lora", None)
    if settings is None:
        raise UserInputError("this model has no LoRA adapter to save; apply_lora first (--peft=lora)")
    os.makedirs(folder, exist_ok=True)
    arrays = adapter_arrays(model)
    with atomic_path(os.path.join(folder, ADAPTER_WEIGHTS)) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt"})
    heads = sorted({k[len(PEFT_PREFIX):].split(".")[0] for k in arrays if k[len(PEFT_PREFIX):].startswith(HEAD_PREFIXES)})
    config = {"peft_type": "LORA", "task_type": PEFT_TASK_TYPES.get(model.task), "r": settings.r,
              "lora_alpha": settings.alpha, "lora_dropout": settings.dropout,
              "target_modules": list(settings.target_modules), "modules_to_save": heads or None, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
              "base_model_name_or_path": base_model_name_or_path or getattr(model, "pretrained_path", "") or ""}
    atomic_write_text(os.path.join(folder, ADAPTER_CONFIG), json.dumps(config, indent=2) + "\n")


def read_adapter_settings(folder: str) -> LoraSettings:
    from mindtransformer.utils.files import read_json

    path = os.path.join(folder, ADAPTER_CONFIG)
    config = read_json(path, "a LoRA adapter folder (ours or peft's) holding adapter_config.json")
    if config.get("peft_type") != "LORA":
        raise UserInputError(f"{path}: peft_type {config.get('peft_type')!r}; only LORA adapters load here")
    if config.get("use_dora") or config.get("use_rslora") or config.get("fan_in_fan_out"):
        raise UserInputError(f"{path}: DoRA, rsLoRA and fan_in_fan_out adapters are not supported; use plain LoRA")
    targets = config.get("target_modules") or []
    return LoraSettings(r=int(config["r"]), alpha=float(config["lora_alpha"]), dropout=float(config.get("lora_dropout", 0)),
                        target_modules=tuple([targets] if isinstance(targets, str) else targets))


def load_adapter(model, folder: str):
    """apply_lora with the adapter's settings, then its weights (every LoRA matrix must be there)."""
    from safetensors.numpy import load_file

    apply_lora(model, read_adapter_settings(folder))
    bound = get_backend(model.backend)
    shapes = bound.parameter_shapes(model)
    arrays = {}
    for key, value in load_file(os.path.join(folder, ADAPTER_WEIGHTS)).items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        name = name.replace(".modules_to_save.default.", ".").replace(".default.", ".")
        if name not in shapes:
            raise UserInputError(f"{folder}: adapter weight {key} has no place in this {type(model).__name__}; "
                                 "load it onto the model it was trained with")
        if tuple(value.shape) != shapes[name]:
            raise UserInputError(f"{folder}: {key} is {tuple(value.shape)} but the model's is {shapes[name]}")
        arrays[name] = value.astype(np.float32)
    missing = [n for n in shapes if (".lora_A." in n or ".lora_B." in n) and n not in arrays]
    if missing:
        raise UserInputError(f"{folder}: {len(missing)} LoRA weights missing (first: {missing[0]}); the adapter is incomplete")
    bound.load_arrays(model, arrays)
    return model


# ---- Prefix-Tuning: the folded prefixes and the head ---------------------------------------------

PREFIX_WEIGHTS, PREFIX_CONFIG = "prefix_model.safetensors", "prefix_config.json"


def save_prefix(model, folder: str, base_model_name_or_path: str = "") -> None:
    """The folded prefixes (L tables (P, 2H)) and the task head apart from the base: prefix_model.safetensors
    and prefix_config.json. (peft keeps prefixes as past_key_values of its own models; this layout is ours.)"""
    from safetensors.numpy import save_file

    from mindtransformer.models.bert.prefix import PREFIX_KEY, fold_prefix, prefix_length
    from mindtransformer.utils.files import atomic_path, atomic_write_text

    if not prefix_length(model):
        raise UserInputError("this model has no prefixes to save; apply_prefix first (--peft=prefix)")
    fold_prefix(model)
    arrays = {k: v for k, v in get_backend(model.backend).named_arrays(model).items()
              if PREFIX_KEY in k or k.startswith(HEAD_PREFIXES)}
    os.makedirs(folder, exist_ok=True)
    with atomic_path(os.path.join(folder, PREFIX_WEIGHTS)) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt"})
    config = {"peft_type": "PREFIX_TUNING", "layout": "mindtransformer folded prefixes", "task": model.task,
              "num_virtual_tokens": prefix_length(model), "num_layers": model.config.num_hidden_layers,
              "base_model_name_or_path": base_model_name_or_path or getattr(model, "pretrained_path", "") or ""}
    atomic_write_text(os.path.join(folder, PREFIX_CONFIG), json.dumps(config, indent=2) + "\n")


def load_prefix(model, folder: str):
    """Prefixes (and head) saved by save_prefix onto a base model; returns the model."""
    from safetensors.numpy import load_file

    from mindtransformer.models.bert.prefix import attach_prefix_tables

    from mindtransformer.utils.files import read_json

    what = "a folder written by --peft=prefix (final/prefix)"
    config = read_json(os.path.join(folder, PREFIX_CONFIG), what)
    if not os.path.isfile(os.path.join(folder, PREFIX_WEIGHTS)):
        raise UserInputError(f"{folder}: no {PREFIX_WEIGHTS}; pass {what}")
    arrays = load_file(os.path.join(folder, PREFIX_WEIGHTS))
    attach_prefix_tables(model, int(config["num_virtual_tokens"]))
    bound = get_backend(model.backend)
    shapes = bound.parameter_shapes(model)
    wrong = [k for k, v in arrays.items() if shapes.get(k) != tuple(v.shape)]
    if wrong:
        raise UserInputError(f"{folder}: {wrong[0]} does not fit this {type(model).__name__}; load the prefix onto "
                             "the model it was trained with")
    bound.load_arrays(model, arrays)
    return model
