"""``mha.attention``: the one functional entry every module calls, a thin layer over
``F.scaled_dot_product_attention`` (what it adds to SDPA: see ``attention`` and ``mha/README.md``).

Tensors are ``(batch, heads, seq, head_dim)``; masks follow SDPA (bool ``True`` = may attend, float = added
to the scores).  SDPA picks its own kernel unless one is pinned by ``backend=``/``force_backend``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .masks import _as_float, _check_broadcast, _check_mask_dtype, and_masks, causal_mask

__all__ = ["attention", "last_backend", "force_backend", "BACKENDS"]

#: the values of ``backend=`` (see ``attention``)
BACKENDS = ("auto", "sdpa", "cudnn", "flash", "efficient", "math", "flex", "eager")
_SDPA_KERNELS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
_STATE: dict[str, str | None] = {"last": None, "forced": None}


def last_backend() -> str | None:
    """The backend the latest ``attention`` call was sent to (``None`` before the first call).

    This is the request, not a kernel read back from the GPU: ``"sdpa"`` (SDPA picks its own kernel; the
    profiler names it), a pinned SDPA kernel (``"cudnn"``, ``"flash"``, ``"efficient"``, ``"math"``),
    ``"flex"`` or ``"eager"``.
    """
    return _STATE["last"]


@contextmanager
def force_backend(backend: str) -> Iterator[None]:
    """Inside this context every ``attention(..., backend="auto")`` call (so every module) uses ``backend``.

    For debugging and benchmarking whole models: ``with mha.force_backend("math"): model(x)``.  Calls the
    forced kernel cannot serve keep the automatic choice: weights requested (eager), ``score_mod``/
    ``block_mask`` under an SDPA backend, dropout under ``"flex"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    previous = _STATE["forced"]
    _STATE["forced"] = None if backend == "auto" else backend
    try:
        yield
    finally:
        _STATE["forced"] = previous


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    score_mod: Callable | None = None,
    block_mask: object | None = None,
    backend: str = "auto",
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Scaled dot-product attention.

    Args:
        q: ``(batch, heads, q_len, head_dim)``.
        k: ``(batch, kv_heads, k_len, head_dim)``; ``kv_heads`` divides ``heads`` (grouped-query attention:
            query head ``h`` uses key head ``h // (heads // kv_heads)``).
        v: ``(batch, kv_heads, k_len, v_head_dim)``.
        mask: SDPA convention, broadcastable to ``(batch, heads, q_len, k_len)``: bool ``True`` = may attend,
            float = added to the scores.
        is_causal: causal masking aligned bottom-right: query ``i`` sees keys ``j <= i + k_len - q_len``
            (with a KV cache the newest query sees every key).  Combines with ``mask``.
        scale: score scale, default ``1 / sqrt(head_dim)``.
        dropout_p: dropout on the attention probabilities (pass 0 at inference; modules do this for you).
        score_mod: FlexAttention score modifier ``(score, b, h, q_idx, kv_idx) -> score``.
        block_mask: FlexAttention ``BlockMask``.
        backend: ``"auto"`` (SDPA's own kernel choice; eager for weights, Flex for ``score_mod``/
            ``block_mask``), ``"sdpa"``, or a pinned ``"cudnn"``, ``"flash"``, ``"efficient"``, ``"math"``,
            ``"flex"``, ``"eager"``.  A pinned SDPA kernel that cannot run the call raises.
        return_weights: also return the attention probabilities, before dropout (uses the eager path).

    Returns:
        ``out`` of shape ``(batch, heads, q_len, v_head_dim)``, and with ``return_weights`` also the weights
        ``(batch, heads, q_len, k_len)``.  A query row with every key masked gives zeros (and zero weights).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    qs, ks, vs = q.shape, k.shape, v.shape  # (each .shape builds a new object: read once)
    for name, shape in (("q", qs), ("k", ks), ("v", vs)):
        if len(shape) != 4:
            raise ValueError(
                f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(shape)}; "
                "for (batch, seq, embed) inputs use mha.MultiHeadAttention"
            )
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise TypeError(
            f"q, k and v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}; cast them, e.g. "
            "k.to(q.dtype)"
        )
    if not (qs[0] == ks[0] == vs[0]):
        raise ValueError(f"batch sizes differ: q {qs[0]}, k {ks[0]}, v {vs[0]}")
    if ks[1] != vs[1] or ks[2] != vs[2]:
        raise ValueError(f"k and v must share (kv_heads, k_len): k {tuple(ks)} vs v {tuple(vs)}")
    if qs[1] % ks[1] != 0:
        raise ValueError(f"query heads ({qs[1]}) must be a multiple of key/value heads ({ks[1]})")
    if qs[3] != ks[3]:
        raise ValueError(f"q and k head_dim differ: {qs[3]} vs {ks[3]}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a Tensor or None, got {type(mask).__name__}")
        _check_mask_dtype(mask, "mask")
        _check_broadcast(mask, (qs[0], qs[1], qs[2], ks[2]), "mask")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if return_weights and backend not in ("auto", "eager"):
        raise ValueError(f"return_weights=True needs backend 'auto' or 'eager', got {backend!r}")
    if backend == "flex" and dropout_p > 0.0:
        raise ValueError("FlexAttention has no dropout: use dropout_p=0 or backend='eager'")
    if (score_mod is not None or block_mask is not None) and backend not in ("auto", "flex", "eager"):
        raise ValueError(f"score_mod/block_mask need backend 'auto', 'flex' or 'eager', got {backend!r}")
    if is_causal and block_mask is not None:
        raise ValueError("is_causal=True with a block_mask: put causality into the block_mask's mask_mod")
    return _attend(
        q,
        k,
        v,
        mask=mask,
        is_causal=is_causal,
        scale=scale,
        dropout_p=dropout_p,
        score_mod=score_mod,
        block_mask=block_mask,
        backend=backend,
        return_weights=return_weights,
    )


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    score_mod: Callable | None = None,
    block_mask: object | None = None,
    backend: str = "auto",
    return_weights: bool = False,
    guard: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """``attention`` without input validation (the modules call this: their inputs are built, not given).

    A fully masked query row gives zeros and finite gradients: SDPA does so for an additive (0 / ``-inf``)
    mask on every kernel, so a bool mask is given to it in that form (SDPA converts a bool mask on every
    call anyway; cuDNN's bool path leaves such rows non-zero); FlexAttention does so itself; the eager path
    needs a guard (an ``any`` and two ``where``).  ``guard=False`` promises that ``mask`` leaves every query
    row at least one key (e.g. from ``mha.masks.key_padding_to_sdpa``) and skips that guard, except for the
    rows a bottom-right causal mask empties (``q_len > k_len``).
    """
    if backend == "auto":
        flex = score_mod is not None or block_mask is not None
        backend = "eager" if return_weights else _auto_backend(q, k, v, dropout_p=dropout_p, flex=flex)
    qs, ks = q.shape, k.shape
    q_len, k_len = qs[2], ks[2]
    gqa = qs[1] != ks[1]
    if is_causal and q_len == 1:  # a decode step's single query sees every key
        is_causal = False
    if mask is None and backend == "sdpa" and (not is_causal or q_len == k_len):  # the common call
        _STATE["last"] = "sdpa"
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=gqa
        )

    empty_rows = guard and mask is not None  # could a query row be fully masked?
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    if is_causal and block_mask is None and (q_len != k_len or mask is not None):
        # SDPA's is_causal is top-left aligned and does not combine with a mask: build the mask ourselves
        mask = and_masks(mask, causal_mask(q_len, k_len, device=q.device), q.dtype)
        empty_rows = empty_rows or q_len > k_len
        is_causal = False
    keep = None
    if mask is not None and mask.dtype == torch.bool and backend not in ("eager", "flex"):
        mask = _as_float(mask, q.dtype)
    elif mask is not None and empty_rows and backend == "eager":
        # a fully masked row would give NaN (and NaN grads): let it attend everywhere, then zero it
        keep = mask.any(-1, keepdim=True) if mask.dtype == torch.bool else (mask > -math.inf).any(-1, True)
        mask = mask | ~keep if mask.dtype == torch.bool else torch.where(keep, mask, 0.0)

    weights = None
    if backend == "eager":
        out, weights = _eager(
            q,
            k,
            v,
            mask=mask,
            is_causal=is_causal,
            scale=scale,
            dropout_p=dropout_p,
            score_mod=score_mod,
            block_mask=block_mask,
        )
    elif backend == "flex":
        out = _flex(
            q, k, v, mask=mask, is_causal=is_causal, scale=scale, score_mod=score_mod, block_mask=block_mask
        )
    else:
        if gqa and backend in ("cudnn", "efficient"):  # these kernels take no enable_gqa: repeat k/v heads
            groups = q.shape[1] // k.shape[1]
            k, v, gqa = _expand_kv(k, groups), _expand_kv(v, groups), False
        kwargs = {"attn_mask": mask, "dropout_p": dropout_p, "is_causal": is_causal, "scale": scale}
        if backend == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **kwargs)
        else:
            with sdpa_kernel(_SDPA_KERNELS[backend]):
                out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **kwargs)
    _STATE["last"] = backend

    if keep is not None:
        out = torch.where(keep, out, 0.0)
        if weights is not None:
            weights = torch.where(keep, weights, 0.0)
    if return_weights:
        return out, weights
    return out


