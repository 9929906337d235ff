"""Layers for the MindSpore binding: HF names (`weight`, `bias`) and BERT's initialisation.

`Module` is an `nn.Cell` whose `construct` calls `forward`, so the shared definition's
`forward` methods serve both PYNATIVE and GRAPH mode. MindSpore's own naming (`gamma`/`beta`,
`embedding_table`) never appears: every Parameter is created here under its HF name.
"""

import numpy as np
from mindspore import Parameter, Tensor, nn as _nn, ops as _ops


class Module(_nn.Cell):
    def construct(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode: bool = True):
        self.set_train(mode)
        return self

    def eval(self):
        return self.train(False)


ModuleList = _nn.CellList


def _as_dtype(parameter, dtype):
    return parameter if parameter.dtype == dtype else parameter.astype(dtype)


def _normal(shape, std):
    # numpy's generator seeded from MindSpore's global seed keeps ms.set_seed reproducible.
    return Parameter(Tensor(np.random.normal(0.0, std, size=shape).astype(np.float32)))


class Linear(Module):
    """y = x W^T + b with W (out, in), as torch.nn.Linear."""

    def __init__(self, in_features: int, out_features: int, init_std: float = 0.02, bias: bool = True):
        super().__init__()
        self.weight = _normal((out_features, in_features), init_std)
        self.bias = Parameter(Tensor(np.zeros(out_features, np.float32))) if bias else None

    def forward(self, x):
        # Under mixed precision (Cell.to_float / amp) x arrives in fp16/bf16 while the master
        # weights stay fp32: compute in x's dtype. The comparisons fold away in GRAPH mode.
        bias = None if self.bias is None else _as_dtype(self.bias, x.dtype)
        return _ops.dense(x, _as_dtype(self.weight, x.dtype), bias)


class Embedding(Module):
    """Table lookup; with `padding_idx` that row starts at zero and gets no gradient (as HF)."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.02, padding_idx=None):
        super().__init__()
        table = np.random.normal(0.0, init_std, size=(num_embeddings, dim)).astype(np.float32)
        if padding_idx is not None:
            table[padding_idx] = 0.0
        self.weight = Parameter(Tensor(table))
        self.padding_idx = padding_idx

    def forward(self, ids):
        out = _ops.gather(self.weight, ids, 0)  # (B, T, D)
        if self.padding_idx is not None:
            # Same values, but rows looked up at padding ids pass no gradient to the table;
            # masking the (B, T, D) output is cheaper than masking the (V, D) table.
            at_pad = _ops.expand_dims(ids == self.padding_idx, -1)  # (B, T, 1)
            out = _ops.select(at_pad, _ops.stop_gradient(out), out)
        return out


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)))
        self.bias = Parameter(Tensor(np.zeros(dim, np.float32)))
        # ops.layer_norm has no CPU kernel; the LayerNorm primitive does.
        self.norm = _ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def forward(self, x):
        return self.norm(x, _as_dtype(self.weight, x.dtype), _as_dtype(self.bias, x.dtype))[0]


class Dropout(Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x, residual=None):
        """dropout(x), or dropout(x) + residual (the torch binding's one pass on a CPU)."""
        if self.training and self.p > 0:
            x = _ops.dropout(x, p=self.p, training=True)
        return x if residual is None else x + residual


def zeros_parameter(size: int):
    return Parameter(Tensor(np.zeros(size, np.float32)))


def ones_parameter(size: int):
    return Parameter(Tensor(np.ones(size, np.float32)))
