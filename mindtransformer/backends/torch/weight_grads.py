"""A step's weight gradients in one matmul per weight, when the step accumulates micro-batches.

Autograd makes a linear layer's weight gradient at every micro-batch: an (O, N) x (N, I) matmul
over the micro-batch's N tokens and then, under bf16 autocast, a cast of that (O, I) gradient to
fp32 and an add into .grad. With small micro-batches those passes over every weight cost more
than the matmul before them (BERT-base, micro-batches of 2 x 128 tokens, bf16 on a CPU with AMX:
about a quarter of the step; docs/benchmarks.md). While a `Deferred` collection is open (the torch
engine opens one for a step of several micro-batches on a CPU), the layers keep each
micro-batch's inputs (N, I) and output gradients (N, O) instead, and `flush()` makes each weight's
gradient for the whole step at once: one matmul over all the step's tokens, added into .grad
once. Embedding lookups likewise keep their ids and output gradients, added into the table's
.grad by one index_add per step (autograd makes a dense zero table, fills in the rows and adds
the whole table into .grad at every micro-batch: for BERT-base's 30,522 x 768 words, three
passes over 94 MB each). What is kept is bounded (`budget_bytes`); past it a layer's gradient is
added at once.

Under bf16 on a CPU with MKL, the weight gradients are added into the fp32 .grad by MKL's
bf16 x bf16 -> fp32 matmul (bf16_gemm.py), without a bf16 gradient to cast; the torch engine
then opens a collection with no budget for a step of one micro-batch too, for that alone.

The forward pass is the same computation as F.linear under the same autocast (bit for bit);
the weight gradients are the same sums in another order and rounding (one bf16 rounding of the
step's sum instead of one per micro-batch, under bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mindtransformer.backends.torch import bf16_gemm, layer_norm

_BUDGET_BYTES = 1 << 30  # inputs and output gradients kept per step (BERT-base, 2 x 128 tokens: ~80 MB each)
_active = None  # the open Deferred collection, or None


def linear(x, weights: tuple, bias):
    """x (..., I) through the stacked weights (O_i, I) and bias (sum O_i,) or None -> (..., sum O_i).

    Deferred while a collection is open, gradients are on and every weight is trained; else F.linear.
    An x from layer_norm.layer_norm comes in as the bf16 copy made with it, when autocast would cast it."""
    x = layer_norm.autocast_input(x)
    collection = _active
    if (collection is None or not torch.is_grad_enabled() or not all(w.requires_grad for w in weights)
            or not (x.requires_grad or (bias is not None and bias.requires_grad))):
        return F.linear(x, weights[0] if len(weights) == 1 else torch.cat(weights), bias)
    return _DeferredLinear.apply(x, bias, collection, weights)


def embedding(ids, weight, padding_idx=None):
    """Rows of the table weight (V, H) for ids (...) -> (..., H); deferred as `linear`."""
    collection = _active
    if collection is None or not torch.is_grad_enabled() or not weight.requires_grad:
        return F.embedding(ids, weight, padding_idx)
    return _DeferredEmbedding.apply(ids, weight, collection, padding_idx)


class Deferred:
    """The weight gradients of the micro-batches of one step, made at `flush()`."""

    def __init__(self, budget_bytes: int = _BUDGET_BYTES, casts: WeightCasts | None = None):
        self.budget_bytes = budget_bytes
        self.kept_bytes = 0
        self._weights = {}  # key -> the stacked weights in the forward's dtype, made once per step
        self._casts = WeightCasts() if casts is None else casts  # kept step after step when the caller keeps it
        self._kept = {}  # key -> (weights, [inputs (N, I)], [output gradients (N, O)])
        self._rows = {}  # id(table) -> (table, [ids (N,)], [output gradients (N, H)])

    def __enter__(self):
        global _active
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None

    def stacked(self, weights: tuple, dtype) -> torch.Tensor:
        """(sum O_i, I) in `dtype`, made once per step (the weights change only at the update, after flush)."""
        key = tuple(map(id, weights))
        if key not in self._weights:
            same = weights[0].dtype == dtype and len(weights) == 1
            self._weights[key] = weights[0] if same else self._casts.get(weights, dtype)
        return self._weights[key]

    def keep(self, weights: tuple, inputs, grads) -> None:
        """Note one micro-batch's inputs (N, I) and output gradients (N, O) of a layer."""
        if not self._fits(inputs, grads):
            _add_gradient(weights, grads, inputs)
            return
        _append(self._kept, tuple(map(id, weights)), weights, inputs, grads)

    def keep_rows(self, weight, ids, grads) -> None:
        """Note one micro-batch's looked-up ids (N,) and their output gradients (N, H) of a table."""
        if not self._fits(ids, grads):
            _add_rows(weight, ids, grads)
            return
        _append(self._rows, id(weight), weight, ids, grads)

    def _fits(self, *tensors) -> bool:
        """Whether keeping `tensors` stays within the budget; if so they are counted as kept."""
        size = sum(t.numel() * t.element_size() for t in tensors)
        if self.kept_bytes + size > self.budget_bytes:
            return False
        self.kept_bytes += size
        return True

    @torch.no_grad()
    def flush(self) -> None:
        """Add every kept layer's weight gradient into .grad; forget the step. Linear weights
        first: a table shared with an output layer (BERT's tied word embeddings) then adds its
        rows into that layer's dense gradient."""
        for weights, inputs, grads in self._kept.values():
            if len(inputs) == 1:
                _add_gradient(weights, grads[0], inputs[0])
            else:
                _add_gradient(weights, torch.cat(grads), torch.cat(inputs))
        for weight, ids, grads in self._rows.values():
            _add_rows(weight, torch.cat(ids), torch.cat(grads))
        self._kept.clear()
        self._rows.clear()
        self._weights.clear()
        self.kept_bytes = 0


