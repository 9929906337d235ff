"""SVD-LoRA's importance scores on torch: a smoothed sensitivity |E x dL/dE| per singular value,
collected by gradient hooks during backward (AdaLoRA's sensitivity with its exponential moving
average; its uncertainty term is left out), read by the trainer to prune (models/bert/svd_lora.py).
"""

from __future__ import annotations

import torch


class Sensitivity:
    def __init__(self, layers: dict, beta: float = 0.85):
        self.beta = beta
        self.scores = {name: torch.zeros_like(m.lora_E, requires_grad=False) for name, m in layers.items()}
        for name, m in layers.items():
            m.lora_E.register_hook(self._tracker(name, m.lora_E))

    def _tracker(self, name: str, values):
        def hook(grad):
            with torch.no_grad():
                self.scores[name].mul_(self.beta).add_((values.detach() * grad).abs(), alpha=1 - self.beta)
            return grad
        return hook

    def numpy(self) -> dict:
        return {name: s.detach().cpu().numpy() for name, s in self.scores.items()}
