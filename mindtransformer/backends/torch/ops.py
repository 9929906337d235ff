"""Ops for the torch binding. Shapes: B batch, T tokens, N heads, D head size, H = N * D."""

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from mindtransformer.backends.torch import weight_grads

try:  # dropout in C (csrc/dropout.c), built where setup.py found a C compiler
    from mindtransformer.backends.torch import _dropout
except ImportError:
    _dropout = None

try:  # attention's softmax and dropout passes in C (csrc/attention.c), on CPUs with AVX-512
    from mindtransformer.backends.torch import _attention
    if not _attention.vectorized():
        _attention = None
except ImportError:
    _attention = None

try:  # the exact GELU's backward pass in C (csrc/gelu.c)
    from mindtransformer.backends.torch import _gelu
except ImportError:
    _gelu = None

try:  # cross-entropy over bf16 logits in C (csrc/cross_entropy.c)
    from mindtransformer.backends.torch import _cross_entropy
except ImportError:
    _cross_entropy = None


def gelu(x):
    """The exact (erf) GELU, as google's BERT: F.gelu, with the backward pass of a bf16 x on a CPU
    in C (one exponential per value where torch's takes two; 9.6 against 13.9 ms for BERT-base's
    (32, 128, 3,072), measured)."""
    if (_gelu is not None and x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.requires_grad
            and torch.is_grad_enabled()):
        return _Gelu.apply(x)
    return F.gelu(x)


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return F.gelu(z)

    @staticmethod
    def backward(ctx, grad_output):
        (z,) = ctx.saved_tensors
        grad_output, z = grad_output.to(z.dtype).contiguous(), z.contiguous()
        grad_z = torch.empty(z.shape, dtype=z.dtype)
        _gelu.gelu_backward_bf16(_bits(grad_output), _bits(z), _bits(grad_z))
        return grad_z


_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(x, name: str):
    return _ACTIVATIONS[name](x)


