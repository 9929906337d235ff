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


def test_training_attention_is_the_formula_with_its_reproducible_mask():
    q, k, v, bias = qkv_and_bias()
    torch.manual_seed(7)
    got = ops.attention(q, k, v, bias, 0.3)
    torch.manual_seed(7)  # the same torch RNG state -> the same mask
    keep, scale = ops.dropout_keep_mask((B, N, T, T), 0.3)
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


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_mask_drops_p_and_the_scale_keeps_the_expectation(p):
    torch.manual_seed(0)
    keep, scale = ops.dropout_keep_mask((64, 12, 64, 64), p)
    rounded = round(p * 65536) / 65536
    n = keep.numel()
    dropped = 1 - float(keep.double().mean())
    assert abs(dropped - rounded) < 5 * math.sqrt(rounded * (1 - rounded) / n)  # 5 sigma over 3.1M draws
    assert scale == pytest.approx(1 / (1 - rounded), rel=1e-12)
    # p is rounded to the nearest multiple of 1/65536
    assert abs(rounded - p) <= 0.5 / 65536
