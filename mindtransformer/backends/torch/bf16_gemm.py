"""bf16 x bf16 -> fp32 matmuls that add into an fp32 tensor, for the weight gradients of bf16 steps on a CPU.

Under bf16 autocast a linear layer's weight gradient is a bf16 matmul `grad_output^T @ input`
(oneDNN), rounded to bf16, then cast to fp32 and added into the fp32 .grad: two more passes over
every weight, and oneDNN runs this matmul, whose operand is transposed, at 550-720 GFLOP/s on the
CPU with AMX here, against ~1,000 for the forward's. MKL's `cblas_gemm_bf16bf16f32`, which torch's
CPU library carries and exports, takes the same bf16 operands, accumulates in fp32 and adds the
result into the fp32 .grad itself (beta = 1): 1.3-1.6x faster than the matmul and cast together
on BERT-base's shapes with cold caches (docs/benchmarks.md), and one bf16 rounding fewer.

`available()` is False where torch was built without MKL (e.g. ARM); callers then keep torch's way.
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS_LAYOUT, CBLAS_TRANSPOSE (mkl_cblas.h)
_INT32_MAX = 2 ** 31 - 1  # the LP64 interface's MKL_INT
_TOKENS_PER_CALL = 1024  # add_transposed_product's products per MKL call (see there)
PROFILER_NAME = "mkl::gemm_bf16bf16f32"  # how the matmul shows in torch.profiler's tables


@functools.lru_cache(maxsize=1)
def _gemm():
    """MKL's cblas_gemm_bf16bf16f32 from torch's own CPU library, or None."""
    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        gemm = ctypes.CDLL(library).cblas_gemm_bf16bf16f32
    except (OSError, AttributeError):
        return None
    gemm.restype = None
    gemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                          ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    return gemm


def available() -> bool:
    return _gemm() is not None


def _rows(t: torch.Tensor) -> bool:
    """A CPU matrix whose rows are contiguous (any row stride), of sizes MKL's 32-bit ints take."""
    return (t.device.type == "cpu" and t.dim() == 2 and t.stride(1) == 1 and t.stride(0) >= t.shape[1]
            and max(t.shape + (t.stride(0),)) <= _INT32_MAX)


def can_add_transposed_product(out: torch.Tensor | None, grads: torch.Tensor, inputs: torch.Tensor) -> bool:
    """Whether `add_transposed_product` applies: bf16 grads (N, O) and inputs (N, I) with contiguous
    rows, and `out` a contiguous fp32 (O, I) or None (to be made as zeros)."""
    return (available() and grads.dtype == torch.bfloat16 and inputs.dtype == torch.bfloat16
            and _rows(grads) and _rows(inputs) and grads.shape[0] == inputs.shape[0]
            and (out is None or (out.device.type == "cpu" and out.dtype == torch.float32 and out.is_contiguous()
                                 and tuple(out.shape) == (grads.shape[1], inputs.shape[1]))))


def add_transposed_product(out: torch.Tensor, grads: torch.Tensor, inputs: torch.Tensor) -> None:
    """out += grads^T @ inputs, accumulated in fp32: out fp32 (O, I), grads (N, O) and inputs (N, I)
    bf16 (check can_add_transposed_product first).

    Adding into an existing (zeroed) gradient is the fast way: with beta = 0 (overwrite) MKL ran
    1.2-1.6x slower on these shapes (measured). So is adding the tokens' products 1,024 tokens at a
    time: 8-19 % faster than one call over BERT-base's 4,096 tokens on all four of its weight shapes
    (measured on one thread, hot caches; 512 or 2,048 tokens gained less; 1.1-2 % of the step, A/B)."""
    (tokens, outputs), features = grads.shape, inputs.shape[1]
    with torch.profiler.record_function(PROFILER_NAME):  # else torch.profiler does not see it
        for start in range(0, tokens, _TOKENS_PER_CALL):
            count = min(_TOKENS_PER_CALL, tokens - start)
            _gemm()(_ROW_MAJOR, _TRANS, _NO_TRANS, outputs, features, count, 1.0, grads[start].data_ptr(),
                    grads.stride(0), inputs[start].data_ptr(), inputs.stride(0), 1.0, out.data_ptr(), features)
