"""Ops for the MindSpore binding. Shapes: B batch, T tokens, N heads, D head size, H = N * D."""

import math

import mindspore as ms
from mindspore import ops as _ops


def activation(x, name: str):
    if name == "gelu":
        return _ops.gelu(x, approximate="none")  # exact erf GELU; MindSpore's default is tanh
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return _ops.gelu(x, approximate="tanh")
    if name == "relu":
        return _ops.relu(x)
    return _ops.silu(x)


def attention_bias(attention_mask):
    """(B, T) 1/0 mask -> additive (B, 1, 1, T) bias: 0 where attended, -10000 where padded.

    google's BERT value: exp(-10000) is exactly 0 in fp32 softmax, and it stays finite in
    fp16/bf16, where the fp32 minimum becomes -inf and gave NaN losses under mixed precision."""
    if attention_mask is None:
        return None
    mask = _ops.cast(attention_mask, ms.float32)
    return ((1.0 - mask) * -1e4)[:, None, None, :]


def attention(query, key, value, bias, dropout_p: float):
    """(B, N, T, D) x3 -> (B, N, T, D): softmax(q k^T / sqrt(D) + bias) v."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    scores = _ops.matmul(query * scale, _ops.transpose(key, (0, 1, 3, 2)))  # (B, N, Tq, T)
    if bias is not None:
        scores = scores + bias
    probs = _ops.softmax(scores, -1)
    if dropout_p > 0:
        probs = _ops.dropout(probs, p=dropout_p, training=True)
    return _ops.matmul(probs, value)


def prepend(x, prefix):
    """(B, T, H) and a (P, H) prefix shared by the batch -> (B, P + T, H)."""
    batch = x.shape[0]
    shared = _ops.broadcast_to(_ops.expand_dims(prefix.astype(x.dtype), 0), (batch,) + prefix.shape)
    return _ops.cat((shared, x), 1)


def attend_prefix(bias, length: int):
    """The additive bias (see attention_bias) with `length` always-attended positions in front."""
    if bias is None:
        return None
    return _ops.cat((_ops.zeros(bias.shape[:-1] + (length,), bias.dtype), bias), -1)


def split_heads(x, num_heads: int):
    """(B, T, H) -> (B, N, T, D)."""
    batch, length, hidden = x.shape
    return _ops.transpose(_ops.reshape(x, (batch, length, num_heads, hidden // num_heads)), (0, 2, 1, 3))


def merge_heads(x):
    """(B, N, T, D) -> (B, T, H)."""
    batch, heads, length, size = x.shape
    return _ops.reshape(_ops.transpose(x, (0, 2, 1, 3)), (batch, length, heads * size))


def linear(x, weight, bias):
    return _ops.dense(x, weight, bias)


def project(x, layers):
    """x (B, T, I) through several layers -> their outputs, in order: one by one here (the stacked
    matmul is a torch-on-CPU speed-up, see the torch binding's `project`)."""
    return [layer(x) for layer in layers]


def tanh(x):
    return _ops.tanh(x)


def shape(x):
    return x.shape


def reshape(x, new_shape):
    return _ops.reshape(x, new_shape)


def gather_positions(x, positions):
    """(B, T, H), positions (B, P) -> (B, P, H)."""
    index = _ops.broadcast_to(_ops.expand_dims(_ops.cast(positions, ms.int32), -1), positions.shape + (x.shape[-1],))
    return _ops.gather_elements(x, 1, index)


def cross_entropy(logits, labels):
    """Mean cross-entropy over labels != -100; logits (..., K), labels (...)."""
    flat = _ops.reshape(_ops.cast(logits, ms.float32), (-1, logits.shape[-1]))
    return _ops.cross_entropy(flat, _ops.reshape(_ops.cast(labels, ms.int32), (-1,)), ignore_index=-100)


def mse(predictions, targets):
    return _ops.mse_loss(_ops.cast(predictions, ms.float32), _ops.cast(targets, ms.float32))


def soft_cross_entropy(student_logits, teacher_logits, temperature: float):
    """KL(softmax(teacher / T) || softmax(student / T)) x T^2, mean over rows of (..., K); no
    gradient to the teacher (see the torch binding)."""
    k = student_logits.shape[-1]
    student = _ops.log_softmax(_ops.reshape(_ops.cast(student_logits, ms.float32), (-1, k)) / temperature, -1)
    teacher = _ops.log_softmax(_ops.stop_gradient(_ops.reshape(_ops.cast(teacher_logits, ms.float32), (-1, k)))
                               / temperature, -1)
    rows = student.shape[0]
    return (_ops.exp(teacher) * (teacher - student)).sum() / rows * temperature ** 2


def orthogonality_penalty(m):
    """||M M^T - I||_F for M (r, n) (rows towards orthonormal; AdaLoRA's, not squared)."""
    gram = _ops.matmul(m, _ops.transpose(m, (1, 0)))
    return _ops.sqrt(((gram - _ops.eye(gram.shape[0], gram.shape[0], gram.dtype)) ** 2).sum())


def transpose_2d(m):
    return _ops.transpose(m, (1, 0))
