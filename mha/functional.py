"""``mha.attention``: the one functional entry every module calls, and the table that picks its kernel.

Tensors are ``(batch, heads, seq, head_dim)``; masks follow SDPA (bool ``True`` = may attend, float = added
to the scores).  ``backend="auto"`` walks ``BACKEND_RULES`` top to bottom and uses the first rule that
applies; edit that list (or pass ``backend=...``) to override.  ``last_backend()`` tells which backend the
latest call used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .masks import _check_broadcast, _check_mask_dtype, and_masks, causal_mask

__all__ = [
    "attention",
    "last_backend",
    "force_backend",
    "clear_backend_cache",
    "select_backend",
    "AttentionCall",
    "BackendRule",
    "BACKEND_RULES",
]

BACKENDS = ("auto", "sdpa", "cudnn", "flash", "efficient", "math", "flex", "eager")
_SDPA_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
_STATE: dict[str, str | None] = {"last": None, "forced": None}


def last_backend() -> str | None:
    """Name of the backend the latest ``attention`` call ran (``None`` before the first call).

    One of ``"sdpa"`` (PyTorch's own SDPA choice, used on CPU), ``"cudnn"``, ``"flash"``, ``"efficient"``,
    ``"math"``, ``"flex"``, ``"eager"``.  Inside ``torch.compile`` the exact SDPA kernel is chosen at run time
    from a priority list; the name is then that list joined with ``">"`` (e.g.
    ``"cudnn>flash>efficient>math"``).
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


@dataclass(frozen=True)
class AttentionCall:
    """What the backend rules may look at: static facts about one ``attention`` call (no tensor values)."""

    device_type: str
    dtype: torch.dtype
    head_dim: int
    q_len: int
    k_len: int
    has_mask: bool  # an arbitrary (non-causal) mask tensor is present
    is_causal: bool
    gqa: bool
    dropout: bool
    flex: bool  # score_mod or block_mask given
    return_weights: bool
    requires_grad: bool = False
    batch_heads: int = 0  # batch * query heads: the number of (q_len x k_len) problems (0: unknown)


@dataclass(frozen=True)
class BackendRule:
    """``backends`` (a priority list; SDPA kernels fall back in that order) is used when ``applies(call)``."""

    reason: str
    applies: Callable[[AttentionCall], bool]
    backends: tuple[str, ...]


_HALF = (torch.float16, torch.bfloat16)


class _RuleTable(list):
    """The list type of ``BACKEND_RULES``: editing it in place forgets the memoised decisions and plans (and
    turns off ``_short_call``, which follows the shipped table only)."""


def _rules_edited(table: list) -> None:
    global _SHORT_TABLE
    if table is _SHIPPED_TABLE:  # (an edit undone, e.g. a rule swapped and put back, turns it on again)
        _SHORT_TABLE = table if tuple(table) == _SHIPPED_RULES else None
    clear_backend_cache()


def _edits(name: str) -> Callable:
    base = getattr(list, name)

    def method(self: _RuleTable, *args: object, **kwargs: object) -> object:
        result = base(self, *args, **kwargs)
        _rules_edited(self)
        return result

    method.__name__ = name
    return method


for _name in (
    "__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop", "remove",
    "clear", "sort", "reverse",
):  # fmt: skip
    setattr(_RuleTable, _name, _edits(_name))

#: Rules for ``backend="auto"``, first match wins.  Measured with forced SDPA backends on an H200 (torch 2.11,
#: bf16, 2026-11-22; ``bench/attention.py`` and BENCHMARKS.md): cuDNN was the fastest kernel at every shape
#: from 197 to 16,384 tokens (1.4-1.8x flash forward at >= 1,024 tokens), also with a boolean mask (3x the
#: memory-efficient kernel at (8, 16, 1024, 64)); at 64 tokens memory-efficient led; cuDNN raised for a
#: single query (a decode step), so it never comes first there.
BACKEND_RULES: list[BackendRule] = [
    BackendRule(
        "weights requested: only the eager path materialises them", lambda c: c.return_weights, ("eager",)
    ),
    BackendRule(
        "score_mod/block_mask with dropout: Flex has no dropout", lambda c: c.flex and c.dropout, ("eager",)
    ),
    BackendRule(
        "score_mod/block_mask needing grads on CPU: Flex has no CPU backward",
        lambda c: c.flex and c.requires_grad and c.device_type == "cpu",
        ("eager",),
    ),
    BackendRule("score_mod/block_mask: FlexAttention", lambda c: c.flex, ("flex",)),
    BackendRule(
        "not CUDA: PyTorch's SDPA picks its CPU kernel", lambda c: c.device_type != "cuda", ("sdpa",)
    ),
    BackendRule(
        "CUDA, one query (decode step): cuDNN raises there, flash/efficient serve it",
        lambda c: c.q_len == 1,
        ("flash", "efficient", "math"),
    ),
    BackendRule(
        "CUDA fp16/bf16, no mask, <= 256 keys, batch*heads <= 512 (inference with <= 128 keys excepted: the "
        "next rule): host time dominates and PyTorch's own SDPA choice has the least (H100, (16,12,197,64): "
        "0.021 ms fwd vs 0.028-0.037 for any kernel forced)",
        lambda c: (
            c.dtype in _HALF
            and c.k_len <= 256
            and c.head_dim <= 128
            and not c.has_mask
            and 0 < c.batch_heads <= 512
            and (c.requires_grad or c.k_len > 128)
        ),
        ("sdpa",),
    ),
    BackendRule(
        "CUDA fp16/bf16, <= 128 keys: memory-efficient led at 64 tokens (H100, (512,4,64,64): fwd 0.031 ms "
        "vs cuDNN 0.038, fwd+bwd level with cuDNN; at small batch*heads its forward too, (64,4,64,64): "
        "0.0058 vs 0.0075 ms GPU and a cheaper dispatch; cuDNN leads fwd+bwd there, 0.032 vs 0.037)",
        lambda c: c.dtype in _HALF and c.k_len <= 128 and c.head_dim <= 128,
        ("efficient", "cudnn", "flash", "math"),
    ),
    BackendRule(
        "CUDA fp16/bf16, head_dim <= 128, no arbitrary mask: cuDNN first (H100: 1.4-1.5x flash from 197 "
        "tokens at batch*heads >= 768, ViT-S/16 training (256,6,197,64) fwd+bwd 0.56 ms, efficient 1.23)",
        lambda c: c.dtype in _HALF and c.head_dim <= 128 and not c.has_mask,
        ("cudnn", "flash", "efficient", "math"),
    ),
    BackendRule(
        "CUDA fp16/bf16 with a mask: cuDNN (3x memory-efficient with a boolean mask), then memory-efficient",
        lambda c: c.has_mask and c.dtype in _HALF and c.head_dim <= 128,
        ("cudnn", "efficient", "math"),
    ),
    BackendRule(
        "CUDA with a mask otherwise: memory-efficient takes additive masks",
        lambda c: c.has_mask,
        ("efficient", "cudnn", "math"),
    ),
    BackendRule(
        "CUDA otherwise (fp32, head_dim > 128)", lambda c: True, ("flash", "efficient", "cudnn", "math")
    ),
]
BACKEND_RULES = _RuleTable(BACKEND_RULES)
_SHIPPED_TABLE, _SHIPPED_RULES = BACKEND_RULES, tuple(BACKEND_RULES)
_SHORT_TABLE: list[BackendRule] | None = BACKEND_RULES  # the shipped table, while it holds the shipped rules
_SDPA = F.scaled_dot_product_attention


def _short_call(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float | None) -> Tensor | None:
    """The shipped rules' answer for a plain call, without a look-up: ``F.sdpa`` itself, or ``None``.

    A plain call (unmasked ``auto``, no dropout, Flex or weights, outside ``force_backend``) goes to PyTorch's
    own SDPA choice under the shipped ``BACKEND_RULES`` when it is not on CUDA, or when it is a short
    half-precision CUDA call (the "host time dominates" rule).  Those calls are host-bound: their kernel
    takes less time than issuing it, so this test reads the shapes once and compares them to the rules'
    bounds instead of building and hashing a plan key (H100, (16, 12, 197, 64): ~3 us of a ~30 us call).
    It also checks what validation checks of such a call (4-D, equal batch, heads and head_dim, ``v`` shaped
    like ``k``); any call it does not take goes the validated way.  ``tests/mha`` checks it against
    ``select_backend``.  Traced by ``torch.compile`` like any code: the graph is the same F.sdpa call.
    """
    if BACKEND_RULES is not _SHORT_TABLE or _STATE["forced"] is not None:
        return None
    try:
        ks = k.shape
        cuda = q.is_cuda
        if cuda and (ks[-2] > 256 or ks[-1] > 128 or q.dtype not in _HALF):
            return None  # (a long CUDA call leaves here, after two reads)
        qs = q.shape
        if (
            len(qs) != 4
            or v.shape != ks
            or len(ks) != 4
            or qs[0] != ks[0]
            or qs[1] != ks[1]
            or qs[3] != ks[3]
            or (is_causal and qs[2] != ks[2])  # SDPA's is_causal is top-left aligned, ours bottom-right
        ):
            return None
        if cuda and not (  # the rest of the "host time dominates" rule, after the decode-step rule
            qs[2] != 1
            and 0 < qs[0] * qs[1] <= 512
            and (
                ks[2] > 128
                or torch.is_grad_enabled()
                and (q.requires_grad or k.requires_grad or v.requires_grad)
            )
        ):
            return None
    except (AttributeError, TypeError, IndexError):  # not 4-D tensors: the validated way raises clearly
        return None
    _STATE["last"] = "sdpa"
    if scale is not None:
        return _SDPA(q, k, v, None, 0.0, is_causal, scale=scale)
    return _SDPA(q, k, v, None, 0.0, True) if is_causal else _SDPA(q, k, v)


def select_backend(call: AttentionCall) -> tuple[str, ...]:
    """Priority list of backends for ``call`` from the first applicable rule in ``BACKEND_RULES``."""
    for rule in BACKEND_RULES:
        if rule.applies(call):
            return rule.backends
    return ("sdpa",)


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
    """Scaled dot-product attention with a kernel picked per call.

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
        backend: ``"auto"`` (see ``BACKEND_RULES``), ``"sdpa"``, ``"cudnn"``, ``"flash"``, ``"efficient"``,
            ``"math"``, ``"flex"`` or ``"eager"``.  A forced SDPA backend that cannot run the call raises.
        return_weights: also return the attention probabilities (uses the eager path).  They are the
            probabilities before dropout.

    Returns:
        ``out`` of shape ``(batch, heads, q_len, v_head_dim)``, and with ``return_weights`` also the weights
        ``(batch, heads, q_len, k_len)``.  A query row with every key masked gives zeros (and zero weights).
    """
    plannable = _plannable(mask, backend, dropout_p, score_mod, block_mask, return_weights)
    if plannable:
        out = _short_call(q, k, v, is_causal, scale)
        if out is not None:
            return out
        out = _run_plan(q, k, v, is_causal, scale)
        if out is not None:  # a signature seen (and validated) before: straight to its kernel
            return out
    _check_inputs(q, k, v, mask, backend, dropout_p, return_weights, score_mod, block_mask)
    if is_causal and block_mask is not None:
        raise ValueError(
            "is_causal=True with a block_mask: put causality into the block_mask's mask_mod instead"
        )
    return _attend(
        q,
        k,
        v,
        mask,
        is_causal,
        scale,
        dropout_p,
        score_mod,
        block_mask,
        backend,
        return_weights,
        True,
        plan_tried=plannable,
    )


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    dropout_p: float,
    score_mod: Callable | None,
    block_mask: object | None,
    backend: str,
    return_weights: bool,
    guard: bool,
    *,
    plan_tried: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``attention`` after validation (modules call this directly: their inputs are built, not given).

    ``guard=False`` promises that ``mask`` leaves every query row at least one key (e.g. a key-padding mask
    prepared by ``mha.masks.key_padding_to_sdpa``); then the fully-masked-row guard (an ``any``, an ``or``
    and a ``where`` per call, and a ``where`` in backward) is skipped.  The guard is still built for the
    rows a bottom-right causal mask empties (``q_len > k_len``).  ``plan_tried``: the caller already
    looked for a remembered plan (and found none).
    """
    fast = _plannable(mask, backend, dropout_p, score_mod, block_mask, return_weights)
    if fast and not plan_tried:
        out = _short_call(q, k, v, is_causal, scale)
        if out is not None:
            return out
        out = _run_plan(q, k, v, is_causal, scale)
        if out is not None:
            return out
    causal_in = is_causal
    forced = _STATE["forced"]
    if backend == "auto" and forced is not None and not return_weights:  # inside force_backend(...)
        flex_call = score_mod is not None or block_mask is not None
        if (forced in ("flex", "eager") or not flex_call) and not (forced == "flex" and dropout_p > 0.0):
            backend = forced  # a forced kernel that cannot run this call (e.g. math + score_mod) is not used
    q_len = q.shape[2]
    k_len = k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    empty_rows = guard and mask is not None  # could a query row be fully masked?
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    if is_causal and block_mask is None and (q_len != k_len or mask is not None):
        # SDPA's is_causal is top-left aligned and cannot be combined with a mask: build the mask ourselves
        if q_len > 1:  # (a single query, the decode step, sees every key: no causal mask at all)
            mask = and_masks(mask, _cached_causal_mask(q_len, k_len, q.device), q.dtype)
            empty_rows = empty_rows or q_len > k_len
        is_causal = False

    keep = None
    if mask is not None and empty_rows:
        # a fully masked row would give NaN (and NaN grads): let it attend everywhere, then zero it
        keep = (
            mask.any(-1, keepdim=True) if mask.dtype == torch.bool else (mask > float("-inf")).any(-1, True)
        )
        mask = mask | ~keep if mask.dtype == torch.bool else torch.where(keep, mask, 0.0)

    if backend == "auto":
        order = _decide(q, k, v, mask, is_causal, dropout_p, gqa, score_mod, block_mask, return_weights)
        if fast and forced is None and mask is None:  # (a causal call that needed a built mask is not)
            _remember_plan(q, k, v, causal_in, is_causal, gqa, order)
    else:
        order = (backend,)

    weights = None
    if order[0] == "eager":
        out, weights = _eager(q, k, v, mask, is_causal, scale, dropout_p, score_mod, block_mask)
        _STATE["last"] = "eager"
    elif order[0] == "flex":
        out = _flex(q, k, v, mask, is_causal, scale, score_mod, block_mask, gqa)
        _STATE["last"] = "flex"
    else:
        out = _sdpa(q, k, v, mask, is_causal, scale, dropout_p, gqa, order)

    if keep is not None:
        out = torch.where(keep, out, 0.0)
        if weights is not None:
            weights = torch.where(keep, weights, 0.0)
    if return_weights:
        return out, weights
    return out


_CAUSAL: dict[tuple, Tensor] = {}


def _cached_causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """``causal_mask(q_len, k_len)``, built once per ``(q_len, k_len, device)`` in eager mode (read-only)."""
    if torch.compiler.is_compiling():
        return causal_mask(q_len, k_len, device=device)
    key = (q_len, k_len, device)
    mask = _CAUSAL.get(key)
    if mask is None:
        if len(_CAUSAL) > 256:
            _CAUSAL.clear()
        mask = _CAUSAL[key] = causal_mask(q_len, k_len, device=device)
    return mask


_DECISIONS: dict[tuple, tuple[str, ...]] = {}


def _decide(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    gqa: bool,
    score_mod: Callable | None,
    block_mask: object | None,
    return_weights: bool,
) -> tuple[str, ...]:
    """Priority list for an ``auto`` call: the rules, then (eager CUDA) the first kernel that takes it.

    Eager calls memoise the answer per call signature (shapes, strides, dtypes, flags), so a training loop
    pays for the rules and the capability checks once.  ``clear_backend_cache()`` forgets it.
    """
    compiling = torch.compiler.is_compiling()
    key = None
    if not compiling:
        key = (
            _signature(q, k, v, is_causal)
            + _strides_and_flags(q, k, v)
            + (
                None if mask is None else (mask.dtype, mask.shape, mask.stride()),
                dropout_p > 0.0,
                score_mod is not None or block_mask is not None,
                return_weights,
            )
        )
        order = _DECISIONS.get(key)
        if order is not None:
            return order
    call = AttentionCall(
        device_type=q.device.type,
        dtype=q.dtype,
        head_dim=q.shape[-1],
        q_len=q.shape[2],
        k_len=k.shape[2],
        has_mask=mask is not None,
        is_causal=is_causal,
        gqa=gqa,
        dropout=dropout_p > 0.0,
        flex=score_mod is not None or block_mask is not None,
        return_weights=return_weights,
        requires_grad=torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad),
        batch_heads=q.shape[0] * q.shape[1],
    )
    order = select_backend(call)
    if q.is_cuda and not compiling and order[0] in _SDPA_BACKENDS:
        order = _first_usable(q, k, v, mask, is_causal, dropout_p, gqa, order)
    if key is not None:
        if len(_DECISIONS) > 4096:
            _DECISIONS.clear()
        _DECISIONS[key] = order
    return order


def clear_backend_cache() -> None:
    """Forget memoised ``auto`` decisions and plans (editing ``BACKEND_RULES`` in place does this itself)."""
    _DECISIONS.clear()
    _PLANS.clear()


# ---- the fast path of eager, unmasked ``auto`` calls
# A training loop calls attention with the same few signatures over and over.  Once a signature has been
# validated and decided (the slow path above), its kernel call is kept as a "plan" keyed by everything the
# validation and the rules read: shapes, dtypes, device, causality, grad mode and the rule table.  A later
# call with that key skips ``_check_inputs`` and ``_decide`` and calls the kernel (calls that
# ``_short_call`` takes, the host-bound ViT-sized ones among them, need no plan: they skip even the key).
# Strides and the global SDPA flags are not in the key (reading them costs ~0.5 us a call): a "sdpa" plan
# calls F.sdpa, which reads them itself; a one-kernel plan looks its kernel call up by them (one entry per
# layout the slow path has decided and checked, up to 8), so an unseen layout is decided first.
# Only unmasked calls without dropout, Flex or weights, outside ``force_backend`` and ``torch.compile``,
# take a plan.
_PLANS: dict[tuple, Callable[[Tensor, Tensor, Tensor, float | None], Tensor | None]] = {}


def _signature(q: Tensor, k: Tensor, v: Tensor, is_causal: bool) -> tuple:
    """What validation and the rules read of an unmasked call: the plans' key (decisions add more)."""
    return (
        q.shape,
        k.shape,
        v.shape,
        q.dtype,
        k.dtype,
        v.dtype,
        q.device,
        is_causal,
        torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad),
        id(BACKEND_RULES),
        len(BACKEND_RULES),
    )


