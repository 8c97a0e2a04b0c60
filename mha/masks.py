"""Attention masks: the two conventions, converters between them, and small mask factories.

Two conventions meet in this package; every public function says which one it uses:

================================================  ======================  ==================
where                                             bool ``True`` means     float means
================================================  ======================  ==================
``mha.attention(mask=...)`` (SDPA convention)     the query MAY attend    added to scores
``MultiHeadAttention(attn_mask=...,               the key is MASKED OUT   added to scores
key_padding_mask=...)`` (nn.MultiheadAttention)
================================================  ======================  ==================

The module keeps ``nn.MultiheadAttention``'s polarity so it is a drop-in replacement; the functional entry
keeps ``F.scaled_dot_product_attention``'s polarity.  ``torch_to_sdpa_mask`` converts the first into the
second. A query row whose every key is masked yields zeros (and zero weights), never NaN, in both."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "causal_mask",
    "sliding_window_mask",
    "padding_mask",
    "torch_to_sdpa_mask",
    "and_masks",
    "key_padding_to_sdpa",
]


def causal_mask(q_len: int, k_len: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Bool causal mask in the SDPA convention (``True`` = may attend), aligned bottom-right.

    Query ``i`` may attend key ``j`` when ``j <= i + (k_len - q_len)``: with a KV cache (``q_len < k_len``)
    the last query sees every key, which is what an incremental decoding step needs.

    Returns:
        ``(q_len, k_len)`` bool tensor.
    """
    k_len = q_len if k_len is None else k_len
    if q_len < 0 or k_len < 0:
        raise ValueError(f"causal_mask needs non-negative lengths, got q_len={q_len}, k_len={k_len}")
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(k_len - q_len)


def sliding_window_mask(
    q_len: int, k_len: int | None = None, *, window: int, device: torch.device | str | None = None
) -> Tensor:
    """Causal sliding-window mask (SDPA convention, bottom-right aligned): each query sees its last
    ``window`` keys.

    Returns:
        ``(q_len, k_len)`` bool tensor.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    k_len = q_len if k_len is None else k_len
    causal = causal_mask(q_len, k_len, device=device)
    return causal & ~causal.tril(k_len - q_len - window)


def padding_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Key-padding mask in the ``nn.MultiheadAttention`` convention (``True`` = padding, masked out).

    Args:
        lengths: ``(batch,)`` integer tensor of valid lengths.
        max_len: padded length; defaults to ``lengths.max()``.

    Returns:
        ``(batch, max_len)`` bool tensor.
    """
    if lengths.dim() != 1 or lengths.is_floating_point():
        raise ValueError(
            f"lengths must be a 1-D integer tensor, got shape {tuple(lengths.shape)} {lengths.dtype}"
        )
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


