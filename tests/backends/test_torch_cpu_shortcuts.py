"""The bf16 step's CPU shortcuts equal what they replace: dropout masks and dropped tensors from
C are numpy's masks and torch's products bit for bit, the chunked cross-entropy is F.cross_entropy's loss and gradient, and
the bias-fused linear is F.linear bit for bit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mindtransformer.backends.torch import ops, weight_grads


def masks(shape, dtype, rows, draws=3):
    torch.manual_seed(7)
    stream = ops.DropoutMasks(0.1)
    return [stream.multiplier(shape, dtype, rows) for _ in range(draws)]


@pytest.mark.parametrize("shape, dtype, rows", [((4, 3, 16, 16), torch.bfloat16, 4), ((3, 5, 7), torch.float16, 3),
                                                ((5, 7), torch.bfloat16, 1), ((2, 9), torch.bfloat16, 2)])
def test_the_c_masks_are_numpys_masks(shape, dtype, rows, monkeypatch):
    """Same masks and the same stream afterwards (the next draws equal too), with rows whose
    length is not a multiple of the 4 levels a draw gives."""
    pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    from_c = masks(shape, dtype, rows)
    monkeypatch.setattr(ops, "_dropout", None)
    from_numpy = masks(shape, dtype, rows)
    for c, n in zip(from_c, from_numpy):
        assert c.dtype == dtype and tuple(c.shape) == shape
        assert torch.equal(c, n)
    assert 0 < float(torch.cat([m.flatten() for m in from_c]).float().mean()) < 1


def same_bits(a, b):
    """Equal dtypes and bits (so -0.0 is not 0.0), NaN where the other has NaN (its sign and payload aside)."""
    nan = torch.isnan(a)
    integers = torch.int16 if a.element_size() == 2 else torch.int32
    return (a.dtype == b.dtype and torch.equal(nan, torch.isnan(b))
            and torch.equal(a.view(integers)[~nan], b.view(integers)[~nan]))


def awkward_bf16(size, seed):
    """bf16 values of every kind dropout meets: signs, tiny and huge ones, inf and NaN."""
    x = (torch.randn(size, generator=torch.Generator().manual_seed(seed)) * 4).bfloat16()
    x[:6] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 3e38])
    x[6:9] = torch.tensor([-1e-38, 1e-40, -2.5])
    return x


@pytest.mark.parametrize("size", [13, 4096, 3 * 4096 + 37])  # under a vector, one block, blocks and a remainder
def test_c_dropout_is_torchs_bit_for_bit_and_leaves_the_stream_where_numpy_does(size, monkeypatch):
    pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    x = awkward_bf16(size, seed=size)

    def two_drops():
        torch.manual_seed(11)
        stream = ops.DropoutMasks(0.3)
        return [stream.drop(x) for _ in range(2)]

    from_c = two_drops()
    monkeypatch.setattr(ops, "_dropout", None)
    from_torch = two_drops()
    for (c_keep, c_dropped), (t_keep, t_dropped) in zip(from_c, from_torch):
        assert torch.equal(c_keep, t_keep)
        assert same_bits(c_dropped, t_dropped)
    assert not torch.equal(from_c[0][0], from_c[1][0])  # the stream moved on


@pytest.mark.parametrize("scale", [1 / 0.7, 1.5])  # 1.5: a bf16 times it often lies halfway (ties to even)
def test_c_gradient_through_the_mask_is_torchs_bit_for_bit(scale, monkeypatch):
    pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    grad = awkward_bf16(4096 + 21, seed=1)
    keep = (torch.rand(grad.shape, generator=torch.Generator().manual_seed(2)) > 0.3).bfloat16()
    from_c = ops._times_kept(grad, keep, scale)
    monkeypatch.setattr(ops, "_dropout", None)
    assert same_bits(from_c, ops._times_kept(grad, keep, scale))


@pytest.mark.parametrize("size", [13, 3 * 4096 + 37])
def test_c_dropout_plus_an_fp32_residual_is_torchs_sum_bit_for_bit(size, monkeypatch):
    """The residual added in the dropout's pass: torch's bf16 product, then its fp32 sum with the
    residual (the mixed-dtype add), bit for bit; the stream moves on as without the residual."""
    pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    x = awkward_bf16(size, seed=size)
    residual = awkward_bf16(size, seed=size + 1).float().flip(0) * 1.001  # fp32 values no bf16 holds

    def two_drops():
        torch.manual_seed(11)
        stream = ops.DropoutMasks(0.3)
        return [stream.drop(x, residual) for _ in range(2)]

    from_c = two_drops()
    monkeypatch.setattr(ops, "_dropout", None)
    from_torch = two_drops()
    for (c_keep, c_sum), (t_keep, t_sum) in zip(from_c, from_torch):
        assert torch.equal(c_keep, t_keep)
        assert c_sum.dtype == torch.float32 and same_bits(c_sum, t_sum)
    assert not torch.equal(from_c[0][0], from_c[1][0])


@pytest.mark.parametrize("scale", [1 / 0.7, 1.5])
def test_c_gradient_of_fp32_through_a_bf16_mask_rounds_as_torchs_cast_then_product(scale, monkeypatch):
    """An fp32 gradient (the residual sum's) through a bf16 mask: rounded to bf16 once, then times
    the mask and the scale and rounded again, as autograd's cast and the product were."""
    pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    grad = awkward_bf16(4096 + 21, seed=3).float() * 1.0009765  # halfway and off-grid values for the first rounding
    keep = (torch.rand(grad.shape, generator=torch.Generator().manual_seed(2)) > 0.3).bfloat16()
    from_c = ops._times_kept(grad, keep, scale)
    assert from_c.dtype == torch.bfloat16
    assert same_bits(from_c, torch.mul(grad.bfloat16(), keep).mul_(scale))
    monkeypatch.setattr(ops, "_dropout", None)
    assert same_bits(from_c, ops._times_kept(grad, keep, scale))


def test_dropout_with_the_residual_is_dropout_then_the_sum_forward_and_backward():
    """ops.dropout(x, p, residual) against ops.dropout(x, p) + residual from the same seed: the same
    output and the same gradients for x and the residual, bit for bit."""
    x0 = torch.randn(4, 16, 64).bfloat16()
    residual0 = torch.randn(4, 16, 64)
    upstream = torch.randn(4, 16, 64)

    def run(fused: bool):
        x, residual = x0.clone().requires_grad_(), residual0.clone().requires_grad_()
        torch.manual_seed(5)
        out = ops.dropout(x, 0.1, residual) if fused else ops.dropout(x, 0.1) + residual
        out.backward(upstream)
        return out.detach(), x.grad, residual.grad

    for ours, theirs in zip(run(True), run(False)):
        assert same_bits(ours, theirs)


def test_the_c_mask_refuses_sizes_it_cannot_fill():
    kernels = pytest.importorskip("mindtransformer.backends.torch._dropout", reason="built without a C compiler")
    import numpy as np

    out = np.zeros(10, np.int16)
    with pytest.raises(ValueError, match="SFC64's 4 uint64"):
        kernels.keep_mask(np.zeros(3, np.uint64), out, 1, 100, 0x3F80)
    with pytest.raises(ValueError, match="multiple of rows"):
        kernels.keep_mask(np.zeros(4, np.uint64), out, 3, 100, 0x3F80)


@pytest.mark.parametrize("dtype, c_kernel", [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)])
@pytest.mark.parametrize("chunk", [10 * 1003, 3 * 1003])  # chunks of 10 rows; of 3, the last one short
def test_chunked_cross_entropy_is_torchs(dtype, c_kernel, chunk, monkeypatch):
    """Rows of 1,003 logits: 62 vectors of 16 and a tail, which holds some of the targets."""
    if c_kernel and ops._cross_entropy is None:
        pytest.skip("built without the C extension")
    if not c_kernel:
        monkeypatch.setattr(ops, "_cross_entropy", None)
    monkeypatch.setattr(ops, "_CE_CHUNK", chunk)
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(20, 1003, generator=generator) * 3).to(dtype)
    labels = torch.randint(0, 1003, (20,), generator=generator)
    labels[1::4] = torch.tensor([995, 1002, 0, 16, 5])  # in the tail, the last, the first, a vector's first
    labels[::4] = -100
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = ops.cross_entropy(ours.view(4, 5, 1003), labels.view(4, 5))
    assert loss.grad_fn is not None and "Chunked" in type(loss.grad_fn).__name__
    expected = F.cross_entropy(theirs.float(), labels, ignore_index=-100)
    (1.7 * loss).backward()
    (1.7 * expected).backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert ours.grad.dtype == dtype
    # fp32: to float rounding; bf16: the same fp32 values rounded once, so equal but for ties
    torch.testing.assert_close(ours.grad.float(), theirs.grad.float(), rtol=1e-5 if dtype == torch.float32 else 8e-3,
                               atol=1e-9)
    assert float(ours.grad[::4].abs().max()) == 0.0  # ignored rows get no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_with_every_row_ignored_is_nan_as_torchs(monkeypatch, dtype):
    monkeypatch.setattr(ops, "_CE_CHUNK", 10)
    logits = torch.randn(4, 30).to(dtype).requires_grad_()
    labels = torch.full((4,), -100)
    assert torch.isnan(ops.cross_entropy(logits, labels)) and torch.isnan(F.cross_entropy(logits.float(), labels))


