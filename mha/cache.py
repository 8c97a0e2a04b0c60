"""Key/value caches for incremental decoding."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache", "DecoderCache", "StaticDecoderCache"]


class KVCache:
    """Projected keys and values of one attention module, kept between decoding steps.

    A self-attention cache writes each step's keys/values in place into a buffer preallocated to
    ``capacity`` positions (doubled when a step would overflow it), so a decoding step costs two small
    copies instead of re-concatenating everything held.  ``k``/``v`` are views of the filled part.

    Args:
        static: ``False`` (self-attention): every call appends the new keys/values.  ``True``
            (cross-attention): the first call stores the projected memory keys/values and later calls
            reuse them.
        capacity: positions to preallocate on the first append (default: the first append's length,
            at least 16); pass the decoding length limit to never grow.

    Attributes:
        k, v: ``(batch, kv_heads, seq_len, head_dim)`` or ``None`` while empty.
        positions: key positions ``(seq_len,)`` or ``(batch, seq_len)``, kept for ALiBi; ``None`` otherwise.
        mask: ``None`` here (every key held counts); a static cache's SDPA-convention mask of the keys
            written, which ``MultiHeadAttention`` applies (see ``StaticDecoderCache``).
    """

    mask: Tensor | None = None

    def __init__(self, static: bool = False, capacity: int | None = None) -> None:
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be a positive int or None, got {capacity!r}")
        self.static = static
        self.capacity_hint = capacity
        self._k: Tensor | None = None  # static: the memory keys; else a (B, Hkv, capacity, D) buffer
        self._v: Tensor | None = None
        self._len = 0
        self.positions: Tensor | None = None
        self._pool: DecoderCache | None = None  # set by a DecoderCache: buffers are views of its pool
        self._slot = 0
        self._in_pool = False

    @property
    def k(self) -> Tensor | None:
        return self._k if self._k is None or self.static else self._k[:, :, : self._len]

    @property
    def v(self) -> Tensor | None:
        return self._v if self._v is None or self.static else self._v[:, :, : self._len]

    @property
    def seq_len(self) -> int:
        """Number of keys held (0 when empty)."""
        return self._len

    @property
    def capacity(self) -> int:
        """Positions the buffer holds before it has to grow (0 when empty)."""
        return 0 if self._k is None else self._k.shape[2]

    @property
    def is_empty(self) -> bool:
        return self._k is None

    def update(self, k: Tensor, v: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Append (or, when static and already filled, ignore) ``k``/``v``; return everything held."""
        if self.static:
            if self._k is None:
                self._k, self._v, self.positions, self._len = k, v, positions, k.shape[2]
            return self._k, self._v
        n = k.shape[2]
        if self._k is not None and k.shape[0] != self._k.shape[0]:
            raise ValueError(
                f"cache holds batch {self._k.shape[0]} but got batch {k.shape[0]}; "
                "call reorder() to change the batch (beam search) or reset() to start over"
            )
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # in-place writes would invalidate tensors saved for backward: append functionally
            self._in_pool = False
            if self._k is None:
                self._k, self._v = k, v
            else:
                self._k = torch.cat((self._k[:, :, : self._len], k), dim=2)
                self._v = torch.cat((self._v[:, :, : self._len], v), dim=2)
        else:
            if self._k is None:
                capacity = max(self.capacity_hint or 16, n)
                views = None if self._pool is None else self._pool._views(self._slot, k, v, capacity)
                if views is not None:
                    (self._k, self._v), self._in_pool = views, True
                else:
                    self._k, self._v = self._alloc(k, capacity), self._alloc(v, capacity)
            elif self._len + n > self._k.shape[2]:
                self._grow(max(2 * self._k.shape[2], self._len + n))
            self._k[:, :, self._len : self._len + n] = k
            self._v[:, :, self._len : self._len + n] = v
        self._len += n
        if positions is not None:
            held = self.positions
            self.positions = positions if held is None else torch.cat((held, positions), dim=-1)
        return self.k, self.v

    @staticmethod
    def _alloc(like: Tensor, capacity: int) -> Tensor:
        b, h, _, d = like.shape
        return like.new_empty((b, h, capacity, d))

    def _grow(self, capacity: int) -> None:
        self._in_pool = False
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = self._alloc(old, capacity)
            new[:, :, : self._len] = old[:, :, : self._len]
            setattr(self, name, new)

    def reorder(self, index: Tensor) -> None:
        """Reorder batch rows (beam search): ``index`` ``(new_batch,)`` LongTensor of old batch rows."""
        if self._k is None:
            return
        index = index.to(self._k.device)
        self._in_pool = False
        self._k, self._v = self._k.index_select(0, index), self._v.index_select(0, index)
        if self.positions is not None and self.positions.dim() == 2:
            self.positions = self.positions.index_select(0, index)

    def reset(self) -> None:
        """Drop everything held."""
        self._k = self._v = self.positions = None
        self._len = 0
        self._in_pool = False

    def __repr__(self) -> str:
        return f"KVCache(static={self.static}, seq_len={self.seq_len})"


