"""A Vision Transformer built from ``mha`` blocks, with timm-compatible weights.

Names follow timm's ``VisionTransformer`` where that is free (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``head``); the transformer is an :class:`mha.Encoder`, and :func:`load_timm_vit` maps a timm
``vit_*`` state dict onto it (``blocks.{i}`` -> ``encoder.layers.{i}``) with equal logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mha import MLP, Encoder, MultiHeadAttention, load_timm_attention
from tasks.common.init import trunc_normal_init_


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> patch tokens (B, N, embed_dim), N = (H / patch_size) * (W / patch_size).

    ``stem_channels=()`` is the plain ViT embedding: one ``patch_size`` x ``patch_size`` linear projection
    per patch (a strided conv, timm's ``patch_embed.proj``). A non-empty ``stem_channels`` puts a small conv
    stem in front (CCT-style: per entry ``stem_depth`` x [conv3x3 -> BatchNorm -> GELU], then max-pool /2,
    rounding up), and
    ``proj`` then covers the remaining ``patch_size / 2**len(stem_channels)`` pixels, so ``patch_size`` is
    the pixels per token side (28 px with a 3-stage stem and patch_size 8: 28 -> 4 px, 4x4 tokens).
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        stem_channels: Sequence[int] = (),
        stem_depth: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(stem_depth, int) or stem_depth < 1:
            raise ValueError(
                f"stem_depth (conv layers per stem stage) must be an int >= 1, got {stem_depth!r}"
            )
        down = 2 ** len(stem_channels)
        if patch_size % down:
            raise ValueError(
                f"patch_size {patch_size} is not divisible by the conv stem's downsampling {down} "
                f"(stem_channels={list(stem_channels)}); use fewer stem stages or a larger patch_size"
            )
        side = image_size
        for _ in stem_channels:
            side = (side + 1) // 2  # max-pool 3x3, stride 2, padding 1 rounds up: 28 -> 14 -> 7 -> 4
        kernel = patch_size // down
        if side % kernel:
            raise ValueError(
                f"image_size {image_size} is not divisible by patch_size {patch_size}"
                + (f" (after the conv stem: {side} px into {kernel} px patches)" if stem_channels else "")
            )
        layers: list[nn.Module] = []
        c = in_chans
        for out in stem_channels:
            for _ in range(stem_depth):
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.GELU()]
                c = out
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers) if layers else nn.Identity()
        self.proj = nn.Conv2d(c, embed_dim, kernel, stride=kernel)
        self.grid_size = side // kernel
        self.num_patches = self.grid_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.stem(x))  # (B, E, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, E)


class ViT(nn.Module):
    """Vision Transformer: patch embedding, class token or mean pooling, learned positions, ``mha.Encoder``.

    Args:
        image_size: input side in pixels (square images).
        patch_size: pixels per token side.
        in_chans: image channels.
        num_classes: classifier outputs (0: no head, ``forward`` returns pooled features).
        embed_dim: token width.
        depth: number of encoder layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        pool: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens).
        stem_channels: conv stem widths before the patch projection (() = plain linear patches).
        stem_depth: conv3x3-BN-GELU layers per stem stage (before its max-pool).
        dropout: dropout after attention / MLP and on the embeddings.
        attn_dropout: dropout on attention weights.
        drop_path: stochastic-depth rate of the last layer (linear ramp from 0).
        qk_norm: LayerNorm on queries and keys per head.
        layer_norm_eps: LayerNorm epsilon (timm ViTs use 1e-6).
        layer_scale: LayerScale init value (None: off).
        num_kv_heads: grouped-query heads for keys/values (None: num_heads).
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        pool: str = "token",
        stem_channels: Sequence[int] = (),
        stem_depth: int = 1,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        qk_norm: bool = False,
        layer_norm_eps: float = 1e-6,
        layer_scale: float | None = None,
        num_kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in ("token", "avg"):
            raise ValueError(f"pool must be 'token' (class token) or 'avg' (mean pooling), got {pool!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.pool = pool
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(
            image_size, patch_size, in_chans, embed_dim, tuple(stem_channels), stem_depth
        )
        self.num_prefix_tokens = 1 if pool == "token" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "token" else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches, embed_dim)
        )
        self.pos_drop = nn.Dropout(dropout)
        self.encoder = Encoder(
            depth,
            embed_dim,
            num_heads,
            ffn_dim=int(embed_dim * mlp_ratio),
            dropout=dropout,
            attn_dropout=attn_dropout,
            activation="gelu",
            norm_first=True,
            layer_norm_eps=layer_norm_eps,
            drop_path=drop_path,
            qk_norm=qk_norm,
            num_kv_heads=num_kv_heads,
            layer_scale=layer_scale,
        )
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm-style init: truncated normal (std 0.02) for linears and positions, zero biases, zero head."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        trunc_normal_init_(self)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names AdamW should not decay (timm's convention)."""
        return {"pos_embed", "cls_token"}

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> embedded tokens with positions (B, prefix + N, E)."""
        x = self.patch_embed(x)  # (B, N, E)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, E)
        return self.pos_drop(x + self.pos_embed)

    def forward_features(self, x: torch.Tensor, need_weights: bool = False):
        """Images (B, C, H, W) -> normalised tokens (B, L, E) (and per-layer attention (B, H, L, L) list)."""
        x, weights = self.encoder(self.tokens(x), need_weights=need_weights)
        return (x, weights) if need_weights else x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, L, E) -> logits (B, num_classes)."""
        x = x[:, 0] if self.pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)  # (B, E)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) float -> logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Head-averaged attention of one layer over the patch grid: (B, grid, grid).

        With a class token: the class token's attention to each patch; with mean pooling: the attention
        each patch receives, averaged over queries.
        """
        _, weights = self.forward_features(x, need_weights=True)
        w = weights[layer]
        if w.ndim == 4:
            w = w.mean(1)  # (B, L, L): average the heads
        p = self.num_prefix_tokens
        received = w[:, 0, p:] if self.pool == "token" else w[:, p:, p:].mean(1)  # (B, N)
        g = self.patch_embed.grid_size
        return received.reshape(-1, g, g)


# --------------------------------------------------------------------------------------------- timm interop
def _layer_parts(layer: nn.Module) -> tuple[str, list[str], str]:
    """(attention prefix, [norm1, norm2] prefixes, mlp prefix) of an ``mha.EncoderLayer``, by type."""
    attn = [n for n, m in layer.named_children() if isinstance(m, MultiHeadAttention)]
    norms = [n for n, m in layer.named_children() if isinstance(m, nn.LayerNorm)]
    mlp = [n for n, m in layer.named_children() if isinstance(m, MLP)]
    if len(attn) != 1 or len(norms) != 2 or len(mlp) != 1:
        raise TypeError(f"unexpected EncoderLayer layout: attn={attn}, norms={norms}, mlp={mlp}")
    return attn[0], norms, mlp[0]


def _mlp_linears(mlp: nn.Module) -> list[str]:
    return [n for n, m in mlp.named_modules() if isinstance(m, nn.Linear)]


def timm_vit_kwargs(state_dict: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, Any]:
    """ViT keyword arguments that match a timm ``vit_*`` state dict (plain linear patches)."""
    sd = state_dict
    proj = sd["patch_embed.proj.weight"]  # (E, C, p, p)
    embed_dim, in_chans, patch_size = proj.shape[0], proj.shape[1], proj.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    has_cls = "cls_token" in sd
    num_patches = sd["pos_embed"].shape[1] - (1 if has_cls else 0)
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"pos_embed holds {num_patches} patch positions, not a square grid")
    return dict(
        image_size=grid * patch_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        pool="token" if has_cls else "avg",
        qk_norm="blocks.0.attn.q_norm.weight" in sd,
        layer_scale=1.0 if "blocks.0.ls1.gamma" in sd else None,
    )


def load_timm_vit(
    source: nn.Module | Mapping[str, torch.Tensor], num_heads: int | None = None, **overrides: Any
) -> ViT:
    """Build a :class:`ViT` holding the weights of a timm ``VisionTransformer`` (module or state dict).

    Supports the plain timm layout (class token, learned positions, pre-norm blocks with fused ``qkv``,
    optional qk-norm / LayerScale, ``norm`` before a linear ``head``). ``num_heads`` is read from a module,
    and must be given with a bare state dict. Returns the model in eval mode; its logits equal timm's.
    """
    if isinstance(source, nn.Module):
        num_heads = num_heads or source.blocks[0].attn.num_heads
        sd = source.state_dict()
        if getattr(source, "global_pool", "token") not in ("token", "avg") or not isinstance(
            getattr(source, "fc_norm", nn.Identity()), nn.Identity
        ):
            raise ValueError(
                "only timm ViTs with global_pool='token' (or 'avg' without fc_norm) are supported"
            )
    else:
        sd = dict(source)
    if num_heads is None:
        raise ValueError("num_heads cannot be read from a state dict; pass load_timm_vit(sd, num_heads=...)")
    kwargs = timm_vit_kwargs(sd, num_heads) | overrides
    model = ViT(**kwargs)
    model.load_state_dict(map_timm_vit_state_dict(sd, model))
    return model.eval()


def map_timm_vit_state_dict(sd: Mapping[str, torch.Tensor], model: ViT) -> dict[str, torch.Tensor]:
    """Rename a timm ViT state dict to ``model``'s names (``model`` gives the EncoderLayer layout)."""
    out: dict[str, torch.Tensor] = {}
    for key in (
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "head.weight",
        "head.bias",
    ):
        if key in sd:
            out[key] = sd[key]
    out["encoder.norm.weight"], out["encoder.norm.bias"] = sd["norm.weight"], sd["norm.bias"]
    for i, layer in enumerate(model.encoder.layers):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        attn_name, (norm1, norm2), mlp_name = _layer_parts(layer)
        attn_sd = {k.removeprefix(src + "attn."): v for k, v in sd.items() if k.startswith(src + "attn.")}
        attn = load_timm_attention(attn_sd, num_heads=getattr(layer, attn_name).num_heads)
        out |= {f"{dst}{attn_name}.{k}": v for k, v in attn.state_dict().items()}
        for ours, theirs in ((norm1, "norm1"), (norm2, "norm2")):
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = sd[f"{src}{theirs}.{p}"]
        fc1, fc2 = _mlp_linears(getattr(layer, mlp_name))
        for ours, theirs in ((fc1, "fc1"), (fc2, "fc2")):
            for p in ("weight", "bias"):
                out[f"{dst}{mlp_name}.{ours}.{p}"] = sd[f"{src}mlp.{theirs}.{p}"]
        # whatever else the layer holds is LayerScale (attention branch first, then MLP branch)
        known = (attn_name + ".", norm1 + ".", norm2 + ".", mlp_name + ".")
        rest = [n for n, _ in layer.named_parameters() if not n.startswith(known)]
        gammas = [sd[f"{src}{ls}.gamma"] for ls in ("ls1", "ls2") if f"{src}{ls}.gamma" in sd]
        if len(rest) != len(gammas):
            raise ValueError(f"layer {i}: timm has {len(gammas)} LayerScale tensors, ours has {rest}")
        out |= {f"{dst}{n}": g for n, g in zip(rest, gammas, strict=True)}
    return out
