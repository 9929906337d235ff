"""LoRA on the one BERT definition: wrap Linear layers, freeze the rest, merge the adapter back
into plain weights (saving and loading adapters: mindtransformer/adapters.py).

- `apply_lora(model, LoraSettings(...))` replaces every Linear whose dotted name is a target or
  ends with "." + a target (peft's matching: `query`, `value`, `attention.output.dense`,
  `intermediate.dense`, ...) by `LoraLinear` (models/bert/modeling.py), then trains only the LoRA
  matrices and the task head (`classifier`, `qa_outputs`, `cls`: peft's modules_to_save).
- `merge_lora(model)`: W <- W + (alpha / r) B A in each wrapped layer and the wrappers removed:
  a plain BERT with HF names that `save_pretrained` writes and `transformers` loads.

Shape legend: I in features, O out features, r rank.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError

HEAD_PREFIXES = ("classifier.", "qa_outputs.", "cls.")  # trained with the adapter, saved with it (peft's modules_to_save)


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: Tuple[str, ...] = ("query", "value")

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.target_modules:
            raise UserInputError(f"LoRA: rank {self.r} must be >= 1, alpha {self.alpha} > 0, dropout {self.dropout} in "
                                 "[0, 1) and at least one target module given")


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def layers_of(model, class_name: str) -> dict:
    """{dotted name: module} of the wrappers called `class_name` (LoraLinear, SvdLoraLinear)."""
    return {name: m for name, m in get_backend(model.backend).named_modules(model) if type(m).__name__ == class_name}


def wrap_linears(model, targets, make) -> list:
    """Replace each Linear whose name matches `targets` (see the module docstring) by
    make(base, in_features, out_features); returns the names replaced."""
    from mindtransformer.models.bert import modeling_for

    bound = get_backend(model.backend)
    linear = modeling_for(model.backend).nn.Linear
    modules = dict(bound.named_modules(model))
    names = [name for name, m in modules.items() if name and isinstance(m, linear) and _matches(name, targets)]
    if not names:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if isinstance(m, linear)})
        raise UserInputError(f"--lora_target_modules={','.join(targets)} matches no Linear layer; "
                             f"BERT's are named {', '.join(linears)} (or dotted, e.g. attention.output.dense)")
    for name in names:
        out_features, in_features = bound.parameter_shapes(modules[name])["weight"]
        bound.replace_module(model, name, make(modules[name], in_features, out_features))
    return names


def adapt(model, targets, make, trainable) -> None:
    """wrap_linears, then train only the parameters whose names pass `trainable` (and the head)."""
    wrap_linears(model, targets, make)
    bound = get_backend(model.backend)
    bound.set_trainable(model, {n for n in bound.parameter_shapes(model) if trainable(n) or n.startswith(HEAD_PREFIXES)})


def unwrap(model, layers: dict, merged_weight) -> None:
    """Put each wrapper's base layer back with merged_weight(arrays of the wrapper, wrapper) as its
    weight (O, I); everything is trainable again."""
    bound = get_backend(model.backend)
    for name, layer in layers.items():
        weight = merged_weight(bound.named_arrays(layer), layer)
        bound.load_arrays(layer.base_layer, {"weight": weight.astype(np.float32)})
        bound.replace_module(model, name, layer.base_layer)
    bound.set_trainable(model, set(bound.parameter_shapes(model)))


def apply_lora(model, settings: LoraSettings):
    """Wrap the target Linears of `model` in place (see the module docstring); returns the model."""
    from mindtransformer.models.bert import modeling_for

    layer = modeling_for(model.backend).LoraLinear
    adapt(model, settings.target_modules, lambda base, i, o: layer(base, i, o, settings.r, settings.alpha, settings.dropout),
          lambda name: ".lora_A." in name or ".lora_B." in name)
    model.lora = settings
    return model


def merge_lora(model):
    """Fold every adapter into its base weight, W (O, I) += scaling * B (O, r) @ A (r, I), and
    unwrap; the model then has plain HF names and everything trainable again. Returns the model."""
    unwrap(model, layers_of(model, "LoraLinear"), lambda a, layer: a["base_layer.weight"] + layer.scaling * (
        a["lora_B.weight"].astype(np.float64) @ a["lora_A.weight"].astype(np.float64)))
    if hasattr(model, "lora"):
        del model.lora
    return model


def parameter_counts(model) -> dict:
    """{"total", "trainable", "percent"}: parameter counts (tied weights once)."""
    bound = get_backend(model.backend)
    sizes = {n: int(np.prod(s)) for n, s in bound.parameter_shapes(model).items()}
    trainable = sum(sizes[n] for n in bound.trainable_names(model))
    total = sum(sizes.values())
    return {"total": total, "trainable": trainable, "percent": 100.0 * trainable / total}
