"""layer_norm.py: in bf16-autocast training steps on a CPU, LayerNorm with its output's bf16 copy
(csrc/layer_norm.c) against torch's LayerNorm, cast and sum of gradients."""

import pytest
import torch
import torch.nn.functional as F

from mindtransformer.backends.torch import layer_norm

pytest.importorskip("mindtransformer.backends.torch._layer_norm", reason="built without a C compiler")


def layer_norm_then_linear(fused: bool, width: int, use_output: bool = True, use_copy: bool = True):
    """LayerNorm of a (4, 33, width) x whose output goes to a bf16 linear layer and to a sum in fp32
    (as a transformer's residual), under bf16 autocast: outputs and gradients."""
    generator = torch.Generator().manual_seed(width)
    x0, weight0, bias0 = (torch.randn(shape, generator=generator) for shape in ((4, 33, width), (width,), (width,)))
    x0 = x0 * 3 + 1  # rows with a mean and a spread other than 0 and 1
    dense = torch.randn(64, width, generator=generator) * 0.1
    upstream_y, upstream_linear = torch.randn(4, 33, width, generator=generator), torch.randn(4, 33, 64, generator=generator)
    x, weight, bias = (t.clone().requires_grad_() for t in (x0, weight0, bias0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if fused:
            y = layer_norm.layer_norm(x, weight, bias, 1e-12)
            assert isinstance(getattr(y, layer_norm.COPY_ATTRIBUTE), torch.Tensor)
        else:
            y = F.layer_norm(x, (width,), weight, bias, 1e-12)
        linear = F.linear(layer_norm.autocast_input(y), dense)
    loss = 0
    if use_output:
        loss = loss + (y * upstream_y).sum()
    if use_copy:
        loss = loss + (linear.float() * upstream_linear).sum()
    loss.backward()
    return {"y": y.detach(), "linear": linear.detach(), "grad_x": x.grad, "grad_weight": weight.grad,
            "grad_bias": bias.grad}


@pytest.mark.parametrize("width", [768, 100])  # 16-wide AVX-512 rows, and rows done one value at a time
@pytest.mark.parametrize("use_output, use_copy", [(True, True), (True, False), (False, True)])
def test_fused_layer_norm_matches_torchs_layer_norm_cast_and_summed_gradients(width, use_output, use_copy):
    ours = layer_norm_then_linear(True, width, use_output, use_copy)
    torchs = layer_norm_then_linear(False, width, use_output, use_copy)
    assert ours["y"].dtype == torch.float32
    torch.testing.assert_close(ours["y"], torchs["y"], rtol=1e-6, atol=1e-5)
    # the linear layer got the bf16 copy of our output: torch's cast of it, where the outputs round alike
    assert ours["linear"].dtype == torch.bfloat16
    assert (ours["linear"] == torchs["linear"]).float().mean() > 0.99
    torch.testing.assert_close(ours["linear"], torchs["linear"], rtol=2e-2, atol=2e-2)
    for name in ("grad_x", "grad_weight", "grad_bias"):
        torch.testing.assert_close(ours[name], torchs[name], rtol=1e-5, atol=2e-5)


def test_the_copy_is_the_output_rounded_to_bf16():
    x = (torch.randn(8, 768) * 5).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer_norm.layer_norm(x, torch.randn(768), torch.randn(768), 1e-5)
        copy = layer_norm.autocast_input(y)  # what a linear layer takes under autocast
    assert copy is getattr(y, layer_norm.COPY_ATTRIBUTE) and torch.equal(copy, y.detach().bfloat16())
    assert layer_norm.autocast_input(y) is y  # outside autocast, y itself


@pytest.mark.parametrize("case", ["no autocast", "no gradient", "fp16 autocast", "no bias"])
def test_torchs_layer_norm_outside_bf16_training_steps(case):
    x = torch.randn(2, 5, 16, requires_grad=case != "no gradient")
    weight, bias = torch.randn(16), (None if case == "no bias" else torch.randn(16))
    dtype = torch.float16 if case == "fp16 autocast" else torch.bfloat16
    with torch.autocast("cpu", dtype=dtype, enabled=case != "no autocast"):
        y = layer_norm.layer_norm(x, weight, bias, 1e-5)
    assert not hasattr(y, layer_norm.COPY_ATTRIBUTE)
    assert torch.equal(y, F.layer_norm(x, (16,), weight, bias, 1e-5))


def test_the_kernels_refuse_mismatched_sizes():
    kernels = layer_norm._layer_norm
    x, weight = torch.zeros(4, 16), torch.zeros(16)
    with pytest.raises(ValueError, match="layer_norm_forward"):
        kernels.layer_norm_forward(x.numpy(), weight.numpy(), torch.zeros(15).numpy(), 1e-5, x.numpy(),
                                   torch.zeros(4, 16, dtype=torch.int16).numpy(), torch.zeros(4).numpy(),
                                   torch.zeros(4).numpy())
    with pytest.raises(ValueError, match="layer_norm_backward"):
        kernels.layer_norm_backward(x.numpy(), weight.numpy(), torch.zeros(4).numpy(), torch.zeros(3).numpy(),
                                    x.numpy(), None, x.numpy(), weight.numpy(), weight.numpy())