def _plannable(
    mask: Tensor | None,
    backend: str,
    dropout_p: float,
    score_mod: Callable | None,
    block_mask: object | None,
    return_weights: bool,
) -> bool:
    """Whether a call may take (and make) a plan: unmasked ``auto``, no dropout, Flex or weights."""
    return (
        mask is None
        and backend == "auto"
        and not dropout_p
        and score_mod is None
        and block_mask is None
        and not return_weights
    )


def _run_plan(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float | None) -> Tensor | None:
    """Run the remembered kernel call of this signature; ``None``: no plan (compiling, new, forced, stale).

    ``is_compiling`` is tested first, so that a traced call never reads ``_PLANS``."""
    if torch.compiler.is_compiling() or not _PLANS or _STATE["forced"] is not None:
        return None
    try:
        plan = _PLANS.get(_signature(q, k, v, is_causal))
    except (AttributeError, TypeError):  # not tensors: the slow path raises the clear error
        return None
    return None if plan is None else plan(q, k, v, scale)


def _remember_plan(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal_in: bool,
    is_causal: bool,
    gqa: bool,
    order: tuple[str, ...],
) -> None:
    """After a slow-path decision: keep the kernel call when it needs no flags, masks or fallbacks.

    ``causal_in`` is the caller's flag (part of the key), ``is_causal`` what the kernel gets (a single
    decode query sees every key: not causal for the kernel).
    """
    if torch.compiler.is_compiling():
        return
    plan = None
    if order == ("sdpa",):  # PyTorch's own choice: F.sdpa reads strides and the global SDPA flags itself
        sdpa = F.scaled_dot_product_attention
        if is_causal or gqa:
            kwargs = {"is_causal": is_causal, "enable_gqa": gqa}

            def plan(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
                _STATE["last"] = "sdpa"
                return sdpa(q, k, v, scale=scale, **kwargs)

        else:  # the ViT call: no keyword arguments to parse (~0.4 us of the ~20 us a small call takes)

            def plan(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
                _STATE["last"] = "sdpa"
                return sdpa(q, k, v) if scale is None else sdpa(q, k, v, scale=scale)

    elif (direct := _direct_kernel(order, gqa, q.shape[-1])) is not None:
        name = order[0]

        def run(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
            _STATE["last"] = name
            return direct(q, k, v, 0.0, is_causal, scale)

        # the decision checked this kernel against these strides and flags: a call of the same signature
        # with others (a strided view from a fused projection, a backend switched off) is decided again, and
        # each layout, up to 8 per signature, keeps its own kernel call
        layout = _strides_and_flags(q, k, v)
        layouts = getattr(_PLANS.get(_signature(q, k, v, causal_in)), "layouts", None)
        if layouts is not None:
            if len(layouts) < 8:
                layouts.setdefault(layout, run)
            return
        layouts = {layout: run}

        def plan(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor | None:
            call = layouts.get(_strides_and_flags(q, k, v))
            return None if call is None else call(q, k, v, scale)

        plan.layouts = layouts

    if plan is not None:
        if len(_PLANS) > 4096:
            _PLANS.clear()
        _PLANS.setdefault(_signature(q, k, v, causal_in), plan)


def _strides_and_flags(q: Tensor, k: Tensor, v: Tensor) -> tuple:
    """What a kernel's capability check reads besides the signature: strides and the SDPA flags."""
    return q.stride(), k.stride(), v.stride(), _flag_state() if q.is_cuda else None


def _check_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    backend: str,
    dropout_p: float,
    return_weights: bool,
    score_mod: Callable | None,
    block_mask: object | None,
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}; "
                "for (batch, seq, embed) inputs use mha.MultiHeadAttention"
            )
    if not (q.shape[0] == k.shape[0] == v.shape[0]):
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share (kv_heads, k_len): k {tuple(k.shape)} vs v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head_dim differ: {q.shape[-1]} vs {k.shape[-1]}")
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a Tensor or None, got {type(mask).__name__}")
        _check_mask_dtype(mask, "mask")
        _check_broadcast(mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]), "mask")
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


