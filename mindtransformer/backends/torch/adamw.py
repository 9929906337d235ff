"""torch's fused AdamW step for a bf16 step on a CPU, with the passes around it folded in.

After the update a bf16 step on a CPU makes two more passes over every weight: its gradient is
zeroed (MKL adds the next step's into it: bf16_gemm.py) and, at the next forward pass, the weight
is cast to bf16 (weight_grads.WeightCasts). For BERT-base that was 48 + 55 ms next to the
optimizer's 117, of a 3.3 s step at 32 samples. `step` makes all three in one C pass per
parameter (csrc/adamw.c): 139 ms for the 108.8M weights against 216 (measured), with the
parameters and moments bit for bit those of torch's fused AdamW (tested).
"""

from __future__ import annotations

import torch

from mindtransformer.backends.torch.optim import adam_steps

try:
    from mindtransformer.backends.torch import _adamw
except ImportError:  # built without a C compiler: torch's AdamW and passes run
    _adamw = None


def can_step(optimizer) -> bool:
    """Whether `step` applies: torch's fused AdamW (what make_optimizer builds) without amsgrad or
    maximize, on contiguous fp32 CPU parameters, gradients and moments."""
    if _adamw is None or not isinstance(optimizer, torch.optim.AdamW) or not optimizer.defaults.get("fused"):
        return False
    for group in optimizer.param_groups:
        if group["amsgrad"] or group["maximize"] or isinstance(group["lr"], torch.Tensor):
            return False
        for p in group["params"]:
            tensors = [p, p.grad] + [optimizer.state[p].get(k) for k in ("exp_avg", "exp_avg_sq")]
            if not all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous())
                       for t in tensors):
                return False
    return True


@torch.no_grad()
def step(optimizer, grad_scale: float, copies: dict) -> set:
    """optimizer.step() (check can_step first), each gradient read as grad / grad_scale, then every
    gradient zeroed and copies[id(p)] (a contiguous bf16 tensor of p's shape, where given) set to
    the updated p. Returns the ids of the parameters updated (those with a gradient)."""
    updated = set()
    for group, p, state in adam_steps(optimizer):
        beta1, beta2 = group["betas"]
        copy = copies.get(id(p))
        _adamw.adamw_step(p.detach().numpy(), p.grad.numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(),
                          None if copy is None else copy.view(torch.int16).numpy(), group["lr"], beta1, beta2,
                          group["eps"], group["weight_decay"], float(state["step"]), grad_scale)
        torch.autograd.graph.increment_version(p)  # changed in place, as autograd and WeightCasts see it
        updated.add(id(p))
    return updated