class _LayerCaches:
    """What both decoder caches share: lists ``self_attn`` and ``cross_attn`` of per-layer caches."""

    def __len__(self) -> int:
        return len(self.self_attn)

    def layer(self, i: int) -> tuple:
        """``(self-attention cache, cross-attention cache)`` of layer ``i``."""
        return self.self_attn[i], self.cross_attn[i]


class DecoderCache(_LayerCaches):
    """Per-layer caches of a ``Decoder``: one self-attention ``KVCache`` and one static cross-attention cache.

    ``seq_len`` is the number of target tokens decoded so far (use it as the offset of absolute positions).
    ``capacity``: positions each self-attention cache preallocates (see ``KVCache``).
    """

    def __init__(self, num_layers: int, capacity: int | None = None) -> None:
        self.self_attn = [KVCache(capacity=capacity) for _ in range(num_layers)]
        # all self-attention buffers live in one (layers, 2, batch, kv_heads, capacity, head_dim) pool, so a
        # beam reorder is one index_select instead of two per layer
        self._buffer: Tensor | None = None
        for i, cache in enumerate(self.self_attn):
            cache._pool, cache._slot = self, i
        self.cross_attn = [KVCache(static=True) for _ in range(num_layers)]

    @property
    def seq_len(self) -> int:
        return self.self_attn[0].seq_len if self.self_attn else 0

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        """Reorder every layer's caches along the batch dim (beam search).

        ``cross=False`` leaves the static cross-attention caches alone: right when ``index`` only moves rows
        among rows that hold the same memory (the beams of one sentence), and it saves two copies per layer
        per step.  Dropping finished sentences changes the memory rows: use ``cross=True`` then.
        """
        buffer = self._buffer
        pooled = buffer is not None and all(c._in_pool and c._k._base is buffer for c in self.self_attn)
        if pooled:
            self._buffer = self._buffer.index_select(2, index.to(self._buffer.device))
            for i, cache in enumerate(self.self_attn):
                cache._k, cache._v = self._buffer[i, 0], self._buffer[i, 1]
                if cache.positions is not None and cache.positions.dim() == 2:
                    cache.positions = cache.positions.index_select(0, index.to(cache.positions.device))
        for cache in (*([] if pooled else self.self_attn), *(self.cross_attn if cross else ())):
            cache.reorder(index)

    def _views(self, slot: int, k: Tensor, v: Tensor, capacity: int) -> tuple[Tensor, Tensor] | None:
        """Layer ``slot``'s k/v buffers as views of the pool (allocated by layer 0), or ``None`` when its
        shapes differ from the pool's (then the layer keeps its own buffers)."""
        b, h, _, d = k.shape
        shape = (len(self.self_attn), 2, b, h, capacity, d)
        if slot == 0 and v.shape[-1] == d:
            self._buffer = k.new_empty(shape)
        buffer = self._buffer
        if buffer is None or buffer.shape != shape or buffer.dtype != k.dtype or buffer.device != k.device:
            return None
        if v.shape[-1] != d or v.dtype != k.dtype:
            return None
        return buffer[slot, 0], buffer[slot, 1]

    def reset(self) -> None:
        for cache in (*self.self_attn, *self.cross_attn):
            cache.reset()
        self._buffer = None

    def __repr__(self) -> str:
        return f"DecoderCache(num_layers={len(self)}, seq_len={self.seq_len})"