@pytest.mark.parametrize("where", [3, 20, 90, 97])  # in the first, second and last vector; in the tail
def test_a_nan_logit_makes_the_loss_nan_as_torchs(monkeypatch, where):
    monkeypatch.setattr(ops, "_CE_CHUNK", 10)
    logits = torch.randn(4, 100).bfloat16()  # 6 vectors of 16 and a tail of 4
    logits[2, where] = float("nan")
    logits.requires_grad_()
    labels = torch.tensor([1, 2, 3, 4])
    assert torch.isnan(ops.cross_entropy(logits, labels)) and torch.isnan(F.cross_entropy(logits.float(), labels))


def test_the_cross_entropy_kernels_refuse_bad_sizes_and_targets():
    kernels = ops._cross_entropy
    if kernels is None:
        pytest.skip("built without the C extension")
    logits, lse, scale = np.zeros((3, 40), np.int16), np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="log_sum_exp_bf16: logits must be \\(rows, 41\\)"):
        kernels.log_sum_exp_bf16(logits, 41, lse)
    out = np.zeros_like(logits)
    with pytest.raises(ValueError, match="cross_entropy_grad_bf16: logits and out"):
        kernels.cross_entropy_grad_bf16(logits, 40, lse, np.zeros(2, np.int64), scale, out)
    with pytest.raises(ValueError, match="a target outside \\[0, 40\\)"):
        kernels.cross_entropy_grad_bf16(logits, 40, lse, np.array([0, 40, 1]), scale, out)


