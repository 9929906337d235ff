"""LAMB for torch (torch has none built in), the same math as the MindSpore one
(backends/mindspore/optim.py): bias-corrected Adam moments, update u = m_hat / (sqrt(v_hat) + eps)
+ wd * w, step lr * (|w| / |u|) * u, trust ratio 1 where either norm is zero (You et al., 2019);
and the walk over the parameters and their Adam state that it and adamw.py's step share."""

import torch


def adam_steps(optimizer):
    """(parameter group, parameter, its Adam state) for every parameter with a gradient, the state
    made as torch's AdamW makes it (step count, first and second moments) and its step count
    advanced by one for the step being taken."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is None:
                continue
            state = optimizer.state[parameter]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            state["step"] += 1
            yield group, parameter, state


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group, p, state in adam_steps(self):
            beta1, beta2 = group["betas"]
            m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            update = (m / (1 - beta1 ** step)) / ((v / (1 - beta2 ** step)).sqrt() + group["eps"])
            update.add_(p, alpha=group["weight_decay"])
            w_norm, u_norm = p.norm(), update.norm()
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            p.add_(update * ratio, alpha=-group["lr"])
