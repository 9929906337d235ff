"""Prefix-Tuning on the one BERT definition: P learned key and value positions in front of every
layer's attention, the base frozen.

- `apply_prefix(model, PrefixSettings(...))`: each layer's self-attention gets a
  `PrefixReparameterized` (an embedding (P, H) through an MLP H -> R -> 2H, the training form),
  and only the prefixes and the task head train.
- `fold_prefix(model)`: each MLP computed once into a `PrefixTable` (P, 2H), the inference form:
  L x P x 2H numbers in all (BERT-base, P = 10: 184,320).
- `attach_prefix_tables(model, length)`: empty tables to load folded prefixes into
  (pretrained.from_pretrained does this when a checkpoint holds them).

Shape legend: L layers, P prefix length, H hidden, R the MLP's hidden size.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert.lora import HEAD_PREFIXES

PREFIX_KEY = ".attention.self.prefix."  # in every prefix parameter's name


@dataclasses.dataclass(frozen=True)
class PrefixSettings:
    length: int = 10
    mlp_hidden: int = 512

    def __post_init__(self):
        if self.length < 1 or self.mlp_hidden < 1:
            raise UserInputError(f"Prefix-Tuning: length {self.length} and MLP size {self.mlp_hidden} must be >= 1")


def _self_attentions(model) -> list:
    """(dotted name, module) of each layer's self-attention."""
    return [(name, m) for name, m in get_backend(model.backend).named_modules(model) if name.endswith(".attention.self")]


def apply_prefix(model, settings: PrefixSettings):
    """Give every layer a reparameterised prefix and train only prefixes and the head; returns the model."""
    from mindtransformer.models.bert import modeling_for

    modeling = modeling_for(model.backend)
    hidden, std = model.config.hidden_size, model.config.initializer_range
    bound = get_backend(model.backend)
    for name, _ in _self_attentions(model):
        bound.replace_module(model, f"{name}.prefix",
                             modeling.PrefixReparameterized(settings.length, hidden, settings.mlp_hidden, std))
    model.prefix_settings = settings
    bound.set_trainable(model, {n for n in bound.parameter_shapes(model) if PREFIX_KEY in n or n.startswith(HEAD_PREFIXES)})
    return model


def attach_prefix_tables(model, length: int):
    from mindtransformer.models.bert import modeling_for

    table = modeling_for(model.backend).PrefixTable
    bound = get_backend(model.backend)
    for name, _ in _self_attentions(model):
        bound.replace_module(model, f"{name}.prefix", table(length, model.config.hidden_size))
    return model


def fold_prefix(model):
    """Replace each layer's MLP by the (P, 2H) table it computes; outputs are unchanged. Returns the model."""
    from mindtransformer.models.bert import modeling_for

    bound = get_backend(model.backend)
    table_class = modeling_for(model.backend).PrefixTable
    was_training = model.training
    bound.set_train(model, False)
    for name, attention in _self_attentions(model):
        if attention.prefix is None or isinstance(attention.prefix, table_class):
            continue
        values = bound.to_numpy(attention.prefix())  # (P, 2H)
        table = table_class(values.shape[0], values.shape[1] // 2)
        bound.load_arrays(table, {"key_value.weight": values.astype(np.float32)})
        bound.replace_module(model, f"{name}.prefix", table)
    bound.set_train(model, was_training)
    return model


def prefix_length(model) -> int:
    """P of the model's prefixes, 0 when it has none."""
    bound = get_backend(model.backend)
    for _, attention in _self_attentions(model):
        if attention.prefix is not None:
            return next(iter(bound.parameter_shapes(attention.prefix).values()))[0]  # (P, H) or (P, 2H)
    return 0
