"""Transformer blocks built on ``MultiHeadAttention``: MLP, DropPath, LayerScale, EncoderLayer/DecoderLayer,
Encoder/Decoder.  Pre-norm by default, post-norm as an option; weights load from PyTorch's
``nn.Transformer*`` layers and stacks (``from_torch`` / ``load_torch_state_dict``) and timm ViT ``Block``s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import DecoderCache, KVCache
from .masks import key_padding_to_sdpa
from .modules import MultiHeadAttention, _rename, load_timm_attention

__all__ = ["MLP", "DropPath", "LayerScale", "EncoderLayer", "DecoderLayer", "Encoder", "Decoder"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


def _activation(activation: str | Callable[[], nn.Module]) -> nn.Module:
    if callable(activation) and not isinstance(activation, str):
        return activation()
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} or a module class, got {activation!r}"
        )
    return ACTIVATIONS[activation]()


class MLP(nn.Module):
    """``fc1 -> activation -> dropout -> fc2 -> dropout`` on ``(..., embed_dim)``.

    Args:
        embed_dim: input/output size.
        hidden_dim: inner size (commonly ``4 * embed_dim``).
        activation: ``"gelu"``, ``"gelu_tanh"``, ``"relu"``, ``"silu"`` or an ``nn.Module`` class.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden_dim: int,
        *,
        activation: str | Callable[[], nn.Module] = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim, bias=bias)
        self.act = _activation(activation)
        self.fc2 = nn.Linear(hidden_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., embed_dim) -> (..., embed_dim)``."""
        h = self.act(self.fc1(x))
        if self.dropout.p == 0.0 or not self.training:  # (skip no-op module calls: eager CPU overhead)
            return self.fc2(h)
        return self.dropout(self.fc2(self.dropout(h)))


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's whole residual branch with probability ``p`` (training only), scale
    the kept ones by ``1 / (1 - p)``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, ...)`` -> same shape."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnable scale ``gamma * x`` (CaiT), ``gamma`` initialised to ``init``."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class _Layer(nn.Module):
    """The keyword set ``EncoderLayer`` and ``DecoderLayer`` share (documented on ``EncoderLayer``), and the
    parts they build from it: self-attention, norms, MLP, dropout, LayerScales, DropPath."""

    _cross_attention = False  # DecoderLayer: a cross-attention and a third norm / LayerScale
    _torch_type: type[nn.Module]  # the PyTorch layer it loads from, and that layer's key prefixes
    _torch_keys = {"linear1.": "mlp.fc1.", "linear2.": "mlp.fc2."}

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        activation: str | Callable[[], nn.Module] = "gelu",
        norm_first: bool = True,
        layer_norm_eps: float = 1e-5,
        drop_path: float = 0.0,
        bias: bool = True,
        qk_norm: bool = False,
        num_kv_heads: int | None = None,
        positional: str | None = None,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        for name, p in (("dropout", dropout), ("attn_dropout", attn_dropout), ("drop_path", drop_path)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.norm_first = norm_first
        attn_kwargs = dict(num_kv_heads=num_kv_heads, bias=bias, dropout=attn_dropout, qk_norm=qk_norm)
        self.self_attn = MultiHeadAttention(embed_dim, num_heads, positional=positional, **attn_kwargs)
        if self._cross_attention:
            self.cross_attn = MultiHeadAttention(embed_dim, num_heads, **attn_kwargs)
        branches = range(1, 4 if self._cross_attention else 3)
        for i in branches:  # norm1, norm2 (, norm3)
            setattr(self, f"norm{i}", nn.LayerNorm(embed_dim, eps=layer_norm_eps))
        self.mlp = MLP(embed_dim, ffn_dim or 4 * embed_dim, activation=activation, dropout=dropout, bias=bias)
        self.dropout = nn.Dropout(dropout)
        for i in branches:  # ls1, ls2 (, ls3)
            scale = LayerScale(embed_dim, layer_scale) if layer_scale is not None else nn.Identity()
            setattr(self, f"ls{i}", scale)
        self.drop_path = DropPath(drop_path)

    # The residual sums call only the modules that do something (eager overhead).
    def _add_attention(self, x: Tensor, out: Tensor, norm: nn.Module, scale: nn.Module) -> Tensor:
        """``x + drop_path(scale(dropout(out)))``, then ``norm`` when post-norm."""
        if self.training and self.dropout.p > 0.0:
            out = self.dropout(out)
        if not isinstance(scale, nn.Identity):
            out = scale(out)
        if self.training and self.drop_path.p > 0.0:
            out = self.drop_path(out)
        return x + out if self.norm_first else norm(x + out)

    def _add_mlp(self, x: Tensor, norm: nn.Module, scale: nn.Module) -> Tensor:
        """``x + drop_path(scale(mlp(norm(x))))``; post-norm ``norm(x + drop_path(scale(mlp(x))))``."""
        out = self.mlp(norm(x) if self.norm_first else x)  # (the MLP applies its own dropout)
        if not isinstance(scale, nn.Identity):
            out = scale(out)
        if self.training and self.drop_path.p > 0.0:
            out = self.drop_path(out)
        return x + out if self.norm_first else norm(x + out)

    @classmethod
    def from_torch(cls, layer: nn.Module) -> Self:
        """Equivalent layer (same outputs) from an ``nn.TransformerEncoderLayer`` (for ``EncoderLayer``) or an
        ``nn.TransformerDecoderLayer`` (for ``DecoderLayer``), ``batch_first`` either way."""
        if not isinstance(layer, cls._torch_type):
            raise TypeError(f"expected nn.{cls._torch_type.__name__}, got {type(layer).__name__}")
        new = cls(**_torch_layer_kwargs(layer))
        new.load_torch_state_dict(layer.state_dict())
        ref = layer.linear1.weight
        return new.to(device=ref.device, dtype=ref.dtype).train(layer.training)

    def load_torch_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load an ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` state dict (strict)."""
        self.load_state_dict(_rename(state_dict, self._torch_keys))