class StaticDecoderCache(_LayerCaches):
    """Fixed-shape caches of a ``Decoder`` for CUDA graphs: no tensor changes shape or address between steps.

    The self-attention keys/values of all layers live in one ``(batch, layers, 2, kv_heads, capacity,
    head_dim)`` buffer (allocated on the first step), written in place at ``position``, a device tensor, so
    that a captured step reads it at replay instead of baking in a host value.  Each attention reads all
    ``capacity`` positions under ``mask`` (0 up to the position written, ``-inf`` after).  A beam ``reorder``
    gathers whole rows into a second buffer of the same shape, which becomes the ``front`` one: one pass over
    the keys/values, no copy back (a graph that reorders is captured once per front buffer).  The
    cross-attention keys/values of the memory are copied into buffers of their own on the first step after
    ``reset()``.  The batch never changes (a search keeps finished rows and ignores them).

    One token per call (``x`` ``(batch, 1, E)``), ``position`` advancing by one after the last layer; at
    most ``capacity`` calls between resets.  Absolute positions are the caller's (``position`` is the
    offset); RoPE and ALiBi are not supported.

    Args:
        num_layers: decoder layers.  capacity: target positions held.  device: where ``position`` lives.
    """

    def __init__(self, num_layers: int, capacity: int, device: torch.device | str | None = None) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # (1,): the slot the next token fills
        self._slots = torch.arange(capacity, device=device)
        self._buffers: list[Tensor] = []  # the front buffer, and the back one once a reorder needs it
        self.front = 0  # index of the buffer that holds the keys/values
        self.mask: Tensor | None = None  # (1, 1, 1, capacity) additive, set by layer 0's write each step
        self.self_attn = [_StaticSelfCache(self, i) for i in range(num_layers)]
        self.cross_attn = [_StaticMemoryCache() for _ in range(num_layers)]

    @property
    def buffer(self) -> Tensor | None:
        """The self-attention keys/values ``(batch, layers, 2, kv_heads, capacity, head_dim)``."""
        return self._buffers[self.front] if self._buffers else None

    def _write(self, slot: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store layer ``slot``'s new keys/values ``(batch, kv_heads, 1, head_dim)`` at ``position``."""
        if k.shape[2] != 1 or v.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"a StaticDecoderCache takes one token per call with equal k/v head sizes, got k "
                f"{tuple(k.shape)} and v {tuple(v.shape)}"
            )
        if slot == 0:
            b, h, _, d = k.shape
            shape = (b, len(self), 2, h, self.capacity, d)
            buffer = self.buffer
            if buffer is None or buffer.shape != shape or buffer.dtype != k.dtype:
                self._buffers, self.front = [k.new_zeros(shape)], 0
            zero = torch.zeros((), dtype=k.dtype, device=k.device)
            self.mask = zero.masked_fill(self._slots > self.position, float("-inf")).view(1, 1, 1, -1)
        keys, values = self.buffer[:, slot].unbind(1)
        keys.index_copy_(2, self.position, k)
        values.index_copy_(2, self.position, v)
        if slot == len(self) - 1:
            self.position += 1
        return keys, values

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        """Rows continue the caches of rows ``index`` ``(batch,)`` (beam search): the self-attention rows are
        gathered into the back buffer, which becomes the front one; ``cross=False`` leaves the
        cross-attention caches alone (beams of one sentence share the memory)."""
        if self._buffers:
            if len(self._buffers) == 1:
                self._buffers.append(torch.empty_like(self._buffers[0]))
            torch.index_select(self._buffers[self.front], 0, index, out=self._buffers[1 - self.front])
            self.front = 1 - self.front
        if cross:
            for cache in self.cross_attn:
                cache.reorder(index)

    def reset(self) -> None:
        """Start a new batch: position 0, cross-attention caches refilled on the next step (buffers kept)."""
        self.position.zero_()
        for cache in self.cross_attn:
            cache.filled = False

    def __repr__(self) -> str:
        return f"StaticDecoderCache(num_layers={len(self)}, capacity={self.capacity})"


class _StaticSelfCache:
    """Layer ``slot``'s view of a ``StaticDecoderCache``: the self-attention cache its module sees."""

    static = False
    positions = None

    def __init__(self, pool: StaticDecoderCache, slot: int) -> None:
        self._pool, self._slot = pool, slot

    @property
    def mask(self) -> Tensor | None:
        return self._pool.mask

    @property
    def seq_len(self) -> int:
        raise ValueError(
            "a StaticDecoderCache keeps its position on the device: RoPE/ALiBi are not supported; use "
            "absolute positions with cache.position as the offset"
        )

    def update(self, k: Tensor, v: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if positions is not None:
            raise ValueError("a StaticDecoderCache does not keep ALiBi positions")
        return self._pool._write(self._slot, k, v)


class _StaticMemoryCache:
    """A cross-attention cache whose keys/values are copied into buffers kept from batch to batch."""

    static = True
    positions = None
    mask = None

    def __init__(self) -> None:
        self.filled = False
        self._k: Tensor | None = None
        self._v: Tensor | None = None

    @property
    def is_empty(self) -> bool:
        return not self.filled

    def update(
        self, k: Tensor | None, v: Tensor | None, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The first call after a reset copies ``k``/``v`` (the projected memory) in; later reuse it."""
        if not self.filled:
            if self._k is None or self._k.shape != k.shape or self._k.dtype != k.dtype:
                self._k, self._v = k.new_empty(k.shape), v.new_empty(v.shape)
            self._k.copy_(k)
            self._v.copy_(v)
            self.filled = True
        return self._k, self._v

    def reorder(self, index: Tensor) -> None:
        if self._k is not None:
            self._k.copy_(self._k.index_select(0, index))
            self._v.copy_(self._v.index_select(0, index))
