"""MKL's bf16 x bf16 -> fp32 product for weight gradients (backends/torch/bf16_gemm.py): it adds
grads^T @ inputs into an fp32 tensor as fp32 arithmetic on the bf16 values would, for column
blocks of a stacked gradient too; the torch engine's single-micro-batch bf16 step gets autograd's
gradients from it, within bf16 rounding, and keeps .grad between steps (zeroed, not remade)."""

import numpy as np
import pytest
import torch

from mindtransformer.backends.torch import bf16_gemm
from tests.trainer.test_engines import batch, engine_for

pytestmark = pytest.mark.skipif(not bf16_gemm.available(), reason="torch built without MKL")


def bf16_pair(tokens=300, outputs=48, features=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(tokens, outputs, generator=g).bfloat16(), torch.randn(tokens, features, generator=g).bfloat16())


@pytest.mark.parametrize("tokens", [300, 2 * 1024 + 77])  # one MKL call, and three (1,024 tokens each at most)
def test_it_adds_the_fp32_product_of_the_bf16_values_into_out(tokens):
    grads, inputs = bf16_pair(tokens)
    start = torch.randn(48, 40)
    out = start.clone()
    bf16_gemm.add_transposed_product(out, grads, inputs)
    exact = start.double() + grads.double().t() @ inputs.double()
    # fp32 accumulation over 300-2,125 products: far inside bf16's 2^-8, near fp32's 2^-24
    assert float((out.double() - exact).abs().max() / exact.abs().max()) < 1e-6


def test_column_blocks_of_a_stacked_gradient_go_into_their_own_weights():
    """The stacked query/key/value gradient (N, 3 x O) is split into column views (row stride 3 x O)."""
    grads, inputs = bf16_pair(outputs=3 * 16)
    parts = grads.split([16, 16, 16], dim=1)
    assert all(bf16_gemm.can_add_transposed_product(None, part, inputs) for part in parts)
    for part in parts:
        out = torch.zeros(16, 40)
        bf16_gemm.add_transposed_product(out, part, inputs)
        torch.testing.assert_close(out, part.float().t() @ inputs.float(), rtol=1e-5, atol=1e-5)


def test_it_refuses_what_it_cannot_take():
    grads, inputs = bf16_pair()
    assert bf16_gemm.can_add_transposed_product(torch.zeros(48, 40), grads, inputs)
    assert not bf16_gemm.can_add_transposed_product(torch.zeros(48, 40), grads.float(), inputs.float())  # fp32
    assert not bf16_gemm.can_add_transposed_product(torch.zeros(40, 48).t(), grads, inputs)  # out not contiguous
    assert not bf16_gemm.can_add_transposed_product(torch.zeros(48, 41), grads, inputs)  # wrong shape
    assert not bf16_gemm.can_add_transposed_product(None, grads.t().contiguous().t(), inputs)  # columns, not rows


def test_the_engines_bf16_step_gets_autograds_gradients_through_it(monkeypatch):
    calls = []
    real = bf16_gemm.add_transposed_product
    monkeypatch.setattr(bf16_gemm, "add_transposed_product", lambda *a: calls.append(a[0].shape) or real(*a))
    from mindtransformer.backends.torch import train

    # torch's optimizer.step (replaced below to see the gradients), not the C update (test_torch_adamw.py)
    monkeypatch.setattr(train.adamw, "can_step", lambda optimizer: False)
    engine = engine_for("torch", learning_rate=1e-3, precision="bf16", clip_grad_norm=0.0)  # .grad unclipped
    reference = engine_for("torch", learning_rate=1e-3, precision="bf16")  # the same seed, the same weights
    seen = {}
    engine.optimizer.step = lambda: seen.update({id(p): p.grad.clone() for p in engine.parameters})
    engine.step(1e-3, engine.forward_backward(batch(), 1.0), 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = reference.model(*reference._inputs(batch()))["loss"]
    loss.float().backward()
    linear_weights = [m.weight for m in engine.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(calls) >= len(linear_weights)  # every linear weight (+ the tied decoder)
    for ours, theirs in zip(engine.parameters, reference.parameters):
        torch.testing.assert_close(seen[id(ours)], theirs.grad, rtol=2e-2, atol=1e-3)
    # kept for the next step's products to add into, zeroed
    assert all(w.grad is not None and not w.grad.any() for w in linear_weights)
    assert np.isfinite(engine.forward_backward(batch(), 1.0))
