"""Layers for the torch binding: HF names (`weight`, `bias`) and BERT's initialisation."""

import torch
from torch import nn as _nn

from . import layer_norm, ops, weight_grads

Module = _nn.Module
ModuleList = _nn.ModuleList


class Linear(_nn.Linear):
    def __init__(self, in_features: int, out_features: int, init_std: float = 0.02, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        _nn.init.normal_(self.weight, std=init_std)
        if bias:
            _nn.init.zeros_(self.bias)

    def forward(self, x):
        return weight_grads.linear(x, (self.weight,), self.bias)


class Embedding(_nn.Embedding):
    """`padding_idx` as in HF: its row starts at zero and gets no gradient."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.02, padding_idx=None):
        super().__init__(num_embeddings, dim, padding_idx=padding_idx)
        _nn.init.normal_(self.weight, std=init_std)
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def forward(self, ids):
        return weight_grads.embedding(ids, self.weight, self.padding_idx)


class LayerNorm(_nn.LayerNorm):
    def __init__(self, dim: int, eps: float):
        super().__init__(dim, eps=eps)

    def forward(self, x):
        """torch's LayerNorm over the last dimension; in bf16 steps on a CPU with its output's bf16
        copy made in the same pass (layer_norm.py)."""
        return layer_norm.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(_nn.Dropout):
    def __init__(self, p: float):
        super().__init__(p)

    def forward(self, x, residual=None):
        """dropout(x), or dropout(x) + residual: on a CPU one pass for both (ops.dropout)."""
        if self.training and self.p > 0 and x.device.type == "cpu":
            return ops.dropout(x, self.p, residual)
        dropped = super().forward(x)
        return dropped if residual is None else dropped + residual


def zeros_parameter(size: int):
    return _nn.Parameter(torch.zeros(size))


def ones_parameter(size: int):
    return _nn.Parameter(torch.ones(size))