def _expand_kv(x: Tensor, groups: int) -> Tensor:
    """``(B, Hkv, L, D) -> (B, Hkv * groups, L, D)``, each kv head repeated for its query-head group."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _eager(
    q: Tensor,
    k: Tensor,
    v: Tensor,
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
        b, h, qi, ki = _index_grid(scores)
        if score_mod is not None:
            scores = score_mod(scores, b, h, qi, ki)
        if block_mask is not None:
            scores = scores.masked_fill(~block_mask.mask_mod(b, h, qi, ki), float("-inf"))
    if is_causal:  # only reached with q_len == k_len
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], device=q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if scores.dtype in _HALF:
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    else:
        weights = torch.softmax(scores, dim=-1)
    if score_mod is not None or block_mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # rows masked out by score_mod/block_mask alone
    probs = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    return torch.matmul(probs, v), weights


def _index_grid(scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Broadcastable (b, h, q_idx, kv_idx) index tensors for evaluating Flex mods eagerly."""
    batch, heads, q_len, k_len = scores.shape
    dev = scores.device
    return (
        torch.arange(batch, device=dev).view(-1, 1, 1, 1),
        torch.arange(heads, device=dev).view(1, -1, 1, 1),
        torch.arange(q_len, device=dev).view(1, 1, -1, 1),
        torch.arange(k_len, device=dev).view(1, 1, 1, -1),
    )