def and_masks(a: Tensor | None, b: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Combine two SDPA-convention masks (bool or float) into one that blocks what either blocks.

    Two bool masks give a bool mask; otherwise a float mask of ``dtype`` (bool ``False`` becomes ``-inf``).
    """
    if a is None:
        return b
    if b is None:
        return a
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    return _as_float(a, dtype) + _as_float(b, dtype)


def _as_float(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.full_like(mask, float("-inf"), dtype=dtype).masked_fill_(mask, 0.0)
    return mask.to(dtype)


def _check_mask_dtype(mask: Tensor, name: str) -> None:
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} must be a bool tensor or a float tensor of additive scores, got dtype {mask.dtype}; "
            f"convert it with {name}.bool() (nn.MultiheadAttention convention: True = masked out)"
        )


def torch_to_sdpa_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    *,
    batch: int,
    num_heads: int,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
) -> Tensor | None:
    """Convert ``nn.MultiheadAttention``-style masks into one SDPA-convention mask.

    Args:
        attn_mask: ``(q_len, k_len)``, ``(batch * num_heads, q_len, k_len)`` or anything broadcastable to
            ``(batch, num_heads, q_len, k_len)`` given as 4-D; bool ``True`` = masked out, float = added.
        key_padding_mask: ``(batch, k_len)``; bool ``True`` = padding (masked out), float = added.
        dtype: float dtype used when a float mask has to be produced (the query dtype).

    Returns:
        ``None`` or a mask broadcastable to ``(batch, num_heads, q_len, k_len)`` with bool ``True`` = may
        attend.
    """
    mask = None
    if attn_mask is not None:
        _check_mask_dtype(attn_mask, "attn_mask")
        if attn_mask.dim() == 2:
            if tuple(attn_mask.shape) != (q_len, k_len):
                raise ValueError(
                    f"2-D attn_mask must have shape (q_len, k_len)=({q_len}, {k_len}), "
                    f"got {tuple(attn_mask.shape)}"
                )
        elif attn_mask.dim() == 3:
            if tuple(attn_mask.shape) != (batch * num_heads, q_len, k_len):
                raise ValueError(
                    "3-D attn_mask must have shape (batch * num_heads, q_len, k_len)="
                    f"({batch * num_heads}, {q_len}, {k_len}), got {tuple(attn_mask.shape)}"
                )
            attn_mask = attn_mask.view(batch, num_heads, q_len, k_len)
        elif attn_mask.dim() == 4:
            _check_broadcast(attn_mask, (batch, num_heads, q_len, k_len), "attn_mask")
        else:
            raise ValueError(
                f"attn_mask must be 2-D (q_len, k_len), 3-D (batch*num_heads, q_len, k_len) or 4-D, "
                f"got {attn_mask.dim()}-D shape {tuple(attn_mask.shape)}"
            )
        mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask.to(dtype)
    if key_padding_mask is not None:
        _check_mask_dtype(key_padding_mask, "key_padding_mask")
        if tuple(key_padding_mask.shape) != (batch, k_len):
            raise ValueError(
                f"key_padding_mask must have shape (batch, k_len)=({batch}, {k_len}), "
                f"got {tuple(key_padding_mask.shape)}"
            )
        kpm = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        kpm = ~kpm if kpm.dtype == torch.bool else kpm.to(dtype)
        mask = and_masks(mask, kpm, dtype)
    return mask


def key_padding_to_sdpa(key_padding_mask: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A bool key-padding mask (``True`` = padding) as an SDPA-convention mask that empties no query row.

    Convert once per forward and pass the result as ``sdpa_mask=`` to every layer (the blocks do this):
    the per-layer conversion and the fully-masked-row guard then cost nothing.  A sequence that is padding
    everywhere attends over all its (padding) keys instead of getting a zero attention output; its values
    are finite and it is padding anyway.

    Args:
        key_padding_mask: ``(batch, k_len)`` bool, ``True`` = padding.
        dtype: ``None`` for a bool mask; a float dtype (the attention's compute dtype) for an additive mask
            (0 / ``-inf``), which SDPA uses as is (it turns a bool mask into one on every call).

    Returns:
        ``(batch, 1, 1, k_len)``: bool ``True`` = may attend, or float 0 = may attend / ``-inf``.
    """
    if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
        raise TypeError(
            f"key_padding_to_sdpa needs a bool key_padding_mask, got "
            f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}; float masks go through "
            "key_padding_mask= of the module"
        )
    if key_padding_mask.dim() != 2:
        raise ValueError(
            f"key_padding_mask must be (batch, k_len), got shape {tuple(key_padding_mask.shape)}"
        )
    blocked = key_padding_mask & ~key_padding_mask.all(-1, keepdim=True)  # all-padding rows see everything
    if dtype is None:
        return ~blocked[:, None, None, :]
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a float dtype or None, got {dtype}")
    zero = torch.zeros((), dtype=dtype, device=key_padding_mask.device)
    return zero.masked_fill(blocked, float("-inf"))[:, None, None, :]


def _check_broadcast(mask: Tensor, shape: tuple[int, ...], name: str) -> None:
    if mask.dim() > len(shape):
        raise ValueError(
            f"{name} has {mask.dim()} dims; expected at most {len(shape)} broadcastable to {shape}"
        )
    for got, want in zip(reversed(mask.shape), reversed(shape), strict=False):
        if got != 1 and got != want:
            raise ValueError(
                f"{name} of shape {tuple(mask.shape)} is not broadcastable to "
                f"(batch, heads, q_len, k_len)={shape}"
            )
