"""Positions: sinusoidal and learned absolute embeddings (added to token embeddings by the model), RoPE
(rotates q and k inside attention) and ALiBi (a per-head linear distance bias on the scores)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "alibi_slopes",
    "alibi_bias",
    "sinusoidal_table",
]


def _check_positions(positions: Tensor, seq_len: int, batch: int | None = None) -> Tensor:
    """``positions`` if it is an integer ``(seq_len,)`` or ``(batch, seq_len)`` tensor (any leading dims when
    ``batch`` is ``None``)."""
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(
            f"positions must be an integer tensor, got {getattr(positions, 'dtype', type(positions))}"
        )
    shape = positions.shape
    fits = shape[-1:] == (seq_len,) if batch is None else shape in ((seq_len,), (batch, seq_len))
    if not fits:
        rows = "batch" if batch is None else batch
        raise ValueError(f"positions must have shape ({seq_len},) or ({rows}, {seq_len}), got {tuple(shape)}")
    return positions


def _positions(x: Tensor, embed_dim: int, offset: int, positions: Tensor | None) -> Tensor:
    """Positions of ``x`` ``(batch, seq, embed_dim)``: ``offset + arange(seq)`` or the given ``positions``."""
    if x.dim() != 3 or x.shape[-1] != embed_dim:
        raise ValueError(f"expected (batch, seq, {embed_dim}) input, got shape {tuple(x.shape)}")
    if positions is None:
        return torch.arange(offset, offset + x.shape[1], device=x.device)
    return _check_positions(positions, x.shape[1])


def sinusoidal_table(positions: Tensor, embed_dim: int) -> Tensor:
    """Sinusoidal encodings of "Attention Is All You Need": ``(..., embed_dim)`` float32 for integer
    positions."""
    half = embed_dim // 2
    steps = torch.arange(half, device=positions.device, dtype=torch.float32)
    inv_freq = torch.exp(steps * (-math.log(10000.0) * 2 / embed_dim))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (..., E/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # interleaved sin, cos: (..., E)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sinusoidal position encodings to ``(batch, seq, embed_dim)`` embeddings.

    Args:
        embed_dim: even embedding size.
        dropout: dropout applied after the addition (as in the original Transformer).

    ``forward(x, offset=0, positions=None)``: positions default to ``offset + arange(seq)``; pass
    ``offset=cache.seq_len`` while decoding incrementally.  No length limit (computed on the fly).
    """

    def __init__(self, embed_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"SinusoidalPositionalEncoding needs an even embed_dim, got {embed_dim}")
        self.embed_dim = embed_dim
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``x`` ``(batch, seq, embed_dim)`` -> same shape, with encodings added."""
        pos = _positions(x, self.embed_dim, offset, positions)
        return self.dropout(x + sinusoidal_table(pos, self.embed_dim).to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """Adds learned position embeddings (``nn.Embedding(max_len, embed_dim)``) to ``(batch, seq, embed_dim)``.

    ``forward(x, offset=0, positions=None)``; positions must be ``< max_len``.  The table is ``.weight``
    (``(max_len, embed_dim)``), initialised with std 0.02 like ViT/BERT.
    """

    def __init__(self, max_len: int, embed_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, embed_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """``x`` ``(batch, seq, embed_dim)`` -> same shape."""
        pos = _positions(x, self.weight.shape[1], offset, positions)
        if positions is None and offset + x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of length {x.shape[1]} at offset {offset} exceeds max_len={self.max_len}; "
                "build LearnedPositionalEmbedding with a larger max_len"
            )
        return self.dropout(x + self.weight[pos].to(x.dtype))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer; the "rotate-half" layout of GPT-NeoX / LLaMA).

    Args:
        head_dim: even size of each head.
        base: frequency base (10000 in the paper).

    ``forward(x, positions)``: ``x`` ``(batch, heads, seq, head_dim)``, ``positions`` ``(seq,)`` or
    ``(batch, seq)`` integer offsets.  Returns the rotated tensor, same shape and dtype.  Scores of rotated q
    and k depend only on the position difference (tested).
    """

    inv_freq: Tensor

    def __init__(self, head_dim: int, *, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` ``(batch, heads, seq, head_dim)`` by ``positions`` ``(seq,)`` or ``(batch, seq)``."""
        work = torch.float64 if x.dtype == torch.float64 else torch.float32  # half inputs rotate in fp32
        angles = positions.to(work)[..., None] * self.inv_freq.to(x.device, work)  # (..., seq, D/2)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, seq, D/2): broadcast over heads
        cos = torch.cat((angles.cos(), angles.cos()), dim=-1)
        sin = torch.cat((angles.sin(), angles.sin()), dim=-1)
        xw = x.to(work)
        x1, x2 = xw.chunk(2, dim=-1)
        rotated = torch.cat((-x2, x1), dim=-1)
        return (xw * cos + rotated * sin).to(x.dtype)


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi head slopes ``(num_heads,)`` (Press et al.): geometric ``2^(-8/n)``, interleaved for non-powers
    of 2."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_2(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, q_positions: Tensor, k_positions: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive ALiBi bias ``-slope * |q_pos - k_pos|``.

    Args:
        slopes: ``(heads,)``.
        q_positions: ``(q_len,)`` or ``(batch, q_len)``; k_positions: ``(k_len,)`` or ``(batch, k_len)``.

    Returns:
        ``(heads, q_len, k_len)`` or ``(batch, heads, q_len, k_len)`` float bias (an SDPA float mask).  Under
        a causal mask this equals the paper's ``slope * (k_pos - q_pos)``.
    """
    dist = (q_positions[..., :, None] - k_positions[..., None, :]).abs().to(torch.float32)  # (..., Lq, Lk)
    return (-slopes.to(dist.device)[:, None, None] * dist.unsqueeze(-3)).to(dtype)
