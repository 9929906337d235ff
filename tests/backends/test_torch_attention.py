"""The torch binding's training attention (written out, with its own dropout mask) against the
same formula computed independently in float64, and its mask's statistics; inference attention
stays scaled_dot_product_attention (its parity with transformers is in tests/models)."""

import math

import numpy as np
import pytest
import torch

from mindtransformer.backends.torch import ops

B, N, T, D = 4, 3, 9, 8


def qkv_and_bias(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, T, D, generator=g) for _ in range(3))
    lengths = torch.tensor([9, 5, 1, 7])
    bias = (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T), True = attend
    return q, k, v, bias


def reference(q, k, v, bias, keep, scale):
    """softmax(q k^T / sqrt(D) over attended keys) with dropped weights zeroed and the rest scaled, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(~bias, -math.inf)
    weights = torch.softmax(scores, dim=-1) * keep * scale
    return weights @ v


def attention_mask(p):
    """The mask and scale ops.attention draws next: one per example, from one stream."""
    masks = ops.DropoutMasks(p)
    return masks.multiplier((B, N, T, T), torch.float64, rows=B).bool(), masks.scale


def test_training_attention_is_the_formula_with_its_reproducible_mask():
    q, k, v, bias = qkv_and_bias()
    torch.manual_seed(7)
    got = ops.attention(q, k, v, bias, 0.3)
    torch.manual_seed(7)  # the same torch RNG state -> the same mask
    keep, scale = attention_mask(0.3)
    assert 0 < int((~keep).sum()) < keep.numel()
    np.testing.assert_allclose(got.double(), reference(q, k, v, bias, keep, scale), atol=1e-5)
    torch.manual_seed(8)
    assert not torch.allclose(ops.attention(q, k, v, bias, 0.3), got)  # another state, another mask


def test_masked_keys_and_their_values_do_not_matter():
    q, k, v, bias = qkv_and_bias()
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 5:], v2[1, :, 5:] = 1e3, -1e3  # example 1 attends to its first 5 keys only
    torch.manual_seed(3)
    a = ops.attention(q, k, v, bias, 0.1)
    torch.manual_seed(3)
    b = ops.attention(q, k2, v2, bias, 0.1)
    torch.testing.assert_close(a, b)


def test_without_dropout_it_equals_the_written_out_formula():
    q, k, v, bias = qkv_and_bias()
    np.testing.assert_allclose(ops.attention(q, k, v, bias, 0.0).double(),
                               reference(q, k, v, bias, torch.ones(B, N, T, T, dtype=torch.bool), 1.0), atol=1e-5)


@pytest.mark.parametrize("p, dtype", [(0.1, torch.bfloat16), (0.5, torch.float16), (0.9, torch.float32)])
def test_the_mask_drops_p_and_the_scale_keeps_the_expectation(p, dtype):
    torch.manual_seed(0)
    masks = ops.DropoutMasks(p)
    mask = masks.multiplier((64, 12, 64, 64), dtype, rows=64)
    assert mask.dtype == dtype and set(mask.unique().tolist()) == {0.0, 1.0}
    keep, scale = mask.bool(), masks.scale
    rounded = round(p * 65536) / 65536
    n = keep.numel()
    dropped = 1 - float(keep.double().mean())
    assert abs(dropped - rounded) < 5 * math.sqrt(rounded * (1 - rounded) / n)  # 5 sigma over 3.1M draws
    assert scale == pytest.approx(1 / (1 - rounded), rel=1e-12)
    # p is rounded to the nearest multiple of 1/65536
    assert abs(rounded - p) <= 0.5 / 65536


@pytest.mark.parametrize("weights_kept", [True, False])
@pytest.mark.parametrize("examples_per_chunk", [4, 1, 3])
@pytest.mark.parametrize("empty_sequence", [False, True])
def test_training_attention_gradients_are_the_formulas(empty_sequence, examples_per_chunk, weights_kept, monkeypatch):
    """The written-out backward against float64 autograd of the formula with the same mask, with
    the batch in one chunk, one example per chunk and uneven chunks (3 + 1), the forward's weights
    kept or recomputed; an example whose keys are all masked (uniform weights) gets no gradient
    through its masked keys."""
    monkeypatch.setattr(ops, "_CHUNK_WEIGHTS", examples_per_chunk * N * T * T)
    monkeypatch.setattr(ops, "_KEPT_WEIGHTS", B * N * T * T if weights_kept else 0)
    q, k, v, bias = qkv_and_bias()
    if empty_sequence:
        bias = bias.clone()
        bias[2] = False
    upstream = torch.randn(B, N, T, D, generator=torch.Generator().manual_seed(1))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    torch.manual_seed(5)
    out = ops.attention(*leaves, bias, 0.2)
    (out * upstream).sum().backward()
    torch.manual_seed(5)
    keep, scale = attention_mask(0.2)
    exact = [t.double().requires_grad_() for t in (q, k, v)]
    scores = (exact[0] @ exact[1].transpose(-1, -2) / math.sqrt(D)).masked_fill(~bias, torch.finfo(torch.float64).min)
    want = torch.softmax(scores, dim=-1) * keep * scale @ exact[2]
    (want * upstream.double()).sum().backward()
    np.testing.assert_allclose(out.detach().double(), want.detach(), atol=1e-5)
    for name, got, want in zip("qkv", leaves, exact):
        np.testing.assert_allclose(got.grad.double(), want.grad, atol=1e-5, err_msg=name)
    if empty_sequence:
        assert float(leaves[1].grad[2].abs().max()) == 0.0  # keys of the empty example get nothing


def test_training_attention_under_bf16_autocast_matches_float32():
    """Under CPU autocast the Function computes in bfloat16 and hands back gradients in the
    inputs' dtype; values and gradients stay within bfloat16's precision of float32's."""
    q, k, v, bias = qkv_and_bias()
    results = []
    for autocast in (False, True):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = ops.attention(*leaves, bias, 0.1)
        out.float().sum().backward()
        assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
        assert all(t.grad.dtype == torch.float32 for t in leaves)
        results.append([out.float()] + [t.grad for t in leaves])
    for exact, low in zip(*results):
        torch.testing.assert_close(low, exact, atol=0.1, rtol=0.05)


