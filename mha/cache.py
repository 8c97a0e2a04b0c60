"""Key/value caches for incremental decoding."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "DecoderCache"]


class KVCache:
    """Projected keys and values of one attention module, kept between decoding steps.

    Args:
        static: ``False`` (self-attention): every call appends the new keys/values.  ``True``
            (cross-attention): the first call stores the projected memory keys/values and later calls
            reuse them.

    Attributes:
        k, v: ``(batch, kv_heads, seq_len, head_dim)`` or ``None`` while empty.
        positions: key positions ``(seq_len,)`` or ``(batch, seq_len)``, kept for ALiBi; ``None`` otherwise.
    """

    def __init__(self, static: bool = False) -> None:
        self.static = static
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.positions: Tensor | None = None

    @property
    def seq_len(self) -> int:
        """Number of keys held (0 when empty)."""
        return 0 if self.k is None else self.k.shape[2]

    @property
    def is_empty(self) -> bool:
        return self.k is None

    def update(self, k: Tensor, v: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Append (or, when static and already filled, ignore) ``k``/``v``; return everything held."""
        if self.static and self.k is not None:
            return self.k, self.v
        if self.k is None or self.static:
            self.k, self.v, self.positions = k, v, positions
        else:
            if k.shape[0] != self.k.shape[0]:
                raise ValueError(
                    f"cache holds batch {self.k.shape[0]} but got batch {k.shape[0]}; "
                    "call reorder() to change the batch (beam search) or reset() to start over"
                )
            self.k = torch.cat((self.k, k), dim=2)
            self.v = torch.cat((self.v, v), dim=2)
            if positions is not None and self.positions is not None:
                self.positions = torch.cat((self.positions, positions), dim=-1)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Select/reorder batch rows (beam search): ``index`` ``(new_batch,)`` LongTensor of old batch
        rows."""
        if self.k is None:
            return
        index = index.to(self.k.device)
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)
        if self.positions is not None and self.positions.dim() == 2:
            self.positions = self.positions.index_select(0, index)

    def reset(self) -> None:
        """Drop everything held."""
        self.k = self.v = self.positions = None

    def __repr__(self) -> str:
        return f"KVCache(static={self.static}, seq_len={self.seq_len})"


class DecoderCache:
    """Per-layer caches of a ``Decoder``: one self-attention ``KVCache`` and one static cross-attention cache.

    ``seq_len`` is the number of target tokens decoded so far (use it as the offset of absolute positions).
    """

    def __init__(self, num_layers: int) -> None:
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache(static=True) for _ in range(num_layers)]

    def __len__(self) -> int:
        return len(self.self_attn)

    def layer(self, i: int) -> tuple[KVCache, KVCache]:
        """``(self-attention cache, cross-attention cache)`` of layer ``i``."""
        return self.self_attn[i], self.cross_attn[i]

    @property
    def seq_len(self) -> int:
        return self.self_attn[0].seq_len if self.self_attn else 0

    def reorder(self, index: Tensor) -> None:
        """Reorder every layer's caches along the batch dim (beam search)."""
        for cache in (*self.self_attn, *self.cross_attn):
            cache.reorder(index)

    def reset(self) -> None:
        for cache in (*self.self_attn, *self.cross_attn):
            cache.reset()

    def __repr__(self) -> str:
        return f"DecoderCache(num_layers={len(self)}, seq_len={self.seq_len})"