def attention_bias(attention_mask):
    """(B, T) 1/0 mask -> what `attention` takes: a (B, 1, 1, T) bool mask, or None if all ones.

    None lets scaled_dot_product_attention pick its fused kernel when nothing is padded.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


def attention(query, key, value, bias, dropout_p: float):
    """(B, N, Tq, D), (B, N, T, D) x2 -> (B, N, Tq, D): softmax(q k^T / sqrt(D), masked) v.

    Without dropout (inference) this is scaled_dot_product_attention's fused kernel. With dropout
    on a CPU, SDPA falls back to its math path, whose mask (`bernoulli_`: one RNG draw per weight)
    and fully-masked-row checks took over a third of a MiniLM training step at T = 384
    (profiled): so it is `_TrainingAttention` with `DropoutMasks`. On a GPU, SDPA's fused kernels
    do dropout themselves.
    """
    if dropout_p == 0.0 or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout_p)
    # The Function computes in one dtype (autocast's matmul dtype when on) on contiguous (b, N, T, D)
    # chunks: its batched matmuls would otherwise copy the strided heads on every call, forward and
    # backward.
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    masks = DropoutMasks(dropout_p)
    keep = masks.multiplier(query.shape[:-1] + key.shape[-2:-1], dtype, rows=query.shape[0])
    packed = _packed_projections(query, key, value, dtype)
    if packed is not None:
        # the context (B, T, H) seen as (B, N, T, D): merge_heads then copies nothing
        batch, heads, length, size = query.shape
        context = _TrainingAttention.apply(packed, None, None, bias, keep, masks.scale, heads)
        return context.view(batch, length, heads, size).transpose(1, 2)
    # (`.contiguous()`, not `.to(memory_format=...)`, which returns a tensor already in the dtype
    # as it is, strided.)
    query, key, value = (t.to(dtype).contiguous() for t in (query, key, value))
    return _TrainingAttention.apply(query, key, value, bias, keep, masks.scale, 0)


def _packed_projections(query, key, value, dtype):
    """The (B, T, 3H) projections (`project`'s one output for query, key and value) of which query,
    key and value (B, N, T, D) are the three column blocks split into heads (self-attention
    without a prefix), in `dtype`; else None."""
    packed = getattr(query, "projections", (None,))[0]
    if packed is None or packed.dtype != dtype or not packed.is_contiguous():
        return None
    batch, heads, length, size = query.shape
    hidden = heads * size
    if tuple(packed.shape) != (batch, length, 3 * hidden):
        return None
    strides = (length * 3 * hidden, size, 3 * hidden, 1)
    for index, part in enumerate((query, key, value)):
        source, position = getattr(part, "projections", (None, None))
        if (source is not packed or position != index or part.stride() != strides
                or part.data_ptr() != packed.data_ptr() + index * hidden * packed.element_size()):
            return None
    return packed


_CHUNK_WEIGHTS = 1 << 21  # attention weights per chunk of examples: 4 MB in bfloat16, cache-sized
_KEPT_WEIGHTS = 1 << 23  # a layer's weights up to this many (16 MB in bfloat16) are kept for backward


def _example_chunks(keep):
    """Slices of the batch whose (b, N, Tq, T) attention weights (keep's shape) fit in cache (at least one example)."""
    batch, heads, queries, keys = keep.shape
    step = max(1, _CHUNK_WEIGHTS // (heads * queries * keys))
    return [slice(i, i + step) for i in range(0, batch, step)]


def _scaled_matmul(a, b, alpha: float, out=None):
    """alpha * (a @ b) for (b, N, X, Y) and (b, N, Y, Z) -> (b, N, X, Z) (into `out` if given): the
    factor applied inside the batched matmul (baddbmm), with no pass of its own over the result
    and one rounding instead of two. Transposed operands stay views and the result is written in
    place: torch.matmul of 4-D tensors copied both (a transposed key, an `out` slice)."""
    if out is None:
        out = a.new_empty(a.shape[:2] + (a.shape[2], b.shape[3]))
    flat = out.view(-1, *out.shape[2:])
    torch.baddbmm(flat, a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:]), beta=0, alpha=alpha, out=flat)
    return out


def _softmax_weights(query, key, bias, keep=None):
    """(b, N, Tq, D), (b, N, T, D), (b, 1, 1, T) or None -> (b, N, Tq, T): softmax(q k^T / sqrt(D)),
    and those weights times keep (b, N, Tq, T) when given (else None). bf16 in one C pass over the
    scores (csrc/attention.c) where torch makes three."""
    weights = _scaled_matmul(query, key.transpose(-1, -2), query.shape[-1] ** -0.5)
    if _attention is not None and weights.dtype == torch.bfloat16 and weights.device.type == "cpu":
        dropped = None if keep is None else torch.empty(weights.shape, dtype=weights.dtype)
        attend = None if bias is None else bias.reshape(-1, weights.shape[-1]).to(torch.uint8).contiguous()
        _attention.softmax_keep(_bits(weights), None if keep is None else _bits(keep), _bits(weights),
                                None if dropped is None else _bits(dropped), None if attend is None else attend.numpy(),
                                weights.shape[-1], weights.shape[1] * weights.shape[2])  # the softmax in place
        return weights, dropped
    if bias is not None:
        # the dtype's lowest value, not -inf: a row with every key masked stays finite (uniform)
        weights.masked_fill_(~bias, torch.finfo(weights.dtype).min)
    weights = torch.softmax(weights, dim=-1)
    return weights, None if keep is None else weights * keep


def _softmax_backward(weights, kept, grad_dropped):
    """(weights * kept, the scores' gradient) for the chunk's weights, 0/1 mask and the dropped
    weights' gradient, all (b, N, Tq, T). bf16 in one C pass (the gradient in grad_dropped's memory)."""
    if _attention is not None and weights.dtype == torch.bfloat16 and weights.device.type == "cpu":
        weights_kept = torch.empty(weights.shape, dtype=weights.dtype)
        _attention.softmax_keep_backward(_bits(weights), _bits(kept), _bits(grad_dropped), _bits(weights_kept),
                                         _bits(grad_dropped), weights.shape[-1])
        return weights_kept, grad_dropped
    grad_weights = grad_dropped.mul_(kept)
    return weights * kept, torch._softmax_backward_data(grad_weights, weights, -1, weights.dtype)


class _Heads:
    """Where _TrainingAttention's chunks of examples come from and where its results go: contiguous
    (b, N, T, D) query, key and value chunks, from the three tensors themselves (split), or from
    the (B, T, 3H) projections they are column blocks of (packed, `heads` given): then each chunk
    of the projections is copied into heads while in cache (and the copies kept for the backward
    pass, in place of the whole tensors the split layout keeps), the output is written as
    (B, T, H) and the projections' gradient as (B, T, 3H), so that merge_heads, and autograd's
    transposes and concatenation of the three gradients, copy nothing."""

    def __init__(self, query, key, value, heads: int):
        self.heads = heads
        if heads:
            self.packed, self.shape, self.dtype, self.copies, self.tensors = query, tuple(query.shape), query.dtype, [], None
        else:
            self.packed, self.tensors = None, (query, key, value)

    def chunk(self, rows, index: int) -> tuple:
        """The examples `rows` (chunk number `index`) as contiguous (b, N, Tq, D), (b, N, T, D) x2."""
        if self.tensors is not None:
            return tuple(t[rows] for t in self.tensors)
        if index < len(self.copies):  # the backward pass: the forward's copies
            return self.copies[index]
        part = self.packed[rows]  # (b, T, 3H)
        batch, length, width = part.shape
        heads = part.view(batch, length, 3, self.heads, width // (3 * self.heads)).permute(2, 0, 3, 1, 4)
        self.copies.append(heads.contiguous().unbind(0))  # one copy for the three
        return self.copies[-1]

    def forget_input(self) -> None:
        """After the forward pass: the copies are what the backward pass reads."""
        self.packed = None

    def new_output(self):
        if self.tensors is None:
            return torch.empty(self.shape[:-1] + (self.shape[-1] // 3,), dtype=self.dtype)  # (B, T, H)
        query, _, value = self.tensors
        return query.new_empty(query.shape[:-1] + value.shape[-1:])  # (B, N, Tq, D)

    def output_slot(self, output, rows):
        """Where the chunk's (b, N, Tq, D) output is to be written (then `put_output`)."""
        return output[rows] if self.tensors is not None else None

    def put_output(self, output, rows, chunk_output) -> None:
        if self.tensors is None:
            batch, heads, length, size = chunk_output.shape
            output[rows].view(batch, length, heads, size).copy_(chunk_output.transpose(1, 2))

    def output_gradient(self, grad_output, rows, scale: float):
        """The chunk's output gradient times `scale` as a contiguous (b, N, Tq, D) (grad_output
        may be any view: merge_heads' gradient is a transposed one)."""
        chunk = grad_output[rows]
        if self.tensors is None:  # (b, T, H)
            batch, length, width = chunk.shape
            chunk = chunk.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
        return torch.mul(chunk, scale, out=torch.empty(chunk.shape, dtype=chunk.dtype))

    def new_gradients(self):
        if self.tensors is None:
            return torch.empty(self.shape, dtype=self.dtype)  # (B, T, 3H)
        return [torch.empty(t.shape, dtype=t.dtype) for t in self.tensors]

    def gradient_slots(self, gradients, rows, query) -> list:
        """Where the chunk's query, key and value gradients are to be written (then `put_gradients`)."""
        if self.tensors is not None:
            return [g[rows] for g in gradients]
        self._chunk_gradients = torch.empty((3,) + tuple(query.shape), dtype=query.dtype)  # (3, b, N, T, D)
        return list(self._chunk_gradients.unbind(0))

    def put_gradients(self, gradients, rows) -> None:
        if self.tensors is None:
            _, batch, heads, length, size = self._chunk_gradients.shape
            target = gradients[rows].view(batch, length, 3, heads, size).permute(2, 0, 3, 1, 4)
            target.copy_(self._chunk_gradients)

    def input_gradients(self, gradients) -> tuple:
        return tuple(gradients) if self.tensors is not None else (gradients, None, None)


class _TrainingAttention(torch.autograd.Function):
    """dropout(softmax(q k^T, masked)) v, forward and backward written out, a few examples at a time.

    Autograd's version of the same ops writes and re-reads several (B, N, Tq, T) tensors in
    memory (scores, weights, dropped weights, their gradients: 56 M values each per layer at
    B = 32, T = 384); each pass over them ran 2-6x slower than the same pass over a cache-sized
    chunk (measured). Here each chunk of examples goes through all its steps while in cache, and
    when a layer's weights are many (over _KEPT_WEIGHTS) only the dropout mask is kept for the
    backward pass, which recomputes the weights (one more small matmul and softmax per chunk), as
    flash attention does; fewer (GLUE's short sequences) are kept. Masked keys need no backward
    step: their weight is exp(lowest - max) = 0, so the softmax gradient is 0 there already,
    except in a row whose keys are all masked (an empty sequence), which is zeroed explicitly.
    The 1 / sqrt(D) and 1 / P(keep) factors are applied inside the matmuls (_scaled_matmul), not
    by passes of their own over the (B, N, Tq, D) query, output and query gradient.
    """

    @staticmethod
    def forward(ctx, query, key, value, bias, keep, scale: float, heads: int):
        # query, key, value contiguous (B, N, Tq, D), (B, N, T, D) x2 and heads 0, or query the
        # packed (B, T, 3H) projections, key and value None and heads N (see _Heads); bias
        # (B, 1, 1, T) bool (True = attend) or None; keep (B, N, Tq, T): 1 keep, 0 drop, in the
        # computation's dtype
        layout = _Heads(query, key, value, heads)
        ctx.scale = scale
        ctx.empty_rows = bias is not None and not bool(bias.any(dim=-1).all())
        ctx.save_for_backward(*(layout.tensors or (None, None, None)), bias, keep)
        ctx.kept_weights = [] if keep.numel() <= _KEPT_WEIGHTS else None  # each chunk's (b, N, Tq, T)
        output = layout.new_output()
        for index, rows in enumerate(_example_chunks(keep)):
            q, k, v = layout.chunk(rows, index)
            weights, dropped = _softmax_weights(q, k, None if bias is None else bias[rows], keep[rows])
            if ctx.kept_weights is not None:
                ctx.kept_weights.append(weights)
            layout.put_output(output, rows, _scaled_matmul(dropped, v, scale, out=layout.output_slot(output, rows)))
        layout.forget_input()
        ctx.layout = layout if heads else None  # the split layout comes back from the saved tensors
        return output

    @staticmethod
    def backward(ctx, grad_output):  # (B, N, Tq, D), or (B, T, H) when packed
        query, key, value, bias, keep = ctx.saved_tensors
        layout = ctx.layout or _Heads(query, key, value, 0)
        gradients = layout.new_gradients()
        for chunk, rows in enumerate(_example_chunks(keep)):
            q, k, v = layout.chunk(rows, chunk)
            g, kept = layout.output_gradient(grad_output, rows, ctx.scale), keep[rows]
            attend = None if bias is None else bias[rows]
            weights = _softmax_weights(q, k, attend)[0] if ctx.kept_weights is None else ctx.kept_weights[chunk]
            weights_kept, grad_scores = _softmax_backward(weights, kept, _scaled_matmul(g, v.transpose(-1, -2), 1.0))
            grad_q, grad_k, grad_v = layout.gradient_slots(gradients, rows, q)
            _scaled_matmul(weights_kept.transpose(-1, -2), g, 1.0, out=grad_v)
            if ctx.empty_rows:
                grad_scores.masked_fill_(~attend, 0)
            query_scale = q.shape[-1] ** -0.5
            _scaled_matmul(grad_scores, k, query_scale, out=grad_q)
            _scaled_matmul(grad_scores.transpose(-1, -2), q, query_scale, out=grad_k)
            layout.put_gradients(gradients, rows)
        return (*layout.input_gradients(gradients), None, None, None, None)


def dropout(x, p: float, residual=None):
    """Training dropout of any tensor on a CPU with `DropoutMasks`, plus `residual` when given (in
    the sum's promoted dtype, as `dropout(x) + residual`): forward and backward of a (32, 256, 384)
    bfloat16 tensor take about half the time of torch's CPU dropout."""
    return _Dropout.apply(x, residual, DropoutMasks(p))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, masks):
        keep, out = masks.drop(x, residual)
        ctx.scale, ctx.has_residual = masks.scale, residual is not None
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, grad_output):  # the residual's gradient is the sum's own (autograd casts its dtype)
        (keep,) = ctx.saved_tensors
        return _times_kept(grad_output, keep, ctx.scale), grad_output if ctx.has_residual else None, None


def _times_kept(x, keep, scale: float):
    """x * keep * scale in keep's dtype, x of keep's shape (another dtype is rounded to keep's first,
    as autograd's cast of a gradient would). bf16 keep in C when built: one pass and one rounding
    (after the fp32 x's), the bits of torch's passes (whose product by 0 or 1 is exact)."""
    if (keep.dtype == torch.bfloat16 and x.dtype in (torch.bfloat16, torch.float32) and _dropout is not None
            and x.device.type == "cpu" and x.is_contiguous() and keep.is_contiguous()):
        out = torch.empty(x.shape, dtype=keep.dtype)
        x_float = x.dtype == torch.float32
        _dropout.times_kept_bf16(x.numpy() if x_float else _bits(x), _bits(keep), _bits(out), scale, x_float)
        return out
    return torch.mul(x.to(keep.dtype), keep).mul_(scale)


def _bits(t):
    """A contiguous 16-bit CPU tensor's bits as a numpy array (its memory, for the C functions)."""
    return t.view(torch.int16).numpy()


_DROP_LEVELS = 1 << 16  # the drop probability is rounded to a multiple of 1/65536
_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}  # 1.0 as 16 bits
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


class DropoutMasks:
    """Dropout masks with P(drop) = p rounded to 1/65536 (0.1 -> 0.1000061) and `scale`, 1 / P(keep)
    exact for the rounded p, left to the caller (folded into a bfloat16 mask it would be rounded).

    The bits come from numpy's SFC64, four 16-bit levels per 64-bit draw (torch's CPU `bernoulli_`
    draws one Mersenne-Twister number per element, ~8 ns), seeded by one draw from torch's default
    generator: torch.manual_seed and a restored RNG state reproduce the masks. bf16 and fp16 masks
    come from C (csrc/dropout.c) when it is built: the same draws and masks in one pass,
    where numpy's way (draw, slice, compare, multiply) makes five. That took ~250 ms of a
    BERT-base bf16 step at 32 samples; C, 2.5 % of the step less (measured).
    """

    def __init__(self, p: float):
        self.threshold = min(round(p * _DROP_LEVELS), _DROP_LEVELS - 1)
        self.scale = _DROP_LEVELS / (_DROP_LEVELS - self.threshold)
        self._bits = np.random.SFC64(int(torch.randint(0, 2**62, (1,))))

    def multiplier(self, shape, dtype, rows: int = 1):
        """The stream's next mask of `shape` in `dtype`: 1 keeps, 0 drops. Each of the `rows` leading
        slices (the examples) starts on a fresh draw, so masks made per example are its slices."""
        if dtype in _ONE_BITS and _dropout is not None:
            mask = torch.empty(shape, dtype=dtype)
            with self._state() as words:
                _dropout.keep_mask(words, _bits(mask), rows, self.threshold, _ONE_BITS[dtype])
            return mask
        per_row = math.prod(shape) // rows
        levels = self._bits.random_raw(rows * -(-per_row // 4)).view(np.uint16).reshape(rows, -1)[:, :per_row]
        keep = levels >= self.threshold
        if dtype in _ONE_BITS:  # numpy has no bfloat16: write 1.0's bits, then view them as the dtype
            bits = np.multiply(keep, np.uint16(_ONE_BITS[dtype]), dtype=np.uint16)
            return torch.from_numpy(bits.view(np.int16)).view(dtype).view(shape)
        return torch.from_numpy(keep.astype(_NUMPY_FLOATS[dtype])).view(shape)

    def drop(self, x, residual=None):
        """(keep, x * keep * scale [+ residual]): the stream's next mask of x's shape and dtype, and x
        dropped (plus residual, when given). A contiguous bf16 x in one pass in C when built (the
        same mask and bits), with an fp32 residual of its shape too: torch's add of a bf16 and an
        fp32 tensor took 5-9 ms for a BERT-base layer's (32, 128, 768) at 32 samples, against
        2.3 ms for a cast and an add (measured), the sum now one more stream of the same pass."""
        if x.dtype == torch.bfloat16 and _dropout is not None and x.device.type == "cpu" and x.is_contiguous():
            keep = torch.empty(x.shape, dtype=x.dtype)
            fused = (residual is not None and residual.dtype == torch.float32 and residual.shape == x.shape
                     and residual.device.type == "cpu" and residual.is_contiguous())
            if fused:
                out = torch.empty(x.shape, dtype=torch.float32)
                with self._state() as words:
                    _dropout.dropout_bf16(words, _bits(x), out.numpy(), _bits(keep), self.threshold, self.scale,
                                          residual.detach().numpy())
                return keep, out
            out = torch.empty(x.shape, dtype=x.dtype)
            with self._state() as words:
                _dropout.dropout_bf16(words, _bits(x), _bits(out), _bits(keep), self.threshold, self.scale)
        else:
            keep = self.multiplier(x.shape, x.dtype)
            out = _times_kept(x, keep, self.scale)
        return keep, out if residual is None else out + residual

    @contextlib.contextmanager
    def _state(self):
        """The stream's 4 state words (uint64) for C to advance in place; the stream continues from them."""
        state = self._bits.state  # a copy
        yield state["state"]["state"]
        self._bits.state = state


def prepend(x, prefix):
    """(B, T, H) and a (P, H) prefix shared by the batch -> (B, P + T, H)."""
    return torch.cat([prefix.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)


def attend_prefix(bias, length: int):
    """The attention mask (see attention_bias) with `length` always-attended positions in front."""
    if bias is None:
        return None
    return torch.cat([bias.new_ones(bias.shape[:-1] + (length,)), bias], dim=-1)


def split_heads(x, num_heads: int):
    """(B, T, H) -> (B, N, T, D), a view (which keeps `project`'s note of where x comes from)."""
    batch, length, hidden = x.shape
    heads = x.view(batch, length, num_heads, hidden // num_heads).transpose(1, 2)
    if hasattr(x, "projections"):
        heads.projections = x.projections
    return heads


def merge_heads(x):
    """(B, N, T, D) -> (B, T, H)."""
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def linear(x, weight, bias):
    return weight_grads.linear(x, (weight,), bias)


def project(x, layers):
    """x (B, T, I) through several layers -> their outputs (B, T, O_i), in order.

    Plain Linear layers go through one matmul against their stacked (sum O_i, I) weights. For
    attention's query, key and value that is one (B*T, H) x (H, 3H) matmul, one for its input's
    gradient and one for the weights', where three of each ran slower (narrow), and autocast casts
    x to bfloat16 once, not three times. Wrapped layers (LoRA) and ZeRO-3 partitions (whose
    weights exist only inside their own module's call) are called one by one.
    """
    if not all(isinstance(layer, torch.nn.Linear) and layer.bias is not None and not hasattr(layer.weight, "ds_id")
               for layer in layers):
        return [layer(x) for layer in layers]
    bias = torch.cat([layer.bias for layer in layers])
    packed = weight_grads.linear(x, tuple(layer.weight for layer in layers), bias)  # (B, T, sum O_i)
    outputs = packed.split([layer.out_features for layer in layers], dim=-1)
    for index, output in enumerate(outputs):
        # for `attention`, through split_heads: it can take the three heads from `packed` itself
        output.projections = (packed, index)
    return outputs


tanh = torch.tanh


def shape(x):
    return tuple(x.shape)


def reshape(x, new_shape):
    return x.reshape(new_shape)


def gather_positions(x, positions):
    """(B, T, H), positions (B, P) -> (B, P, H)."""
    return torch.gather(x, 1, positions.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))


_CE_CHUNK = 1 << 19  # logits per chunk of rows in _ChunkedCrossEntropy: 2 MB in fp32, cache-sized


def cross_entropy(logits, labels):
    """Mean cross-entropy over labels != -100; logits (..., K), labels (...).

    Large logits being trained on a CPU (the MLM head's (B*P, V): 640 x 30,522 for BERT-base at
    32 samples) go through `_ChunkedCrossEntropy`; the rest through F.cross_entropy in fp32."""
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if logits.device.type == "cpu" and logits.requires_grad and torch.is_grad_enabled() and logits.numel() > _CE_CHUNK:
        return _ChunkedCrossEntropy.apply(logits, labels)
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """F.cross_entropy(logits.float(), labels, ignore_index=-100), a few rows at a time.

    Autograd's version makes four (R, K) fp32 tensors (the cast logits, log-softmax, the loss's
    zero-filled gradient, log-softmax's gradient) and casts the last back: each a pass through
    memory (BERT-base's MLM logits: 78 MB each), about 190 ms of a 4.9 s step at 32 samples. Here
    each chunk of rows is cast and reduced while in cache; the forward keeps only each row's
    log-sum-exp (R,), and the backward writes softmax - one_hot, times the loss's gradient over
    the counted rows, straight into the logits' dtype: the same values, rounded once as before.
    bf16 logits go through C (csrc/cross_entropy.c): one pass a row for each step, 10 ms against
    74 for BERT-base's MLM logits, forward and backward (measured).
    """

    @staticmethod
    def forward(ctx, logits, labels):  # logits (R, K) any float dtype, labels (R,) with -100 = ignored
        counted = labels != -100
        targets = torch.where(counted, labels, 0)[:, None]  # (R, 1): an in-range index on ignored rows
        log_sum_exp = torch.empty(logits.shape[0])
        if _c_cross_entropy_applies(logits):
            _cross_entropy.log_sum_exp_bf16(_bits(logits.detach()), logits.shape[1], log_sum_exp.numpy())
        else:
            for rows in _row_chunks(logits):
                log_sum_exp[rows] = torch.logsumexp(logits[rows].float(), dim=-1)
        picked = logits.gather(1, targets)[:, 0].float()  # (R,) the target's logit; raises if out of range
        ctx.save_for_backward(logits, targets, counted, log_sum_exp)
        return ((log_sum_exp - picked) * counted).sum() / counted.sum()  # 0 / 0 = nan if none counted, as torch

    @staticmethod
    def backward(ctx, grad_loss):
        logits, targets, counted, log_sum_exp = ctx.saved_tensors
        row_scale = counted * (grad_loss.float() / counted.sum())  # (R,): 0 on ignored rows
        grad = torch.empty_like(logits)
        if _c_cross_entropy_applies(logits):
            _cross_entropy.cross_entropy_grad_bf16(_bits(logits), logits.shape[1], log_sum_exp.numpy(),
                                                   targets.reshape(-1).contiguous().numpy(), row_scale.numpy(),
                                                   _bits(grad))
            return grad, None
        for rows in _row_chunks(logits):
            softmax = logits[rows].float().sub_(log_sum_exp[rows, None]).exp_()  # (r, K)
            softmax.scatter_add_(1, targets[rows], softmax.new_full(targets[rows].shape, -1.0))
            torch.mul(softmax, row_scale[rows, None], out=grad[rows])
        return grad, None


def _c_cross_entropy_applies(logits) -> bool:
    return (_cross_entropy is not None and logits.dtype == torch.bfloat16 and logits.device.type == "cpu"
            and logits.is_contiguous())


def _row_chunks(matrix):
    """Slices of the rows of (R, K) of about _CE_CHUNK values each (at least one row)."""
    step = max(1, _CE_CHUNK // matrix.shape[1])
    return [slice(i, i + step) for i in range(0, matrix.shape[0], step)]


def mse(predictions, targets):
    return F.mse_loss(predictions.float(), targets.float())


def soft_cross_entropy(student_logits, teacher_logits, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, mean over rows of (..., K): Hinton's
    distillation loss (T^2 keeps its gradients on the scale of the hard loss); no gradient to the teacher."""
    k = student_logits.shape[-1]
    student = F.log_softmax(student_logits.reshape(-1, k).float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach().reshape(-1, k).float() / temperature, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature ** 2


def orthogonality_penalty(m):
    """||M M^T - I||_F for M (r, n) (rows towards orthonormal; AdaLoRA's, not squared)."""
    gram = m @ m.t()
    return torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))


def transpose_2d(m):
    return m.t()