def _auto_backend(q: Tensor, k: Tensor, v: Tensor, *, dropout_p: float, flex: bool) -> str:
    """What ``backend="auto"`` means for a call that wants no weights (those take the eager path)."""
    forced = _STATE["forced"]
    if (
        forced is not None
        and (forced in ("flex", "eager") or not flex)
        and not (forced == "flex" and dropout_p)
    ):
        return forced  # (a forced kernel that cannot run this call, e.g. math + score_mod, is not used)
    if not flex:
        return "sdpa"
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if dropout_p or (needs_grad and q.device.type == "cpu"):
        return "eager"  # Flex has no dropout, and no backward on CPU
    return "flex"


def _expand_kv(x: Tensor, groups: int) -> Tensor:
    """``(B, Hkv, L, D) -> (B, Hkv * groups, L, D)``, each kv head repeated for its query-head group."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _eager(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    dropout_p: float,
    score_mod: Callable | None,
    block_mask: object | None,
) -> tuple[Tensor, Tensor]:
    """Reference path written out: ``softmax(q k^T * scale + mask) v``; returns (out, weights)."""
    groups = q.shape[1] // k.shape[1]
    k, v = _expand_kv(k, groups), _expand_kv(v, groups)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Lq, Lk)
    if score_mod is not None or block_mask is not None:
        batch, heads, q_len, k_len = scores.shape
        dev = scores.device
        b = torch.arange(batch, device=dev).view(-1, 1, 1, 1)  # broadcastable (b, h, q_idx, kv_idx) grids
        h = torch.arange(heads, device=dev).view(1, -1, 1, 1)
        qi = torch.arange(q_len, device=dev).view(1, 1, -1, 1)
        ki = torch.arange(k_len, device=dev).view(1, 1, 1, -1)
        if score_mod is not None:
            scores = score_mod(scores, b, h, qi, ki)
        if block_mask is not None:
            scores = scores.masked_fill(~block_mask.mask_mod(b, h, qi, ki), -math.inf)
    if is_causal:  # only reached with q_len == k_len
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], device=q.device), -math.inf)
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    if scores.dtype in (torch.float16, torch.bfloat16):
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    else:
        weights = torch.softmax(scores, dim=-1)
    if score_mod is not None or block_mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # rows masked out by score_mod/block_mask alone
    probs = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    return torch.matmul(probs, v), weights


@functools.cache
def _compiled_flex() -> Callable:
    """FlexAttention compiled once per process (eager Flex on CUDA is a slow reference implementation)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    score_mod: Callable | None,
    block_mask: object | None,
) -> Tensor:
    """FlexAttention with ``mask`` folded into the score modifier and ``is_causal`` into a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    user_mod = score_mod
    if mask is not None:
        full = mask.expand(batch, heads, q_len, k_len)  # a view; indexed inside the score_mod
        bool_mask = full.dtype == torch.bool

        def score_mod(score, b, h, q_idx, kv_idx):  # noqa: F811
            s = user_mod(score, b, h, q_idx, kv_idx) if user_mod is not None else score
            m = full[b, h, q_idx, kv_idx]
            return torch.where(m, s, -math.inf) if bool_mask else s + m

    if is_causal:  # q_len == k_len here

        def _causal(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx

        block_mask = create_block_mask(_causal, None, None, q_len, k_len, device=q.device)
    eager = not q.is_cuda or torch.compiler.is_compiling()  # CPU (small, tests) or traced by an outer compile
    fn = flex_attention if eager else _compiled_flex()
    return fn(
        q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
