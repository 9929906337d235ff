"""adamw.step: torch's fused AdamW update in C, with the bf16 weight copies and zeroed gradients of
a bf16 step in the same pass (backends/torch/adamw.py, csrc/adamw.c)."""

import pytest
import torch

from mindtransformer.backends.torch import adamw, make_optimizer
from mindtransformer.backends.torch.optim import Lamb

pytestmark = pytest.mark.skipif(adamw._adamw is None, reason="built without the C extension")

# a BERT-like mix: rows of 768, a bias, sizes that are no multiple of 16 (the one-at-a-time tail)
SHAPES = [(96, 768), (768,), (37,), (5, 7), (48, 35)]


def parameter_sets(seed: int = 0):
    torch.manual_seed(seed)
    ours = [torch.nn.Parameter(torch.randn(shape) * 0.02) for shape in SHAPES]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    return ours, theirs


def optimizer_for(parameters):
    # two groups as make_optimizer makes them: weight decay on the matrices, none on the vectors
    return torch.optim.AdamW([{"params": [p for p in parameters if p.dim() == 2], "weight_decay": 0.01},
                              {"params": [p for p in parameters if p.dim() == 1], "weight_decay": 0.0}],
                             lr=1e-3, eps=1e-6, fused=True)


def assert_torchs(ours, theirs):
    """torch's bits, but for the last size % 16 values (which torch's build rounds one way or the
    other by their count): there within an ulp."""
    ours, theirs = ours.detach().reshape(-1), theirs.detach().reshape(-1)
    head = ours.numel() - ours.numel() % 16
    assert torch.equal(ours[:head], theirs[:head])
    torch.testing.assert_close(ours[head:], theirs[head:], rtol=1.2e-7, atol=0)


@pytest.mark.parametrize("grad_scale", [1.0, 1.7])
def test_the_update_is_torchs_fused_adamw_bit_for_bit_with_copies_and_zeroed_gradients(grad_scale):
    ours, theirs = parameter_sets()
    mine, reference = optimizer_for(ours), optimizer_for(theirs)
    copies = {id(p): torch.empty(p.shape, dtype=torch.bfloat16) for p in ours[::2]}  # not every one has a copy
    assert adamw.can_step(mine)
    for step in range(3):
        for p, q in zip(ours, theirs):
            gradient = torch.randn(p.shape) * 0.01
            p.grad, q.grad = gradient.clone(), gradient.clone()
        reference.grad_scale = None if grad_scale == 1.0 else torch.tensor(grad_scale)
        reference.step()
        assert adamw.step(mine, grad_scale, copies) == {id(p) for p in ours}
        for p, q in zip(ours, theirs):
            assert_torchs(p, q)
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert_torchs(mine.state[p][key], reference.state[q][key])
            assert p.grad is not None and not p.grad.any()
        for p in ours[::2]:
            assert torch.equal(copies[id(p)], p.detach().to(torch.bfloat16))
    assert not torch.equal(ours[0], parameter_sets()[0][0])  # it moved


def test_a_parameter_without_a_gradient_is_left_alone_as_torch_leaves_it():
    ours, theirs = parameter_sets()
    mine, reference = optimizer_for(ours), optimizer_for(theirs)
    for p, q in list(zip(ours, theirs))[1:]:
        p.grad, q.grad = torch.ones(p.shape), torch.ones(q.shape)
    reference.step()
    assert adamw.step(mine, 1.0, {}) == {id(p) for p in ours[1:]}
    assert torch.equal(ours[0], theirs[0]) and not mine.state[ours[0]]
    for p, q in zip(ours, theirs):
        assert_torchs(p, q)


def test_the_update_counts_as_an_in_place_change_of_each_parameter():
    """WeightCasts and autograd see the change through the version counter (torch's fused AdamW
    does not count its own update)."""
    ours, _ = parameter_sets()
    mine = optimizer_for(ours)
    for p in ours:
        p.grad = torch.ones(p.shape)
    versions = [p._version for p in ours]
    adamw.step(mine, 1.0, {})
    assert all(p._version > v for p, v in zip(ours, versions))


def test_only_torchs_fused_adamw_on_contiguous_fp32_cpu_tensors_takes_the_c_update():
    model = torch.nn.Linear(4, 3)
    assert adamw.can_step(make_optimizer(model, "adamw", 1e-3))
    assert not adamw.can_step(make_optimizer(model, "lamb", 1e-3))
    assert not adamw.can_step(Lamb(model.parameters()))
    assert not adamw.can_step(torch.optim.AdamW(model.parameters()))  # not fused
    assert not adamw.can_step(torch.optim.AdamW(model.parameters(), fused=True, amsgrad=True))
    assert not adamw.can_step(torch.optim.AdamW(model.parameters(), fused=True, maximize=True))
    model.weight.grad = torch.ones(4, 3).t()  # a transposed gradient
    assert not adamw.can_step(torch.optim.AdamW(model.parameters(), fused=True))
    half = torch.nn.Linear(4, 3).to(torch.bfloat16)
    assert not adamw.can_step(torch.optim.AdamW(half.parameters(), fused=True))


def test_the_kernel_refuses_buffers_of_other_sizes_and_a_step_below_one():
    p, g, m, v = (torch.zeros(32) for _ in range(4))
    arguments = (1e-3, 0.9, 0.999, 1e-6, 0.0)
    with pytest.raises(ValueError, match="adamw_step: grad, exp_avg, exp_avg_sq"):
        adamw._adamw.adamw_step(p.numpy(), torch.zeros(31).numpy(), m.numpy(), v.numpy(), None, *arguments, 1.0, 1.0)
    with pytest.raises(ValueError, match="adamw_step: grad, exp_avg, exp_avg_sq"):
        adamw._adamw.adamw_step(p.numpy(), g.numpy(), m.numpy(), v.numpy(), torch.zeros(31, dtype=torch.int16).numpy(),
                                *arguments, 1.0, 1.0)
    with pytest.raises(ValueError, match="step must be >= 1"):
        adamw._adamw.adamw_step(p.numpy(), g.numpy(), m.numpy(), v.numpy(), None, *arguments, 0.0, 1.0)