_FLEX_COMPILED: dict[str, Callable] = {}


def _flex_fn(device_type: str) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda" or torch.compiler.is_compiling():
        return flex_attention  # eager flex on CPU (small, tests); inside an outer compile it is traced anyway
    if "cuda" not in _FLEX_COMPILED:
        _FLEX_COMPILED["cuda"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX_COMPILED["cuda"]


def _flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    score_mod: Callable | None,
    block_mask: object | None,
    gqa: bool,
) -> Tensor:
    from torch.nn.attention.flex_attention import create_block_mask

    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    user_mod = score_mod
    if mask is not None:
        full = mask.expand(batch, heads, q_len, k_len)  # a view; indexed inside the score_mod

        if full.dtype == torch.bool:

            def score_mod(score, b, h, q_idx, kv_idx):  # noqa: F811
                s = user_mod(score, b, h, q_idx, kv_idx) if user_mod is not None else score
                return torch.where(full[b, h, q_idx, kv_idx], s, float("-inf"))
        else:

            def score_mod(score, b, h, q_idx, kv_idx):  # noqa: F811
                s = user_mod(score, b, h, q_idx, kv_idx) if user_mod is not None else score
                return s + full[b, h, q_idx, kv_idx]

    if is_causal:  # q_len == k_len here

        def _causal(b, h, q_idx, kv_idx):
            return q_idx >= kv_idx

        block_mask = create_block_mask(_causal, None, None, q_len, k_len, device=q.device)
    out = _flex_fn(q.device.type)(
        q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa
    )
    return out


