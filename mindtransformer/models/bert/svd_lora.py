"""SVD-LoRA (AdaLoRA-style) on the one BERT definition: each update is P diag(E) Q, P and Q pushed
towards orthonormal, and a rank budget that prunes the least important singular values during
training.

- `apply_svd_lora(model, SvdLoraSettings(...))` wraps the target Linears (LoRA's matching) in
  `SvdLoraLinear` with `init_rank` singular values each; P, Q, E and the task head train.
- `budget(step, ...)`: AdaLoRA's cubic schedule of the total number of singular values kept: all
  of them until `warmup` steps, then down to `target_rank` x modules at `final` steps, then fixed.
- `prune(model, scores, keep)`: keep the `keep` singular values with the highest importance
  scores over all modules, zero and mask the others (they stay masked).
- `ranks(model)`: {module: singular values kept}; `merge_svd_lora(model)`: W += scaling P diag(E) Q.

The importance scores (a smoothed |E x dL/dE|) come from the backend (backends/torch/rank_budget.py).

Shape legend: I in features, O out features, r the initial rank.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert.lora import adapt, layers_of, unwrap


@dataclasses.dataclass(frozen=True)
class SvdLoraSettings:
    init_rank: int = 12
    target_rank: int = 4
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: Tuple[str, ...] = ("query", "value")
    orthogonality_weight: float = 0.1

    def __post_init__(self):
        if not 1 <= self.target_rank <= self.init_rank:
            raise UserInputError(f"SVD-LoRA: the target rank {self.target_rank} must be between 1 and the initial "
                                 f"rank {self.init_rank}")


def svd_layers(model) -> dict:
    """{dotted name: SvdLoraLinear}."""
    return layers_of(model, "SvdLoraLinear")


def apply_svd_lora(model, settings: SvdLoraSettings):
    from mindtransformer.models.bert import modeling_for

    layer = modeling_for(model.backend).SvdLoraLinear
    adapt(model, settings.target_modules,
          lambda base, i, o: layer(base, i, o, settings.init_rank, settings.alpha, settings.dropout),
          lambda name: name.endswith((".lora_A.weight", ".lora_B.weight", ".lora_E")))  # not rank_mask
    model.svd_lora = settings
    return model


def budget(step: int, total_values: int, target_values: int, warmup: int, final: int) -> int:
    """Singular values kept after `step` optimizer steps (AdaLoRA's cubic schedule)."""
    if step <= warmup:
        return total_values
    if step >= final:
        return target_values
    left = 1.0 - (step - warmup) / (final - warmup)
    return target_values + int((total_values - target_values) * left ** 3)


def ranks(model) -> dict:
    bound = get_backend(model.backend)
    return {name: int(bound.named_arrays(m)["rank_mask"].sum()) for name, m in svd_layers(model).items()}


def prune(model, scores: dict, keep: int) -> None:
    """Keep the `keep` highest-scoring singular values over all layers; pruned ones stay pruned
    and are zeroed again (the optimizer's momentum would move them; the mask hides them anyway)."""
    bound = get_backend(model.backend)
    layers = svd_layers(model)
    current = {name: bound.named_arrays(m) for name, m in layers.items()}
    candidates = [(float(scores[name][i]), name, i) for name in layers
                  for i in np.flatnonzero(current[name]["rank_mask"] > 0)]
    candidates.sort(key=lambda c: -c[0])
    for _, name, i in candidates[keep:]:
        current[name]["rank_mask"][i] = 0.0
    for name, m in layers.items():
        current[name]["lora_E"][current[name]["rank_mask"] == 0] = 0.0
        bound.load_arrays(m, {"rank_mask": current[name]["rank_mask"], "lora_E": current[name]["lora_E"]})


def merge_svd_lora(model):
    """W (O, I) += scaling x P (O, r) diag(E x mask) Q (r, I), the wrappers removed. Returns the model."""
    unwrap(model, svd_layers(model), lambda a, layer: a["base_layer.weight"] + layer.scaling * (
        (a["lora_B.weight"].astype(np.float64) * (a["lora_E"] * a["rank_mask"])) @ a["lora_A.weight"]))
    if hasattr(model, "svd_lora"):
        del model.svd_lora
    return model