class EncoderLayer(_Layer):
    """Self-attention + MLP block on ``(batch, seq, embed_dim)``.

    Pre-norm (default): ``x + drop_path(ls1(drop(attn(norm1(x)))))``, ``x + drop_path(ls2(mlp(norm2(x))))``;
    post-norm (``norm_first=False``, the original Transformer): ``norm1(x + drop(attn(x)))``,
    ``norm2(x + mlp(x))``.

    Args:
        embed_dim, num_heads: attention sizes.
        ffn_dim: MLP hidden size (default ``4 * embed_dim``).
        dropout: dropout on residual branches and inside the MLP; attn_dropout: on attention probabilities.
        activation: MLP activation.  norm_first: pre-norm.  layer_norm_eps: LayerNorm eps.
        drop_path: stochastic-depth probability.  bias: biases in projections and MLP.  qk_norm, num_kv_heads,
        positional: passed to ``MultiHeadAttention`` (``positional``: self-attention only).  layer_scale:
        initial LayerScale value (``None`` = off).
    """

    _torch_type = nn.TransformerEncoderLayer

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        need_weights: bool = False,
        sdpa_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` ``(batch, seq, embed_dim)`` -> ``(x, weights)``; weights ``(batch, heads, seq, seq)`` when
        ``need_weights``.  Masks follow ``nn.MultiheadAttention`` (bool ``True`` = masked out);
        ``sdpa_mask``: a prepared SDPA-convention mask (see ``MultiHeadAttention.forward``)."""
        h = self.norm1(x) if self.norm_first else x
        out, weights = self.self_attn(
            h,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            positions=positions,
            need_weights=need_weights,
            average_attn_weights=False,
            sdpa_mask=sdpa_mask,
        )
        x = self._add_attention(x, out, self.norm1, self.ls1)
        return self._add_mlp(x, self.norm2, self.ls2), weights

    @classmethod
    def from_timm_block(cls, block: nn.Module) -> EncoderLayer:
        """Equivalent pre-norm layer from a timm ViT ``Block`` (norm1, attn, ls1, norm2, mlp, ls2)."""
        attn = load_timm_attention(block.attn)
        norm1, fc1 = block.norm1, block.mlp.fc1
        mlp_norm = getattr(block.mlp, "norm", nn.Identity())
        if not isinstance(norm1, nn.LayerNorm) or not isinstance(mlp_norm, nn.Identity):
            raise ValueError("only timm Blocks with LayerNorm norms and a plain Mlp are supported")
        act = block.mlp.act
        gelu = isinstance(act, nn.GELU)
        activation = ("gelu" if act.approximate == "none" else "gelu_tanh") if gelu else (lambda: act)
        gamma = getattr(getattr(block, "ls1", None), "gamma", None)
        new = cls(
            attn.embed_dim,
            attn.num_heads,
            ffn_dim=fc1.out_features,
            activation=activation,
            norm_first=True,
            layer_norm_eps=norm1.eps,
            bias=fc1.bias is not None,
            qk_norm=not isinstance(attn.q_norm, nn.Identity),
            layer_scale=1.0 if gamma is not None else None,
        )
        new.self_attn = attn
        state = {k: v for k, v in block.state_dict().items() if not k.startswith("attn.")}
        state.update({"self_attn." + k: v for k, v in attn.state_dict().items()})
        new.load_state_dict(state)
        return new.to(device=fc1.weight.device, dtype=fc1.weight.dtype).train(block.training)


class DecoderLayer(_Layer):
    """Causal self-attention + cross-attention + MLP block.  Same keyword arguments as ``EncoderLayer``.

    Pre-norm: ``x += sa(norm1(x))``, ``x += ca(norm2(x), memory)``, ``x += mlp(norm3(x))``; post-norm puts
    each norm after its residual sum (``nn.TransformerDecoderLayer``).  ``positional`` applies to
    self-attention only.  ``nn.TransformerDecoderLayer`` is not causal unless given ``tgt_mask``/
    ``tgt_is_causal``: pass ``tgt_is_causal`` explicitly to both when comparing them.
    """

    _cross_attention = True
    _torch_type = nn.TransformerDecoderLayer
    _torch_keys = {**_Layer._torch_keys, "multihead_attn.": "cross_attn."}

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
        cache: tuple[KVCache, KVCache] | None = None,
        positions: Tensor | None = None,
        need_weights: bool = False,
        memory_sdpa_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``x`` ``(batch, tgt_len, E)``, ``memory`` ``(batch, src_len, E)`` -> ``(x, cross_weights)``.

        Masks follow ``nn.TransformerDecoderLayer`` (bool ``True`` = masked out).  ``tgt_is_causal`` (default
        ``True``) applies the causal mask itself, no ``tgt_mask`` needed.  ``cache``: ``(self KVCache, static
        cross KVCache)`` for incremental decoding (``x`` holds only the new tokens; ``tgt_key_padding_mask``
        then covers all decoded tokens).  Cross-attention weights ``(batch, heads, tgt_len, src_len)`` when
        ``need_weights``.  ``memory_sdpa_mask``: a prepared SDPA-convention mask for the cross-attention
        (``mha.masks.key_padding_to_sdpa(memory_key_padding_mask)``; the ``Decoder`` passes it).
        """
        self_cache, cross_cache = cache if cache is not None else (None, None)
        pre = self.norm_first
        out, _ = self.self_attn(
            self.norm1(x) if pre else x,
            key_padding_mask=tgt_key_padding_mask,
            attn_mask=tgt_mask,
            is_causal=tgt_is_causal,
            cache=self_cache,
            positions=positions,
        )
        x = self._add_attention(x, out, self.norm1, self.ls1)
        out, weights = self.cross_attn(
            self.norm2(x) if pre else x,
            memory,
            memory,
            key_padding_mask=memory_key_padding_mask,
            attn_mask=memory_mask,
            cache=cross_cache,
            need_weights=need_weights,
            average_attn_weights=False,
            sdpa_mask=memory_sdpa_mask,
        )
        x = self._add_attention(x, out, self.norm2, self.ls2)
        return self._add_mlp(x, self.norm3, self.ls3), weights


def _torch_layer_kwargs(layer: nn.Module) -> dict:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        activation: str | Callable[[], nn.Module] = "relu"
    elif act is F.gelu:
        activation = "gelu"
    elif isinstance(act, nn.Module):
        activation = lambda: act  # noqa: E731
    else:
        raise ValueError(f"unsupported activation {act!r}; use relu, gelu or an nn.Module")
    attn = layer.self_attn
    return {
        "embed_dim": attn.embed_dim,
        "num_heads": attn.num_heads,
        "ffn_dim": layer.linear1.out_features,
        "dropout": layer.dropout.p,
        "attn_dropout": attn.dropout,
        "activation": activation,
        "norm_first": layer.norm_first,
        "layer_norm_eps": layer.norm1.eps,
        "bias": attn.in_proj_bias is not None,
    }


def _stack_from_torch(cls: type, stack: nn.Module, torch_type: type[nn.Module]) -> nn.Module:
    if not isinstance(stack, torch_type):
        raise TypeError(f"expected nn.{torch_type.__name__}, got {type(stack).__name__}")
    layers = list(stack.layers)
    kwargs = _torch_layer_kwargs(layers[0])
    norm = stack.norm
    if norm is not None and not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"final norm must be LayerNorm or None, got {type(norm).__name__}")
    embed_dim, num_heads = kwargs.pop("embed_dim"), kwargs.pop("num_heads")
    new = cls(len(layers), embed_dim, num_heads, final_norm=False, **kwargs)
    for mine, theirs in zip(new.layers, layers, strict=True):
        mine.load_torch_state_dict(theirs.state_dict())
    if norm is not None:  # PyTorch allows a final norm after post-norm layers too
        new.norm = nn.LayerNorm(embed_dim, eps=norm.eps)
        new.norm.load_state_dict(norm.state_dict())
    ref = layers[0].linear1.weight
    return new.to(device=ref.device, dtype=ref.dtype).train(stack.training)


def _padding_once(
    key_padding_mask: Tensor | None, keys: Tensor, x: Tensor
) -> tuple[Tensor | None, Tensor | None]:
    """``(key_padding_mask, sdpa_mask)`` for every layer of a stack: a well-formed bool ``(batch, k_len)``
    mask of ``keys`` ``(batch, k_len, E)`` becomes ``(None, key_padding_to_sdpa(...))`` in the dtype q/k/v
    will have (the autocast dtype when autocast is on, else ``x.dtype``); any other is left to the layers
    (which convert it and raise their usual errors)."""
    if not (
        key_padding_mask is not None
        and key_padding_mask.dtype == torch.bool
        and key_padding_mask.dim() == 2
        and keys.dim() == 3
        and tuple(key_padding_mask.shape) == (keys.shape[0], keys.shape[1])
    ):
        return key_padding_mask, None
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    return None, key_padding_to_sdpa(key_padding_mask, dtype)


class _Stack(nn.Module):
    """``num_layers`` layers of ``layer_type`` (stochastic depth ramped over them) and a final LayerNorm."""

    layer_type: type[nn.Module]

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        *,
        final_norm: bool = True,
        drop_path: float = 0.0,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        ramp = [drop_path * i / max(num_layers - 1, 1) for i in range(num_layers)]  # 0 .. drop_path (DeiT)
        self.layers = nn.ModuleList(
            self.layer_type(embed_dim, num_heads, drop_path=p, **layer_kwargs) for p in ramp
        )
        norm_first = layer_kwargs.get("norm_first", True)
        eps = layer_kwargs.get("layer_norm_eps", 1e-5)
        self.norm = nn.LayerNorm(embed_dim, eps=eps) if final_norm and norm_first else nn.Identity()


class Encoder(_Stack):
    """A stack of ``EncoderLayer`` plus a final LayerNorm (pre-norm only).

    Args:
        num_layers: depth.  final_norm: final LayerNorm when ``norm_first`` (post-norm stacks end normalised).
        drop_path: maximum of a linear stochastic-depth ramp over the layers.
        **layer_kwargs: ``EncoderLayer`` keyword arguments.
    """

    layer_type = EncoderLayer

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder) -> Encoder:
        """Equivalent stack (same outputs) from an ``nn.TransformerEncoder`` (with its final ``norm``)."""
        return _stack_from_torch(cls, encoder, nn.TransformerEncoder)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """``(batch, seq, embed_dim)`` -> ``(x, per-layer weights (batch, heads, seq, seq) or None)``.

        A bool ``key_padding_mask`` is converted once for all layers (``mha.masks.key_padding_to_sdpa``, an
        additive mask in the attention dtype): a sequence that is padding everywhere then attends over its
        padding instead of getting zeros.
        """
        width = self.layers[0].self_attn.embed_dim
        if not isinstance(x, Tensor) or x.dim() not in (2, 3) or x.shape[-1] != width:
            raise ValueError(
                f"Encoder input must be (batch, seq, {width}) (or unbatched (seq, {width})), got "
                f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
            )
        all_weights: list[Tensor] = []
        key_padding_mask, sdpa_mask = _padding_once(key_padding_mask, x, x)
        for layer in self.layers:
            x, w = layer(
                x,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                is_causal=is_causal,
                positions=positions,
                need_weights=need_weights,
                sdpa_mask=sdpa_mask,
            )
            if w is not None:
                all_weights.append(w)
        return self.norm(x), (all_weights if need_weights else None)


class Decoder(_Stack):
    """A stack of ``DecoderLayer`` plus a final LayerNorm (pre-norm only), with incremental decoding.

    ``make_cache()`` returns a ``DecoderCache``; call ``decoder(x_new, memory, cache=cache)`` with the new
    tokens ``(batch, 1, E)`` each step: outputs equal the last rows of a full causal forward over the prefix.
    """

    layer_type = DecoderLayer

    @classmethod
    def from_torch(cls, decoder: nn.TransformerDecoder) -> Decoder:
        """Equivalent stack (same outputs) from an ``nn.TransformerDecoder`` (with its final ``norm``)."""
        return _stack_from_torch(cls, decoder, nn.TransformerDecoder)

    def make_cache(self, capacity: int | None = None) -> DecoderCache:
        """A fresh ``DecoderCache`` for this decoder's layers; ``capacity``: target positions to
        preallocate in each self-attention cache (the decoding length limit; it grows past it if needed)."""
        return DecoderCache(len(self.layers), capacity=capacity)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
        cache: DecoderCache | None = None,
        positions: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """``x`` ``(batch, tgt_len, E)``, ``memory`` ``(batch, src_len, E)`` -> ``(x, per-layer
        cross-attention weights (batch, heads, tgt_len, src_len) or None)``."""
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(
                f"cache has {len(cache)} layers, decoder has {len(self.layers)}; use make_cache()"
            )
        all_weights: list[Tensor] = []
        memory_key_padding_mask, memory_sdpa_mask = _padding_once(memory_key_padding_mask, memory, x)
        for i, layer in enumerate(self.layers):
            x, w = layer(
                x,
                memory,
                tgt_mask=tgt_mask,
                memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=tgt_is_causal,
                cache=None if cache is None else cache.layer(i),
                positions=positions,
                need_weights=need_weights,
                memory_sdpa_mask=memory_sdpa_mask,
            )
            if w is not None:
                all_weights.append(w)
        return self.norm(x), (all_weights if need_weights else None)