def _sdpa(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    scale: float | None,
    dropout_p: float,
    gqa: bool,
    order: tuple[str, ...],
) -> Tensor:
    def call(k: Tensor, v: Tensor, gqa: bool) -> Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=gqa
        )

    if order == ("sdpa",):
        _STATE["last"] = "sdpa"
        return call(k, v, gqa)
    compiling = torch.compiler.is_compiling()
    if gqa and order[0] in ("cudnn", "efficient"):  # these kernels take no enable_gqa: repeat k/v heads
        groups = q.shape[1] // k.shape[1]
        k, v, gqa = _expand_kv(k, groups), _expand_kv(v, groups), False
    _STATE["last"] = ">".join(order)
    if mask is None and not compiling:
        direct = _direct_kernel(order, gqa, q.shape[-1])
        if direct is not None:
            return direct(q, k, v, dropout_p, is_causal, scale)
    if compiling or len(order) > 1:  # traceable, and SDPA falls back along the list
        with sdpa_kernel([_SDPA_BACKENDS[name] for name in order], set_priority=True):
            return call(k, v, gqa)
    return _run_only(order[0], lambda: call(k, v, gqa))


def _needs_lse(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)


# Eager CUDA calls without a mask whose kernel is already decided (and checked by ``_first_usable``) go
# straight to that kernel's ATen op, as ``F.scaled_dot_product_attention`` itself does after its own choice:
# no backend-flag flipping, no second selection.  At ViT sizes (16, 12, 197, 64) the host time of a call is
# longer than the kernel, so this is what keeps ``auto`` level with SDPA there.  Masked calls keep the SDPA
# path (it converts and aligns masks for each kernel).
_DIRECT: dict[str, Callable[[Tensor, Tensor, Tensor, float, bool, float | None], Tensor]] = {
    "cudnn": lambda q, k, v, p, causal, scale: torch._scaled_dot_product_cudnn_attention(
        q, k, v, None, _needs_lse(q, k, v), p, causal, False, scale=scale
    )[0],
    "flash": lambda q, k, v, p, causal, scale: torch._scaled_dot_product_flash_attention(
        q, k, v, p, causal, False, scale=scale
    )[0],
    "efficient": lambda q, k, v, p, causal, scale: torch._scaled_dot_product_efficient_attention(
        q, k, v, None, _needs_lse(q, k, v), p, causal, scale=scale
    )[0],
}