def test_training_dropout_drops_with_its_reproducible_mask_and_passes_gradients_through_it():
    from mindtransformer.backends.torch import nn

    x = torch.randn(8, 16, 32, requires_grad=True)
    layer = nn.Dropout(0.25).train()
    torch.manual_seed(2)
    y = layer(x)
    torch.manual_seed(2)
    masks = ops.DropoutMasks(0.25)
    keep, scale = masks.multiplier(x.shape, x.dtype).bool(), masks.scale
    torch.testing.assert_close(y, torch.where(keep, x * scale, 0))
    upstream = torch.randn_like(x)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, torch.where(keep, upstream * scale, 0))
    assert torch.equal(layer.eval()(x), x)  # evaluation: the identity


@pytest.mark.parametrize("weights_kept", [True, False])
@pytest.mark.parametrize("length", [9, 40])  # rows shorter than 16 values, and 2 x 16 + a masked tail of 8
def test_c_softmax_and_dropout_passes_are_torchs_in_bf16(length, weights_kept, monkeypatch):
    """bf16 attention with csrc/attention.c's passes against torch's (masked_fill, softmax, mask
    products, _softmax_backward_data), same mask: the weights round alike but where the two exp
    functions straddle a bf16 rounding boundary, so the outputs and gradients agree to bf16's
    precision, nearly all bit for bit; an empty example is uniform and gives its keys nothing."""
    pytest.importorskip("mindtransformer.backends.torch._attention", reason="built without a C compiler")
    if ops._attention is None:
        pytest.skip("this CPU lacks AVX-512")
    monkeypatch.setattr(ops, "_KEPT_WEIGHTS", 1 << 30 if weights_kept else 0)
    monkeypatch.setattr(ops, "_CHUNK_WEIGHTS", 2 * N * length * length)  # chunks of 2 examples
    g = torch.Generator().manual_seed(length)
    q, k, v, upstream = (torch.randn(B, N, length, D, generator=g).bfloat16() * 2 for _ in range(4))
    bias = (torch.arange(length)[None, :] < torch.tensor([length, length - 3, 0, 5])[:, None])[:, None, None, :]

    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        torch.manual_seed(3)
        out = ops.attention(*leaves, bias, 0.2)
        out.backward(upstream)
        return [out.detach()] + [t.grad for t in leaves]

    from_c = run()
    monkeypatch.setattr(ops, "_attention", None)
    from_torch = run()
    for name, ours, theirs in zip(["output", "q", "k", "v"], from_c, from_torch):
        assert ours.dtype == torch.bfloat16
        assert (ours == theirs).float().mean() > 0.97, name
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=0.02, atol=0.02 * float(theirs.abs().max()))
    assert float(from_c[2][2].abs().max()) == 0.0  # the empty example's keys