@pytest.mark.parametrize("bias", [True, False])
def test_the_bias_fused_linear_is_f_linear_bit_for_bit(bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, 48, generator=generator).bfloat16()
    weight = (torch.randn(80, 48, generator=generator) * 0.1).bfloat16()
    b = torch.randn(80, generator=generator).bfloat16() if bias else None
    assert torch.equal(weight_grads._dense(x, weight, b), F.linear(x, weight, b))
    assert torch.equal(weight_grads._dense(x.float(), weight.float(), None if b is None else b.float()),
                       F.linear(x.float(), weight.float(), None if b is None else b.float()))


SPECIAL_VALUES = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 30.0, -30.0, 1e-30]


@pytest.mark.parametrize("size", [16 * 3 + 5, 4096 * 3])  # a tail done one value at a time, and none
def test_c_gelu_backward_is_torchs_to_its_precision(size):
    """csrc/gelu.c against torch's gelu_backward in bf16: the same values but where the two fp32
    results straddle a bf16 rounding boundary, the same error against float64 autograd, and the
    same at 0, infinities (NaN, as torch's inf * 0), NaN and large |z|, in both code paths."""
    kernels = pytest.importorskip("mindtransformer.backends.torch._gelu", reason="built without a C compiler")
    generator = torch.Generator().manual_seed(size)
    z = (torch.randn(size, generator=generator) * 2.5).bfloat16()
    z[:8], z[-8:] = torch.tensor(SPECIAL_VALUES), torch.tensor(SPECIAL_VALUES)
    grad = torch.randn(size, generator=generator).bfloat16()
    ours = torch.empty_like(z)
    kernels.gelu_backward_bf16(grad.view(torch.int16).numpy(), z.view(torch.int16).numpy(), ours.view(torch.int16).numpy())
    theirs = torch.ops.aten.gelu_backward(grad, z)
    assert same_bits(ours[:8], theirs[:8]) and same_bits(ours[-8:], theirs[-8:])
    finite = torch.isfinite(z)
    assert (ours[finite] == theirs[finite]).float().mean() > 0.95  # 97.8-99.5 % seen
    exact_z = z[finite].double().requires_grad_()
    torch.nn.functional.gelu(exact_z).backward(grad[finite].double())
    our_error = (ours[finite].double() - exact_z.grad).abs()
    torch_error = (theirs[finite].double() - exact_z.grad).abs()
    assert float(our_error.max()) <= float(torch_error.max()) * 1.01
    assert float(our_error.mean()) <= float(torch_error.mean()) * 1.05


def test_gelu_forward_is_torchs_and_its_gradient_torchs_to_bf16_precision():
    z0 = (torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(0)) * 2).bfloat16()
    upstream = torch.randn(4, 7, 33, generator=torch.Generator().manual_seed(1)).bfloat16()
    results = []
    for function in (ops.gelu, torch.nn.functional.gelu):
        z = z0.clone().requires_grad_()
        out = function(z)
        out.backward(upstream)
        results.append((out.detach(), z.grad))
    (ours, our_grad), (theirs, their_grad) = results
    assert same_bits(ours, theirs)
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-2, atol=1e-2)
    assert not torch.equal(our_grad, torch.ops.aten.gelu_backward(upstream, z0 * 2))  # the gradient is z's
