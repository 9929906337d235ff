"""Ops for the torch binding. Shapes: B batch, T tokens, N heads, D head size, H = N * D."""

import math

import numpy as np
import torch
import torch.nn.functional as F

_ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf GELU, as google's BERT
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
    (profiled): so it is written out here with `dropout_keep_mask`, and the 1 / P(keep) rescale
    goes on the (B, N, Tq, D) output instead of the (B, N, Tq, T) weights. On a GPU, SDPA's fused
    kernels do dropout themselves.
    """
    if dropout_p == 0.0 or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout_p)
    scores = torch.matmul(query * query.shape[-1] ** -0.5, key.transpose(-1, -2))  # (B, N, Tq, T)
    if bias is not None:
        # the dtype's lowest value, not -inf: a row with every key masked stays finite (uniform)
        scores = scores.masked_fill(~bias, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    keep, scale = dropout_keep_mask(weights.shape, dropout_p)
    return torch.matmul(torch.where(keep, weights, 0), value) * scale


_DROP_LEVELS = 1 << 16  # the drop probability is rounded to a multiple of 1/65536


def dropout_keep_mask(shape, p: float):
    """(bool tensor of `shape`, True = keep; 1 / P(keep)) for dropout with P(drop) = p rounded
    to 1/65536 (0.1 -> 0.1000061; the returned scale is exact for the rounded value).

    Random bits from numpy's PCG64 (4 x 16 bits per 64-bit draw: ~5x faster than torch's CPU
    `bernoulli_`, which draws one Mersenne-Twister number per element), seeded by one draw from
    torch's default generator: torch.manual_seed and a restored RNG state reproduce the masks.
    """
    count = math.prod(shape)
    threshold = min(round(p * _DROP_LEVELS), _DROP_LEVELS - 1)
    seed = int(torch.randint(0, 2**62, (1,)))
    words = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((count + 3) // 4)
    levels = torch.from_numpy(words.view(np.int16)[:count]).view(shape)  # uniform over int16
    return levels >= threshold - _DROP_LEVELS // 2, _DROP_LEVELS / (_DROP_LEVELS - threshold)


def prepend(x, prefix):
    """(B, T, H) and a (P, H) prefix shared by the batch -> (B, P + T, H)."""
    return torch.cat([prefix.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)


def attend_prefix(bias, length: int):
    """The attention mask (see attention_bias) with `length` always-attended positions in front."""
    if bias is None:
        return None
    return torch.cat([bias.new_ones(bias.shape[:-1] + (length,)), bias], dim=-1)


def split_heads(x, num_heads: int):
    """(B, T, H) -> (B, N, T, D)."""
    batch, length, hidden = x.shape
    return x.view(batch, length, num_heads, hidden // num_heads).transpose(1, 2)


def merge_heads(x):
    """(B, N, T, D) -> (B, T, H)."""
    batch, heads, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * size)


def linear(x, weight, bias):
    return F.linear(x, weight, bias)


tanh = torch.tanh


def shape(x):
    return tuple(x.shape)


def reshape(x, new_shape):
    return x.reshape(new_shape)


def gather_positions(x, positions):
    """(B, T, H), positions (B, P) -> (B, P, H)."""
    return torch.gather(x, 1, positions.long().unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def cross_entropy(logits, labels):
    """Mean cross-entropy over labels != -100; logits (..., K), labels (...)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


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
