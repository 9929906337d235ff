"""AdamW and LAMB for MindSpore, the same math as torch's (backends/torch/optim.py and
torch.optim.AdamW): bias-corrected Adam moments m_hat, v_hat and decoupled weight decay. AdamW
runs MindSpore's fused AdamWeightDecay kernel (see AdamW), LAMB plain ops.

- `mindspore.nn.Lamb` calls a fused kernel that CPU lacks.
- `mindspore.experimental.optim.AdamW` keeps large temporaries in its compiled update: a BERT-base
  step peaked at 7.9 GB against 3.7 GB for these (measured, one rank, PYNATIVE).

Both hold their rate in a Parameter (`learning_rate`), assigned in place each step by the engine.
"""

import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops


class _Adam(nn.Cell):
    def __init__(self, params, weight_decays, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6):
        super().__init__(auto_prefix=False)
        self.parameters = ParameterTuple(params)
        self.moments1 = self.parameters.clone(prefix=f"{self.moment_prefix}_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix=f"{self.moment_prefix}_v", init="zeros")
        self.weight_decays = tuple(float(w) for w in weight_decays)
        self.learning_rate = Parameter(Tensor(np.float32(learning_rate)), name="learning_rate", requires_grad=False)
        self.global_step = Parameter(Tensor(np.float32(0.0)), name="global_step", requires_grad=False)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _next_step(self):
        """Counts this step; returns (step, c1, c2), c = 1 - beta^step: the bias corrections."""
        step = self.global_step + 1.0
        ops.assign(self.global_step, step)
        return step, 1.0 - ops.pow(self.beta1, step), 1.0 - ops.pow(self.beta2, step)


class AdamW(_Adam):
    """torch.optim.AdamW: w <- w - lr * wd * w - lr * m_hat / (sqrt(v_hat) + eps), with
    m_hat = m / c1, v_hat = v / c2 (c = 1 - beta^step).

    Each parameter's update is one call of MindSpore's fused `AdamWeightDecay` kernel
    (w <- w - lr' * (m / (sqrt(v) + eps') + wd' * w), no bias correction), with the correction
    folded into its scalars: lr' = lr * sqrt(c2) / c1, eps' = eps * sqrt(c2), wd' = wd * c1 / sqrt(c2)
    give the same w algebraically. Why: the op-by-op update took ~0.65 s of a 2 s MiniLM step when
    run eagerly (about 12 launches and fresh buffers per parameter), and compiled it kept ~1.1 GB
    of temporaries for MiniLM (~12 copies of the parameters) and took 8 s to compile."""
    moment_prefix = "adam"

    def __init__(self, params, weight_decays, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6):
        super().__init__(params, weight_decays, learning_rate, beta1, beta2, eps)
        self.fused = ops.AdamWeightDecay()
        self.beta1_tensor, self.beta2_tensor = Tensor(np.float32(beta1)), Tensor(np.float32(beta2))

    def construct(self, gradients):
        step, correction1, correction2 = self._next_step()
        root2 = ops.sqrt(correction2)
        learning_rate, eps = self.learning_rate * root2 / correction1, self.eps * root2
        for param, m, v, grad, decay in zip(self.parameters, self.moments1, self.moments2, gradients,
                                            self.weight_decays):
            self.fused(param, m, v, learning_rate, self.beta1_tensor, self.beta2_tensor, eps,
                       decay * correction1 / root2, grad)
        return step


class Lamb(_Adam):
    """You et al. (2019), as `mindspore.nn.Lamb`'s composite path: u = adam + wd * w, step
    lr * (|w| / |u|) * u, with the trust ratio 1 where either norm is zero."""
    moment_prefix = "lamb"

    def construct(self, gradients):  # op by op: no fused LAMB kernel on CPU
        step, correction1, correction2 = self._next_step()
        for param, m, v, grad, decay in zip(self.parameters, self.moments1, self.moments2, gradients,
                                            self.weight_decays):
            m_new = self.beta1 * m + (1.0 - self.beta1) * grad
            v_new = self.beta2 * v + (1.0 - self.beta2) * grad * grad
            ops.assign(m, m_new)
            ops.assign(v, v_new)
            update = (m_new / correction1) / (ops.sqrt(v_new / correction2) + self.eps) + decay * param
            w_norm, u_norm = ops.norm(param), ops.norm(update)
            ratio = ops.select((w_norm > 0) & (u_norm > 0), w_norm / u_norm, ops.ones_like(w_norm))
            ops.assign(param, param - self.learning_rate * ratio * update)
        return step
