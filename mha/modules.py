"""``MultiHeadAttention``: a drop-in for ``nn.MultiheadAttention(batch_first=True)`` with GQA, RoPE/ALiBi,
qk-norm, a KV cache, zeros (not NaN) on fully masked rows, and a fast default (``need_weights=False``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import KVCache
from .functional import BACKENDS, _attend
from .masks import and_masks, torch_to_sdpa_mask
from .positional import RotaryEmbedding, _check_positions, alibi_bias, alibi_slopes

__all__ = ["MultiHeadAttention", "load_timm_attention"]

POSITIONALS = (None, "rope", "alibi")


class MultiHeadAttention(nn.Module):
    """Multi-head attention over ``(batch, seq, embed_dim)`` tensors, for self- and cross-attention.

    A drop-in for ``nn.MultiheadAttention(batch_first=True)``: the shared arguments keep their names and
    meanings (``attn_mask``/``key_padding_mask``: bool ``True`` = masked OUT, float = added to the scores) and
    ``from_torch`` / ``load_state_dict`` accept its weights unchanged (same parameter names).  One deliberate
    difference: ``need_weights`` defaults to ``False``; PyTorch's default ``True`` materialises the weights
    and runs ~2x slower.  Fully masked query rows give zeros instead of NaN.

    Args:
        embed_dim: model size ``E``; must be divisible by ``num_heads``.
        num_heads: query heads ``H``; ``head_dim = E // H``.
        num_kv_heads: key/value heads for grouped-query attention (must divide ``num_heads``; default
            ``num_heads``; 1 = multi-query).
        kdim, vdim: feature sizes of ``key``/``value`` for cross-attention (default ``embed_dim``).
        bias: bias on the q/k/v in-projection (and on the output projection unless ``out_bias`` says
            otherwise).
        out_bias: bias on the output projection (default: ``bias``); timm's ``qkv_bias=False`` keeps it
            ``True``.
        dropout: dropout on the attention probabilities, training only.
        qk_norm: LayerNorm over ``head_dim`` on queries and keys (ViT-22B / timm ``qk_norm``).
        positional: ``None``, ``"rope"`` (rotary, on q/k of self-attention) or ``"alibi"`` (linear
            distance bias).  Absolute (sinusoidal/learned) positions belong on the embeddings, outside
            this module.
        batch_first: ``True`` for ``(batch, seq, embed)``; ``False`` for ``(seq, batch, embed)``.
        rope_base: RoPE frequency base.
        backend: ``mha.attention`` backend (default ``"auto"``); change the attribute to force one.

    Parameters (``nn.MultiheadAttention`` names): ``in_proj_weight`` ``(E + 2 * Hkv * head_dim, E)`` when
    ``kdim == vdim == E`` (one fused q/k/v matmul for self-attention), else ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``; ``in_proj_bias``; ``out_proj`` (``nn.Linear``);
    ``q_norm``/``k_norm``.
    """

    batch_first: Final[bool]
    _qkv_same_embed_dim: Final[bool]

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        qk_norm: bool = False,
        positional: str | None = None,
        batch_first: bool = True,
        rope_base: float = 10000.0,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}); "
                f"e.g. num_heads={_divisor_near(embed_dim, num_heads)}"
            )
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if not isinstance(num_kv_heads, int) or num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        if positional not in POSITIONALS:
            raise ValueError(f"positional must be one of {POSITIONALS}, got {positional!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.positional = positional
        self.backend = backend
        kv_dim = num_kv_heads * self.head_dim
        self._split = (embed_dim, kv_dim, kv_dim)
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(embed_dim + 2 * kv_dim, embed_dim, **factory))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(kv_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(kv_dim, self.vdim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(embed_dim + 2 * kv_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(
            embed_dim, embed_dim, bias=bias if out_bias is None else out_bias, **factory
        )
        self.q_norm = nn.LayerNorm(self.head_dim, **factory) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, **factory) if qk_norm else nn.Identity()
        self.rope = RotaryEmbedding(self.head_dim, base=rope_base) if positional == "rope" else None
        if positional == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(num_heads).to(device), persistent=False)
        else:
            self.alibi_slopes = None
        # plain self-attention (fused qkv, no GQA/positions/qk-norm) may take forward's short path
        self._plain = self._qkv_same_embed_dim and num_kv_heads == num_heads and not (qk_norm or positional)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Same initialisation as ``nn.MultiheadAttention``."""
        for weight in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if weight is not None:
                nn.init.xavier_uniform_(weight)
        for bias in (self.in_proj_bias, self.out_proj.bias):
            if bias is not None:
                nn.init.zeros_(bias)

    def extra_repr(self) -> str:
        extra = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if self.num_kv_heads != self.num_heads:
            extra += f", num_kv_heads={self.num_kv_heads}"
        if not self._qkv_same_embed_dim:
            extra += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.positional:
            extra += f", positional={self.positional!r}"
        return extra + f", dropout={self.dropout}"

    # ---- projections ------------------------------------------------------------------------
    def _bias(self, i: int) -> Tensor | None:
        if self.in_proj_bias is None:
            return None
        start = sum(self._split[:i])
        return self.in_proj_bias[start : start + self._split[i]]

    def _project(
        self, query: Tensor, key: Tensor | None, value: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """q from ``query``; k/v from ``key``/``value`` (``None``, ``None`` when ``key`` is ``None``).

        The fused ``in_proj_weight`` is ``split`` into q and kv parts (backward: one ``cat``; slicing would
        zero-fill a full-size gradient per slice); k/v take one matmul when ``key is value``.
        """
        if not self._qkv_same_embed_dim:
            q = F.linear(query, self.q_proj_weight, self._bias(0))
            if key is None:
                return q, None, None
            k = F.linear(key, self.k_proj_weight, self._bias(1))
            return q, k, F.linear(value, self.v_proj_weight, self._bias(2))
        e, w, b, dev = self._split[0], self.in_proj_weight, self.in_proj_bias, query.device.type
        if w.dtype == torch.float32 and dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
            dtype = torch.get_autocast_dtype(dev)  # cast once before the split (autocast casts every slice)
            w, b = w.to(dtype), None if b is None else b.to(dtype)
        w_q, w_kv = w.split((e, w.shape[0] - e))
        b_q = b_kv = None
        if b is not None:
            b_q, b_kv = b.split((e, b.shape[0] - e))
        q = F.linear(query, w_q, b_q)
        if key is None:
            return q, None, None
        if key is value:  # fused k/v matmul for cross-attention on one memory
            k, v = F.linear(key, w_kv, b_kv).split(self._split[1:], dim=-1)
            return q, k, v
        w_k, w_v = w_kv.split(self._split[1:])
        b_k, b_v = (None, None) if b_kv is None else b_kv.split(self._split[1:])
        return q, F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    # ---- forward ------------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        cache: KVCache | None = None,
        positions: Tensor | None = None,
        sdpa_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key``/``value`` (``key=None``: self-attention on ``query``).

        Args:
            query: ``(batch, q_len, embed_dim)`` (``(q_len, batch, embed_dim)`` if not ``batch_first``;
                ``(q_len, embed_dim)`` unbatched).
            key, value: ``(batch, k_len, kdim)`` / ``(batch, k_len, vdim)``; ``None`` for self-attention
                (``key is query`` is also treated as self-attention and uses the fused projection).  ``value``
                defaults to ``key``.
            key_padding_mask: ``(batch, k_len)``; bool ``True`` = padding (ignored), float = added.  With a
                self-attention cache ``k_len`` counts every cached key plus the new ones.
            attn_mask: ``(q_len, k_len)`` or ``(batch * num_heads, q_len, k_len)`` (or 4-D broadcastable to
                ``(batch, num_heads, q_len, k_len)``); bool ``True`` = NOT allowed to attend, float = added.
            is_causal: causal mask (bottom-right aligned; with a cache the new queries see every cached key).
                Unlike ``nn.MultiheadAttention`` no ``attn_mask`` is needed; if one is given both apply.
            need_weights: also return attention weights (slower; default ``False`` -- differs from PyTorch).
            average_attn_weights: average the returned weights over heads.
            cache: ``KVCache()`` for self-attention decoding (new keys are appended; RoPE/ALiBi positions
                continue from ``cache.seq_len``); ``KVCache(static=True)`` for cross-attention (memory keys
                are projected once, on the first call, then reused; ``key`` may then be ``None``).
            positions: ``(q_len,)`` or ``(batch, q_len)`` integer positions for RoPE/ALiBi
                (default ``cache.seq_len + arange(q_len)``).
            sdpa_mask: an SDPA-convention mask broadcastable to ``(batch, num_heads, q_len, k_len)`` that
                leaves every query row a key (not checked: no fully-masked-row guard), e.g. from
                ``mha.masks.key_padding_to_sdpa``.  Combines with ``attn_mask``/``key_padding_mask``.

        Returns:
            ``(output, weights)``: output like ``query``; weights ``(batch, q_len, k_len)`` when averaged,
            ``(batch, num_heads, q_len, k_len)`` otherwise, or ``None`` when ``need_weights`` is ``False``.
        """
        if (
            key is None
            and cache is None
            and attn_mask is None
            and sdpa_mask is None
            and positions is None
            and not need_weights
            and self._plain
            and self.batch_first
            and isinstance(query, Tensor)
            and query.dim() == 3
            and query.shape[-1] == self.embed_dim
            and query.dtype == self.out_proj.weight.dtype
            and (
                key_padding_mask is None
                or not is_causal
                and isinstance(key_padding_mask, Tensor)
                and key_padding_mask.dtype == torch.bool
                and key_padding_mask.shape == query.shape[:2]
            )
        ):
            # the common cases (a ViT / encoder block, a padded text batch) in as few host operations as
            # timm's Attention: at small shapes the host time of forward + backward is the cost, not kernels
            b, n, e = query.shape
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            q, k, v = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            dropout_p = self.dropout if self.training else 0.0
            if key_padding_mask is None:
                out = _attend(q, k, v, is_causal=is_causal, dropout_p=dropout_p, backend=self.backend)
                return self.out_proj(out.transpose(1, 2).reshape(b, n, e)), None
            # additive, as SDPA would make it: a sequence of padding only gets a zero attention output
            mask = torch.zeros(b, 1, 1, n, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill_(key_padding_mask.view(b, 1, 1, n), float("-inf"))
            out = _attend(q, k, v, mask=mask, dropout_p=dropout_p, backend=self.backend)
            return self.out_proj(out.transpose(1, 2).reshape(b, n, e)), None
        if not isinstance(query, Tensor):
            raise TypeError(f"query must be a Tensor, got {type(query).__name__}")
        dtype = self.out_proj.weight.dtype
        if not query.is_floating_point() or (
            query.dtype != dtype and not torch.is_autocast_enabled(query.device.type)
        ):
            raise TypeError(
                f"query has dtype {query.dtype} but the module's weights are {dtype}: cast the input "
                f"(x.to({dtype})) or the module (.to(dtype)), or run under torch.autocast"
            )
        static = cache is not None and cache.static
        is_self = key is None and not static or (key is query and (value is None or value is query))
        if value is None and key is not None:
            value = key
        if key is None and static and cache.is_empty:
            raise ValueError(
                "a static (cross-attention) KVCache is empty: pass the memory as key on the first call"
            )
        if cache is not None and is_self == static:
            kind = "self-attention" if is_self else "cross-attention"
            raise ValueError(
                f"{kind} got a KVCache(static={static}); use KVCache() for self-attention and "
                "KVCache(static=True) for cross-attention"
            )
        if not is_self and self.positional is not None:
            raise ValueError(
                f"positional={self.positional!r} applies to self-attention only; build the cross-attention "
                "module with positional=None"
            )

        unbatched = query.dim() == 2
        if query.dim() not in (2, 3):
            raise ValueError(
                f"query must be (batch, seq, {self.embed_dim}) or unbatched (seq, {self.embed_dim}), "
                f"got shape {tuple(query.shape)}"
            )
        if unbatched:
            query = query.unsqueeze(0 if self.batch_first else 1)
            key = None if key is None else key.unsqueeze(0 if self.batch_first else 1)
            value = None if value is None else value.unsqueeze(0 if self.batch_first else 1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query = query.transpose(0, 1)
            key = None if key is None else key.transpose(0, 1)
            value = None if value is None else value.transpose(0, 1)
        if query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"query last dim must be embed_dim={self.embed_dim}, got shape {tuple(query.shape)}"
            )
        batch, q_len, _ = query.shape

        # ---- projections -> (B, heads, seq, head_dim)
        if is_self and self._qkv_same_embed_dim:  # one fused matmul: (B, L, E + 2 * kv_dim)
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).split(self._split, dim=-1)
        elif is_self:
            q, k, v = self._project(query, query, query)
        else:
            if static and not cache.is_empty:
                key = value = None
            else:
                self._check_kv(key, value, batch)
            q, k, v = self._project(query, key, value)
        qk_norm = not isinstance(self.q_norm, nn.Identity)  # (skip two no-op module calls otherwise)
        q = q.view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        if qk_norm:
            q = self.q_norm(q)
        if k is not None:
            k = k.view(batch, k.shape[1], self.num_kv_heads, self.head_dim).transpose(1, 2)
            if qk_norm:
                k = self.k_norm(k)
            v = v.view(batch, v.shape[1], self.num_kv_heads, -1).transpose(1, 2)

        q_pos = None
        if self.positional is not None:
            offset = 0 if cache is None else cache.seq_len
            if positions is None:
                q_pos = torch.arange(offset, offset + q_len, device=query.device)
            else:
                q_pos = _check_positions(positions, q_len, batch)
            if self.rope is not None:
                q, k = self.rope(q, q_pos), self.rope(k, q_pos)
        elif positions is not None:
            raise ValueError(
                "positions were given but this module has positional=None; they would be ignored"
            )
        k_pos = q_pos
        if cache is not None:
            k, v = cache.update(k, v, q_pos if self.alibi_slopes is not None else None)
            if self.alibi_slopes is not None:
                k_pos = cache.positions
            if cache.mask is not None:  # a static cache: only the positions written so far count
                sdpa_mask = and_masks(sdpa_mask, cache.mask, q.dtype)
        k_len = k.shape[2]

        mask = None
        if attn_mask is not None or key_padding_mask is not None:
            mask = torch_to_sdpa_mask(
                attn_mask,
                key_padding_mask,
                batch=batch,
                num_heads=self.num_heads,
                q_len=q_len,
                k_len=k_len,
                dtype=q.dtype,
            )
        guard = mask is not None  # only these masks can leave a query row without keys
        if sdpa_mask is not None:
            mask = and_masks(mask, sdpa_mask, q.dtype)
        if self.alibi_slopes is not None:
            mask = and_masks(mask, alibi_bias(self.alibi_slopes, q_pos, k_pos, q.dtype), q.dtype)
        result = _attend(
            q,
            k,
            v,
            mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend if not need_weights else "auto",
            return_weights=need_weights,
            guard=guard,
        )
        out, weights = result if need_weights else (result, None)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, q_len, -1))  # (B, H, Lq, Dv) -> (B, Lq, H*Dv)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights

    def _check_kv(self, key: Tensor | None, value: Tensor | None, batch: int) -> None:
        if key is None or value is None:
            raise ValueError("cross-attention needs key (and value, default key)")
        if key.dim() != 3 or value.dim() != 3:
            raise ValueError(f"key/value must be 3-D, got {tuple(key.shape)} and {tuple(value.shape)}")
        if key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(
                f"key/value last dims must be kdim={self.kdim} and vdim={self.vdim}, "
                f"got {key.shape[-1]} and {value.shape[-1]}"
            )
        if key.shape[:2] != value.shape[:2] or key.shape[0] != batch:
            raise ValueError(
                f"key and value must share (batch, seq) with batch={batch}: got key {tuple(key.shape)}, "
                f"value {tuple(value.shape)}"
            )

    # ---- loaders ------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """An equivalent module (same outputs, dtype and device) built from an ``nn.MultiheadAttention``."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"from_torch expects nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported; build the module without them")
        ref = module.out_proj.weight
        new = cls(
            module.embed_dim,
            module.num_heads,
            kdim=module.kdim,
            vdim=module.vdim,
            bias=module.in_proj_bias is not None,
            out_bias=module.out_proj.bias is not None,
            dropout=module.dropout,
            batch_first=module.batch_first,
            device=ref.device,
            dtype=ref.dtype,
        )
        new.load_state_dict(module.state_dict())
        return new.train(module.training)


def load_timm_attention(
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    num_heads: int | None = None,
    *,
    qk_norm_eps: float = 1e-5,
) -> MultiHeadAttention:
    """Build a ``MultiHeadAttention`` from timm's ``Attention`` (fused ``qkv``, ``proj``, optional q/k norms).

    Args:
        module_or_state_dict: a ``timm.layers.Attention`` module, or its state dict (then ``num_heads`` is
            required).  Keys: ``qkv.weight``, ``qkv.bias``?, ``proj.weight``, ``proj.bias``?, ``q_norm.*``?,
            ``k_norm.*``?.
        num_heads: number of heads (read from the module when a module is given).
        qk_norm_eps: LayerNorm eps of q/k norms when loading from a state dict.

    Returns:
        A module with the same outputs (timm's ``proj_drop`` is not part of it: apply dropout after it if
        needed).
    """
    dropout = 0.0
    if isinstance(module_or_state_dict, nn.Module):
        module = module_or_state_dict
        if not hasattr(module, "qkv") or not hasattr(module, "proj"):
            raise TypeError(f"expected timm Attention with .qkv and .proj, got {type(module).__name__}")
        if not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
            raise ValueError("timm Attention with scale_norm=True (a norm before proj) is not supported")
        for name in ("q_norm", "k_norm"):
            norm = getattr(module, name, nn.Identity())
            if not isinstance(norm, nn.Identity | nn.LayerNorm):
                raise ValueError(
                    f"timm Attention {name} must be LayerNorm or Identity, got {type(norm).__name__}"
                )
            if isinstance(norm, nn.LayerNorm):
                qk_norm_eps = norm.eps
        num_heads = module.num_heads
        dropout = float(getattr(getattr(module, "attn_drop", None), "p", 0.0))
        state = module.state_dict()
    else:
        state = dict(module_or_state_dict)
        if num_heads is None:
            raise ValueError("num_heads is required when loading timm Attention from a state dict")
    if any(name.startswith("gate.") for name in state):
        raise ValueError("timm Attention with gated=True is not supported")
    if "qkv.weight" not in state or "proj.weight" not in state:
        raise ValueError(
            f"not a timm Attention state dict (need qkv.weight and proj.weight), keys: {list(state)}"
        )
    weight = state["qkv.weight"]
    embed_dim = weight.shape[1]
    if weight.shape[0] != 3 * embed_dim or tuple(state["proj.weight"].shape) != (embed_dim, embed_dim):
        raise ValueError(
            f"need qkv.weight (3*dim, dim) and proj.weight (dim, dim) (no attn_head_dim/dim_out), got "
            f"{tuple(weight.shape)} and {tuple(state['proj.weight'].shape)}"
        )
    qk_norm = "q_norm.weight" in state
    new = MultiHeadAttention(
        embed_dim,
        num_heads,
        bias="qkv.bias" in state,
        out_bias="proj.bias" in state,
        dropout=dropout,
        qk_norm=qk_norm,
        device=weight.device,
        dtype=weight.dtype,
    )
    if qk_norm:
        new.q_norm.eps = new.k_norm.eps = qk_norm_eps
    new.load_state_dict(_rename(state, {"qkv.": "in_proj_", "proj.": "out_proj."}))
    return new


def _rename(state_dict: Mapping[str, Tensor], prefixes: Mapping[str, str]) -> dict[str, Tensor]:
    """``state_dict`` with each key's first matching prefix in ``prefixes`` replaced."""
    out = {}
    for key, value in state_dict.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def _divisor_near(n: int, target: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - target))
