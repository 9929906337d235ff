"""HF model folders: strict loading into either backend, and saving that `transformers` loads.

A folder holds `config.json`, weights (`model.safetensors` or `pytorch_model.bin`) and the
tokenizer files. Weights travel as HF-named numpy arrays, so both backends share this code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import BertConfig, build_model, check_task
from mindtransformer.zoo_layout import is_zoo_layout, zoo_to_hf

logger = logging.getLogger("mindtransformer")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # then a single *.ckpt (MindSpore)
# Keys that HF ties to another parameter: (tied key, the parameter it equals).
TIED_KEYS = (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
             ("cls.predictions.decoder.bias", "cls.predictions.bias"))
# Task-head weights sit beside `bert.`; they and the pooler may be absent and are then initialised.
TASK_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")
PREFIX_TABLE = ".attention.self.prefix.key_value.weight"  # Prefix-Tuning's folded prefixes (P, 2H)
HEAD_PREFIXES = TASK_HEAD_PREFIXES + ("bert.pooler.", "pooler.")


@dataclass
class LoadReport:
    """What strict loading found: everything else in the model came from the checkpoint."""
    weights_file: str
    initialized: list = field(default_factory=list)  # head weights absent from the checkpoint
    unexpected: list = field(default_factory=list)  # checkpoint weights this task does not use

    def lines(self) -> list:
        out = []
        if self.initialized:
            out.append(f"newly initialised (not in {self.weights_file}): {', '.join(self.initialized)}")
        if self.unexpected:
            out.append(f"unused weights of {self.weights_file}: {', '.join(self.unexpected)}")
        return out


# ---- reading weights ----------------------------------------------------------------------

def find_weights(path: str) -> tuple:
    """(model folder, weights file) for a folder or a weights file inside one."""
    if os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path)), path
    if not os.path.isdir(path):
        raise UserInputError(f"{path}: no such file or folder; pass an HF model folder")
    for name in WEIGHT_FILES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return path, candidate
    checkpoints = sorted(n for n in os.listdir(path) if n.endswith(".ckpt"))
    if len(checkpoints) == 1:
        return path, os.path.join(path, checkpoints[0])
    if len(checkpoints) > 1:
        raise UserInputError(f"{path}: several .ckpt files ({', '.join(checkpoints)}); pass the one to load")
    raise UserInputError(f"{path}: no weights found (looked for {' or '.join(WEIGHT_FILES)} or a .ckpt); "
                         "pass an HF model folder that holds its weights")


def read_raw_weights(weights_file: str) -> dict:
    """HF name -> numpy array as stored, from model.safetensors, a torch state dict (read with
    weights_only, never unpickled) or a MindSpore .ckpt (ours, or the model zoo's layout)."""
    if weights_file.endswith(".ckpt"):
        arrays = get_backend("mindspore").read_checkpoint(weights_file)
        if is_zoo_layout(arrays):
            arrays, ignored = zoo_to_hf(arrays, weights_file)
            if ignored:
                logger.info(f"{weights_file}: skipped {len(ignored)} entries that are not model weights "
                            f"(optimizer state, counters: {', '.join(ignored[:3])}, ...)")
        return arrays
    if not weights_file.endswith(".safetensors"):
        return get_backend("torch").read_state_dict(weights_file)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(weights_file)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{weights_file}: not a readable safetensors file ({err}); "
                             "re-download or re-save the checkpoint") from None
    except TypeError:  # bf16 has no numpy dtype: read through torch
        from safetensors.torch import load_file as load_torch
        return {k: v.float().numpy() for k, v in load_torch(weights_file).items()}


def read_weights(weights_file: str) -> dict:
    """Like read_raw_weights, with floating-point arrays as float32 (what the models hold)."""
    return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in read_raw_weights(weights_file).items()}


# ---- matching names ------------------------------------------------------------------------

def _hf_names(arrays: dict, expected: dict, weights_file: str) -> dict:
    """Rename checkpoint keys to the model's: legacy gamma/beta, `bert.` prefix, tied keys."""
    renamed = {}
    for key, value in arrays.items():
        if key.endswith("embeddings.position_ids"):  # a buffer old HF versions saved, not a weight
            continue
        if key.endswith(".gamma"):
            key = key[:-len(".gamma")] + ".weight"
        elif key.endswith(".beta"):
            key = key[:-len(".beta")] + ".bias"
        renamed[key] = value
    model_prefixed = any(k.startswith("bert.") for k in expected)
    ckpt_prefixed = any(k.startswith("bert.") for k in renamed)
    if model_prefixed and not ckpt_prefixed:  # a BertModel checkpoint into a task model
        renamed = {k if k.startswith(TASK_HEAD_PREFIXES) else "bert." + k: v for k, v in renamed.items()}
    elif ckpt_prefixed and not model_prefixed:  # a task checkpoint into BertModel
        renamed = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in renamed.items()}
    for tied, source in TIED_KEYS:
        if tied not in renamed:
            continue
        value = renamed.pop(tied)
        if source not in renamed:
            renamed[source] = value
        elif renamed[source].shape != value.shape or not np.array_equal(renamed[source], value):
            raise UserInputError(f"{weights_file}: {tied} differs from {source}; BERT ties them and "
                                 "untied MLM decoders are not supported")
    return renamed