def _direct_kernel(order: tuple[str, ...], gqa: bool, head_dim: int) -> Callable | None:
    """The ``_DIRECT`` op for a checked one-kernel decision of an unmasked, non-GQA call, else ``None``."""
    if type(order) is not _Checked or gqa or (order[0] == "flash" and head_dim % 8):
        return None
    return _DIRECT.get(order[0])


# (is_enabled, enable) per SDPA backend: flipping four flags costs ~4 us; ``sdpa_kernel`` costs ~30-70 us,
# which is more than the whole kernel at ViT sizes.
_SDPA_FLAGS = {
    "cudnn": (torch.backends.cuda.cudnn_sdp_enabled, torch.backends.cuda.enable_cudnn_sdp),
    "flash": (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.enable_flash_sdp),
    "efficient": (
        torch.backends.cuda.mem_efficient_sdp_enabled,
        torch.backends.cuda.enable_mem_efficient_sdp,
    ),
    "math": (torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.enable_math_sdp),
}


def _flag_state() -> tuple[bool, bool, bool, bool]:
    """The four global SDPA backend flags (the C getters: a quarter of the Python wrappers' cost)."""
    c = torch._C
    return (
        c._get_cudnn_sdp_enabled(),
        c._get_flash_sdp_enabled(),
        c._get_mem_efficient_sdp_enabled(),
        c._get_math_sdp_enabled(),
    )