class WeightCasts:
    """Weights in another dtype (a bf16 step's linear weights), concatenated where a layer stacks
    several (BERT's query, key and value), in memory kept from step to step: fresh memory for
    BERT-base's 110M weights in bf16 each step, and a concatenation before the cast, cost ~1 % of a
    bf16 step (measured). A copy is made again only when one of its weights changed since (another
    version counter or memory), so an optimizer that writes the copies as it updates the weights
    (adamw.py) spares the cast pass; one that does not must bump the weights' version counters
    (torch's fused AdamW does not: the torch engine does it for it)."""

    def __init__(self):
        self._entries = {}  # (ids of the weights, dtype) -> [buffer (sum O_i, I), weights, their states]

    @torch.no_grad()
    def get(self, weights: tuple, dtype) -> torch.Tensor:
        """(sum O_i, I) in `dtype`: the weights as they are now."""
        shape = (sum(w.shape[0] for w in weights),) + tuple(weights[0].shape[1:])
        key = (tuple(map(id, weights)), dtype)
        entry = self._entries.get(key)
        if entry is None or tuple(entry[0].shape) != shape or entry[0].device != weights[0].device:
            entry = self._entries[key] = [weights[0].new_empty(shape, dtype=dtype), weights, None]
        buffer, _, states = entry
        now = [_state(w) for w in weights]
        if states != now:
            # slice by slice: torch.cat(out=) converting the dtype ran 4-8x slower than copy_
            # (BERT-base's word embeddings to bf16: 47 ms against 11.5, measured)
            for weight, rows in zip(weights, _row_slices(weights)):
                buffer[rows].copy_(weight)
            entry[2] = now
        return buffer

    def copies(self, dtype) -> dict:
        """id(weight) -> its rows of a `dtype` copy, for an optimizer that writes them (then `written`)."""
        return {id(w): entry[0][rows] for (_, kind), entry in self._entries.items() if kind == dtype
                for w, rows in zip(entry[1], _row_slices(entry[1]))}

    def written(self, ids: set) -> None:
        """The weights of these ids were just updated and their copies (from `copies`) written: current."""
        for _, weights, states in self._entries.values():
            if states is not None:
                for index, w in enumerate(weights):
                    if id(w) in ids:
                        states[index] = _state(w)


def _row_slices(weights: tuple) -> list:
    """Each weight's rows in their concatenation."""
    starts = [0]
    for w in weights:
        starts.append(starts[-1] + w.shape[0])
    return [slice(a, b) for a, b in zip(starts, starts[1:])]


def _state(weight) -> tuple:
    """What changes when a weight changes in place (its version) or is replaced (its memory)."""
    return weight._version, weight.data_ptr()


def _append(store: dict, key, owner, first, second) -> None:
    """store[key] = (owner, [first, ...], [second, ...]), this micro-batch's pair appended."""
    entry = store.setdefault(key, (owner, [], []))
    entry[1].append(first.detach())
    entry[2].append(second.detach())