def test_c_softmax_refuses_mismatched_sizes():
    kernels = pytest.importorskip("mindtransformer.backends.torch._attention", reason="built without a C compiler")
    if not kernels.vectorized():
        pytest.skip("this CPU lacks AVX-512")
    scores = torch.zeros(4, 16, dtype=torch.int16).numpy()
    with pytest.raises(ValueError, match="softmax_keep"):
        kernels.softmax_keep(scores, scores, scores, None, None, 16, 1)  # keep without dropped
    with pytest.raises(ValueError, match="softmax_keep_backward"):
        kernels.softmax_keep_backward(scores, scores, scores, scores, torch.zeros(3, 16, dtype=torch.int16).numpy(), 16)


def test_c_softmax_weights_round_as_torchs_softmax():
    """The C pass's own exponential against torch's softmax of the same bf16 scores: the same
    bf16 weights but for a few in a million (where the two fp32 results straddle a rounding
    boundary; a wrong polynomial coefficient, 1/100 for 1/120, made it 3 in ten thousand), and
    those one step apart."""
    kernels = pytest.importorskip("mindtransformer.backends.torch._attention", reason="built without a C compiler")
    if not kernels.vectorized():
        pytest.skip("this CPU lacks AVX-512")
    scores = (torch.randn(2048, 128, generator=torch.Generator().manual_seed(0)) * 4).bfloat16()
    weights = torch.empty_like(scores)
    kernels.softmax_keep(scores.view(torch.int16).numpy(), None, weights.view(torch.int16).numpy(), None, None, 128, 1)
    theirs = torch.softmax(scores, dim=-1)
    assert (weights == theirs).float().mean() > 0.99995
    steps = (weights.view(torch.int16).int() - theirs.view(torch.int16).int()).abs()
    assert int(steps.max()) <= 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("weights_kept", [True, False])
def test_attention_over_projected_heads_is_the_split_heads_attention(precision, weights_kept, monkeypatch):
    """Self-attention as BertSelfAttention runs it (ops.project, split_heads, attention,
    merge_heads) takes its heads from the projections' one (B, T, 3H) output a chunk at a time and
    gives that output's gradient whole: the same output and gradients, bit for bit, as attention
    over the three heads copied apart."""
    monkeypatch.setattr(ops, "_KEPT_WEIGHTS", 1 << 30 if weights_kept else 0)
    monkeypatch.setattr(ops, "_CHUNK_WEIGHTS", 2 * N * T * T)  # chunks of 2 examples
    torch.manual_seed(0)
    hidden = N * D
    layers = [torch.nn.Linear(hidden, hidden) for _ in range(3)]
    x = torch.randn(B, T, hidden)
    upstream = torch.randn(B, T, hidden)
    bias = qkv_and_bias()[3]
    heads_seen = []
    apply = ops._TrainingAttention.apply
    monkeypatch.setattr(ops._TrainingAttention, "apply", lambda *a: heads_seen.append(a[-1]) or apply(*a))

    def run():
        leaf = x.clone().requires_grad_()
        for layer in layers:
            layer.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            q, k, v = (ops.split_heads(t, N) for t in ops.project(leaf, layers))
            out = ops.merge_heads(ops.attention(q, k, v, bias, 0.2))
        out.float().backward(upstream)
        return [out.detach(), leaf.grad] + [p.grad for layer in layers for p in layer.parameters()]

    packed = run()
    assert heads_seen == [N]  # the packed path
    monkeypatch.setattr(ops, "_packed_projections", lambda *a: None)
    apart = run()
    assert heads_seen == [N, 0]
    for index, (ours, theirs) in enumerate(zip(packed, apart)):
        assert torch.equal(ours, theirs), index


def test_attention_takes_heads_apart_when_they_are_not_one_projections_three():
    """Heads of another tensor, or in another order, are not taken for packed projections."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(N * D, N * D) for _ in range(3)]
    q, k, v = (ops.split_heads(t, N) for t in ops.project(torch.randn(B, T, N * D), layers))
    other = ops.split_heads(ops.project(torch.randn(B, T, N * D), layers)[1], N)
    assert ops._packed_projections(q, k, v, torch.float32) is not None
    assert ops._packed_projections(q, other, v, torch.float32) is None
    assert ops._packed_projections(k, q, v, torch.float32) is None
    assert ops._packed_projections(q, k, v, torch.bfloat16) is None
    assert ops._packed_projections(q.contiguous(), k, v, torch.float32) is None