def _run_only(name: str, fn: Callable[[], Tensor]) -> Tensor:
    """Run ``fn`` with only SDPA backend ``name`` enabled (eager mode), restoring the flags afterwards."""
    previous = [is_enabled() for is_enabled, _ in _SDPA_FLAGS.values()]
    try:
        for backend, (_, enable) in _SDPA_FLAGS.items():
            enable(backend == name)
        return fn()
    finally:
        for (_, enable), was in zip(_SDPA_FLAGS.values(), previous, strict=True):
            enable(was)


class _Checked(tuple):
    """A one-kernel decision whose capability check passed (may take the ``_DIRECT`` path)."""


def _first_usable(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    gqa: bool,
    order: tuple[str, ...],
) -> tuple[str, ...]:
    """Eager mode on CUDA: find the first backend of ``order`` that accepts the call, so we know what ran."""
    checks = {
        "cudnn": torch.backends.cuda.can_use_cudnn_attention,
        "flash": torch.backends.cuda.can_use_flash_attention,
        "efficient": torch.backends.cuda.can_use_efficient_attention,
    }
    try:
        for name in order:
            if not _SDPA_FLAGS[name][0]():  # disabled globally by the user (torch.backends.cuda.enable_*_sdp)
                continue
            if name == "math":
                return ("math",)
            kk, vv, g = k, v, gqa
            if gqa and name in ("cudnn", "efficient"):  # stride-0 head views: enough for a capability check
                kk = k.as_strided((k.shape[0], q.shape[1], *k.shape[2:]), (k.stride(0), 0, *k.stride()[2:]))
                vv = v.as_strided((v.shape[0], q.shape[1], *v.shape[2:]), (v.stride(0), 0, *v.stride()[2:]))
                g = False
            params = torch.backends.cuda.SDPAParams(q, kk, vv, mask, dropout_p, is_causal, g)
            if checks[name](params):
                return _Checked((name,))
    except (RuntimeError, TypeError):  # an older/newer signature: let SDPA's priority list decide
        return order
    return order