@torch.no_grad()
def _add_gradient(weights: tuple, grads, inputs) -> None:
    """.grad += grads^T inputs for the stacked weights: grads (N, sum O_i), inputs (N, I)."""
    parts = grads.split([w.shape[0] for w in weights], dim=1)  # (N, O_i) column blocks, views
    if all(w.dtype == torch.float32 and bf16_gemm.can_add_transposed_product(w.grad, part, inputs)
           for w, part in zip(weights, parts)):
        # bf16 operands: MKL adds each product into the fp32 .grad in place (bf16_gemm.py)
        for weight, part in zip(weights, parts):
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            bf16_gemm.add_transposed_product(weight.grad, part, inputs)
        return
    if len(weights) == 1 and weights[0].grad is not None and weights[0].grad.dtype == grads.dtype:
        weights[0].grad.addmm_(grads.t(), inputs)  # fp32: accumulated by the matmul itself
        return
    total = grads.t() @ inputs  # (sum O_i, I) in the forward's dtype
    for weight, part in zip(weights, total.split([w.shape[0] for w in weights])):
        if weight.grad is None:
            weight.grad = part.to(weight.dtype, memory_format=torch.contiguous_format)
        else:
            weight.grad.add_(part)


@torch.no_grad()
def _add_rows(weight, ids, grads) -> None:
    """.grad[ids] += grads, repeated ids summed: ids (N,), grads (N, H)."""
    if weight.grad is None:
        weight.grad = torch.zeros_like(weight, memory_format=torch.contiguous_format)
    weight.grad.index_add_(0, ids, grads.to(weight.grad.dtype))


class _DeferredEmbedding(torch.autograd.Function):
    """F.embedding whose table gradient goes to the collection: autograd gets None for the table
    (an input only so that the output requires a gradient)."""

    @staticmethod
    def forward(ctx, ids, weight, collection: Deferred, padding_idx):
        ctx.collection, ctx.weight, ctx.padding_idx = collection, weight, padding_idx
        ctx.save_for_backward(ids)
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad_output):  # (..., H)
        (ids,) = ctx.saved_tensors
        ids, grads = ids.reshape(-1), grad_output.reshape(-1, grad_output.shape[-1])
        if ctx.padding_idx is not None:  # the padding row gets no gradient (as F.embedding's)
            keep = ids != ctx.padding_idx
            ids, grads = ids[keep], grads[keep]
        ctx.collection.keep_rows(ctx.weight, ids, grads)
        return None, None, None, None


class _DeferredLinear(torch.autograd.Function):
    """F.linear whose weight gradient goes to the collection instead of autograd (the weights are
    not inputs of the graph); the input's and the bias's gradients are autograd's as usual."""

    @staticmethod
    def forward(ctx, x, bias, collection: Deferred, weights: tuple):
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weights[0].dtype
        weight = collection.stacked(weights, dtype)  # (O, I)
        x = x.to(dtype)
        with torch.autocast(device, enabled=False):  # the casts autocast would make, made above
            out = _dense(x, weight, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x, weight)
        ctx.collection, ctx.weights, ctx.has_bias = collection, weights, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_output):  # (..., O)
        x, weight = ctx.saved_tensors
        grad_output = grad_output.to(weight.dtype)
        flat = grad_output.reshape(-1, grad_output.shape[-1])  # (N, O)
        ctx.collection.keep(ctx.weights, x.reshape(-1, x.shape[-1]), flat)
        grad_bias = _bias_gradient(flat) if ctx.has_bias else None
        return grad_output @ weight, grad_bias, None, None


def _dense(x, weight, bias):
    """F.linear(x, weight, bias), bit for bit. For bf16 on a CPU through oneDNN's matmul with the
    bias added in its epilogue: F.linear's addmm first copies the bias into every row of the
    output, a pass of its own (BERT-base's (4,096, 3,072) intermediate at 32 samples: 49 ms
    against 15, measured)."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.is_contiguous() and _LINEAR_POINTWISE is not None:
        return _LINEAR_POINTWISE(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


# oneDNN's linear with a fused epilogue, present in torch's x86 builds (with mkldnn)
_LINEAR_POINTWISE = (getattr(torch.ops.mkldnn, "_linear_pointwise", None)
                     if torch.backends.mkldnn.is_available() else None)


def _bias_gradient(grads):
    """grads (N, O) summed over the N tokens -> (O,). In bf16, as MKL's product with a column of
    ones, in fp32 (bf16_gemm.py): 3.6-4x faster than torch's bf16 sum over the tokens (BERT-base,
    4,096 tokens), which also rounds the sum to bf16."""
    if grads.dtype != torch.bfloat16:  # fp32: torch's sum, nothing to make for MKL
        return grads.sum(0)
    total = torch.zeros(grads.shape[1], 1)
    ones = grads.new_ones(grads.shape[0], 1)
    if not bf16_gemm.can_add_transposed_product(total, grads, ones):
        return grads.sum(0)
    bf16_gemm.add_transposed_product(total, grads, ones)
    return total.view(-1)
