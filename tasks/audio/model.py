"""A keyword / spectrogram transformer (KWT, AST family) built from ``mha`` blocks.

A log-mel spectrogram (B, n_mels, frames) is cut into patches of ``patch_freq`` mel bins x ``patch_time``
frames; each patch is a token (one linear projection, a strided conv). ``patch_freq = n_mels`` and
``patch_time = 1`` is KWT (one token per frame, attention over time); smaller ``patch_freq`` gives 2-D patches
as in AST (attention over time and frequency). A class token (or mean pooling), learned positions, an
:class:`mha.Encoder`, and a linear classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mha import Encoder
from tasks.common.init import trunc_normal_init_


class SpectrogramTransformer(nn.Module):
    """Spectrogram patches -> ``mha.Encoder`` -> class token / mean -> logits.

    Args:
        n_mels: mel bins of the input.
        num_frames: frames of the input (clips are one fixed length).
        num_classes: classifier outputs.
        patch_freq: mel bins per patch (must divide ``n_mels``; default: all, i.e. one token per frame).
        patch_time: frames per patch (the last partial patch is zero-padded).
        embed_dim: token width.
        depth: encoder layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
        pool: ``"token"`` (class token) or ``"avg"`` (mean of the patch tokens).
        dropout: dropout after attention / MLP and on the embeddings.
        attn_dropout: dropout on attention weights.
        drop_path: stochastic-depth rate of the last layer (linear ramp from 0).
    """

    def __init__(
        self,
        n_mels: int,
        num_frames: int,
        num_classes: int,
        patch_freq: int | None = None,
        patch_time: int = 1,
        embed_dim: int = 64,
        depth: int = 3,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        pool: str = "token",
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        patch_freq = patch_freq or n_mels
        if pool not in ("token", "avg"):
            raise ValueError(f"task.model.pool must be 'token' or 'avg', got {pool!r}")
        if n_mels % patch_freq or patch_time < 1:
            raise ValueError(
                f"task.model.patch_freq={patch_freq} must divide n_mels={n_mels}, "
                f"and patch_time={patch_time} must be >= 1"
            )
        if embed_dim % num_heads:
            raise ValueError(f"task.model.embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.config: dict[str, Any] = dict(
            n_mels=n_mels,
            num_frames=num_frames,
            num_classes=num_classes,
            patch_freq=patch_freq,
            patch_time=patch_time,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            pool=pool,
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path,
        )
        self.pool, self.patch_time = pool, patch_time
        self.grid = (n_mels // patch_freq, -(-num_frames // patch_time))  # (freq patches, time patches)
        self.pad_time = self.grid[1] * patch_time - num_frames
        self.patch_embed = nn.Conv2d(1, embed_dim, (patch_freq, patch_time), stride=(patch_freq, patch_time))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pool == "token" else None
        num_prefix = 1 if pool == "token" else 0
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + self.grid[0] * self.grid[1], embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        self.encoder = Encoder(
            depth,
            embed_dim,
            num_heads,
            ffn_dim=int(embed_dim * mlp_ratio),
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path,
            activation="gelu",
            norm_first=True,
            layer_norm_eps=1e-6,
        )
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm-style init: truncated normal (std 0.02) for linears and positions, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        trunc_normal_init_(self)

    def no_weight_decay(self) -> set[str]:
        """Parameter names AdamW should not decay (timm's convention)."""
        return {"pos_embed", "cls_token"}

    def tokens(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, frames) -> tokens with positions (B, prefix + F' * T', E)."""
        x = nn.functional.pad(feats.unsqueeze(1), (0, self.pad_time))  # (B, 1, n_mels, frames + pad)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, E, F', T') -> (B, F' * T', E)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.pos_embed)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.pool == "token" else x.mean(1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, n_mels, frames) -> logits (B, num_classes)."""
        x, _ = self.encoder(self.tokens(feats))
        return self.head(self._pool(x))

    @torch.no_grad()
    def attention_map(self, feats: torch.Tensor) -> torch.Tensor:
        """Last-layer attention over the patches, averaged over heads: (B, F', T'). With a class token, the
        class token's attention to each patch; with mean pooling, the attention each patch receives (mean over
        queries)."""
        _, weights = self.encoder(self.tokens(feats), need_weights=True)
        w = weights[-1].float().mean(1)  # (B, S, S)
        w = w[:, 0, 1:] if self.pool == "token" else w.mean(1)  # (B, F' * T')
        return w.view(-1, *self.grid)