def _is_head(name: str) -> bool:
    return name.startswith(HEAD_PREFIXES)


def match_weights(arrays: dict, expected: dict, weights_file: str, config_file: str) -> tuple:
    """(arrays to load, LoadReport); shape mismatches and missing backbone weights are errors."""
    arrays = _hf_names(arrays, expected, weights_file)
    mismatched = [f"{k} is {tuple(arrays[k].shape)} in the weights but {expected[k]} by the config"
                  for k in expected if k in arrays and tuple(arrays[k].shape) != expected[k]]
    if mismatched:
        raise UserInputError(
            f"{weights_file}: {len(mismatched)} weights disagree with {config_file} ({mismatched[0]}); "
            "use the config.json that came with these weights")
    missing = [k for k in expected if k not in arrays]
    backbone_missing = [k for k in missing if not _is_head(k)]
    if backbone_missing:
        raise UserInputError(
            f"{weights_file}: {len(backbone_missing)} backbone weights are missing (first: {backbone_missing[0]}); "
            "the file is incomplete or not a BERT checkpoint")
    report = LoadReport(weights_file, initialized=missing, unexpected=sorted(k for k in arrays if k not in expected))
    return {k: v for k, v in arrays.items() if k in expected}, report


# ---- the public API ------------------------------------------------------------------------

def from_pretrained(path: str, task: str = "base", backend: str = "torch", config=None, **config_overrides):
    """A model for `task` on `backend` with the weights of an HF folder, loaded strictly.

    `path` is a folder or a weights file in one (model.safetensors, pytorch_model.bin, a .ckpt);
    the config is the folder's config.json unless `config` (a BertConfig or a config.json path)
    is given. Head weights absent from the checkpoint (a new classifier) are initialised and
    reported in `model.load_report`; any other missing or mis-shaped weight is an error.
    """
    check_task(task)
    folder, weights_file = find_weights(path)
    config_source = "the given config" if isinstance(config, BertConfig) else (config or os.path.join(folder, "config.json"))
    if not isinstance(config, BertConfig):
        config = BertConfig.from_pretrained(config_source)
    if config_overrides:
        config = config.replace(**config_overrides)
    model = build_model(config, task, backend)
    bound = get_backend(backend)
    weights = read_weights(weights_file)
    tables = [v.shape[0] for k, v in weights.items() if k.endswith(PREFIX_TABLE)]
    if tables:  # a Prefix-Tuning model (its folded prefixes): give the layers their tables
        from mindtransformer.models.bert.prefix import attach_prefix_tables

        attach_prefix_tables(model, tables[0])
    arrays, report = match_weights(weights, bound.parameter_shapes(model), weights_file, config_source)
    bound.load_arrays(model, arrays)
    bound.set_train(model, False)  # like HF: a loaded model starts in eval mode
    model.load_report = report
    model.pretrained_path = folder
    for line in report.lines():
        logger.info(line)
    return model


def save_pretrained(model, path: str, tokenizer=None) -> None:
    """Write an HF folder: model.safetensors, tokenizer files, then config.json last.

    Each file is written under a temporary name and renamed, and config.json comes last, so a
    crash never leaves a folder that looks complete. The tokenizer defaults to the one of the
    folder the model was loaded from.
    """
    from safetensors.numpy import save_file

    from mindtransformer.data.tokenization import load_tokenizer
    from mindtransformer.utils.files import atomic_path

    os.makedirs(path, exist_ok=True)
    arrays = get_backend(model.backend).named_arrays(model)
    with atomic_path(os.path.join(path, "model.safetensors")) as tmp:
        save_file(arrays, tmp, metadata={"format": "pt"})
    source = getattr(model, "pretrained_path", None)
    if tokenizer is None and source and os.path.isfile(os.path.join(source, "vocab.txt")):
        tokenizer = load_tokenizer(source)
    if tokenizer is not None:
        tokenizer.save(path)
    model.config.to_json_file(os.path.join(path, "config.json"), architectures=[type(model).__name__])
