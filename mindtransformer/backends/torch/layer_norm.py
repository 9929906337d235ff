"""LayerNorm for the torch binding: torch's, except in a bf16-autocast training step on a CPU.

There a transformer's LayerNorm output (fp32, autocast keeps LayerNorm in fp32) feeds both the
residual sum and the next linear layer, which casts it to bf16; the backward pass then casts the
linear's bf16 gradient to fp32 and adds it to the residual's. `_LayerNormWithCopy` (csrc/layer_norm.c)
writes the output and its bf16 copy in one pass and takes both gradients in its backward pass, so
that the cast, the cast back and the sum are no passes of their own. The copy travels as the
output's `bf16_copy` attribute; `weight_grads.linear` uses it in place of casting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # csrc/layer_norm.c, built where setup.py found a C compiler
    from mindtransformer.backends.torch import _layer_norm
except ImportError:
    _layer_norm = None

COPY_ATTRIBUTE = "bf16_copy"


def layer_norm(x, weight, bias, eps: float):
    """F.layer_norm of x (..., H) over its last dimension with weight and bias (H,) or None."""
    if _fused_applies(x, weight, bias):
        y, copy = _LayerNormWithCopy.apply(x, weight, bias, eps)
        setattr(y, COPY_ATTRIBUTE, copy)
        return y
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def autocast_input(x):
    """x's bf16 copy made by `layer_norm` when autocast would cast x to that dtype, else x."""
    copy = getattr(x, COPY_ATTRIBUTE, None)
    if copy is not None and torch.is_autocast_enabled(x.device.type) and (
            torch.get_autocast_dtype(x.device.type) == copy.dtype):
        return copy
    return x


def _fused_applies(x, weight, bias) -> bool:
    return (_layer_norm is not None and torch.is_grad_enabled() and x.requires_grad and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and x.dtype == torch.float32 and x.is_contiguous() and x.numel() > 0
            and weight is not None and bias is not None
            and weight.dtype == torch.float32 and bias.dtype == torch.float32
            and weight.is_contiguous() and bias.is_contiguous())


class _LayerNormWithCopy(torch.autograd.Function):
    """(y, y in bf16) for y = LayerNorm(x); backward takes the gradients of both (either may be None)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        # x (..., H) fp32 contiguous; weight, bias (H,) fp32
        rows = x.numel() // x.shape[-1]
        y, copy = torch.empty_like(x), torch.empty(x.shape, dtype=torch.bfloat16)
        mean, rstd = torch.empty(rows), torch.empty(rows)  # per row, for the backward pass
        _layer_norm.layer_norm_forward(x.detach().numpy(), weight.detach().numpy(), bias.detach().numpy(), eps,
                                       y.numpy(), _bits(copy), mean.numpy(), rstd.numpy())
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None, not a tensor of zeros
        return y, copy

    @staticmethod
    def backward(ctx, grad_y, grad_copy):
        x, weight, mean, rstd = ctx.saved_tensors
        if grad_y is None and grad_copy is None:
            return None, None, None, None
        grad_x = torch.empty_like(x)
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(weight)
        _layer_norm.layer_norm_backward(
            x.detach().numpy(), weight.detach().numpy(), mean.numpy(), rstd.numpy(),
            None if grad_y is None else grad_y.float().contiguous().numpy(),
            None if grad_copy is None else _bits(grad_copy.bfloat16().contiguous()),
            grad_x.numpy(), grad_weight.numpy(), grad_bias.numpy())
        return grad_x, grad_weight, grad_bias, None


def _bits(t):
    """A contiguous bf16 CPU tensor's bits as a numpy array (its memory, for the C functions)."""
    return t.view(torch.int16).numpy()
