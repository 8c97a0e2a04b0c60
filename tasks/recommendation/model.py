"""SASRec on the ``mha`` core: item embeddings + learned positions -> causal ``mha.Encoder`` -> next-item
scores against the tied item-embedding table.

Sequences are right-padded (``PAD`` = 0 after the items), so position ``t`` is the ``t``-th item of the
window and a causal query never sees a padding key; the key-padding mask is passed as well, so padding is
excluded whatever the layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mha import Encoder, LearnedPositionalEmbedding

from .data import PAD


class SASRec(nn.Module):
    """Self-attentive sequential recommender.

    Args:
        num_items: catalogue size ``N`` (ids ``1..N``; 0 is padding).
        max_len: longest history window (size of the position table).
        embed_dim: item / hidden width.
        num_layers: encoder layers.  num_heads: attention heads.
        ffn_dim: MLP hidden size (default ``embed_dim``, as in SASRec's point-wise feed-forward).
        dropout: on embeddings, residual branches and the MLP.  attn_dropout: on attention weights.
        activation: MLP activation.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 200,
        embed_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.2,
        attn_dropout: float = 0.2,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if embed_dim % num_heads:
            raise ValueError(f"task.model.embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.config: dict[str, Any] = {
            "num_items": num_items,
            "max_len": max_len,
            "embed_dim": embed_dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "ffn_dim": ffn_dim,
            "dropout": dropout,
            "attn_dropout": attn_dropout,
            "activation": activation,
        }
        self.num_items, self.max_len = num_items, max_len
        self.item_emb = nn.Embedding(num_items + 1, embed_dim, padding_idx=PAD)
        nn.init.normal_(self.item_emb.weight, std=embed_dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
        self.pos_emb = LearnedPositionalEmbedding(max_len, embed_dim, dropout=dropout)
        self.encoder = Encoder(
            num_layers,
            embed_dim,
            num_heads,
            ffn_dim=ffn_dim or embed_dim,
            dropout=dropout,
            attn_dropout=attn_dropout,
            activation=activation,
        )
        self.scale = math.sqrt(embed_dim)

    def no_weight_decay(self) -> list[str]:
        return ["pos_emb.weight"]

    def hidden(
        self, items: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """``items`` (B, L) right-padded ids -> hidden states (B, L, E) and, with ``need_weights``, each
        layer's attention (B, heads, L, L)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"history of {items.shape[1]} items is longer than max_len={self.max_len}")
        x = self.pos_emb(self.item_emb(items) * self.scale)  # (B, L, E), dropout inside
        return self.encoder(x, key_padding_mask=items.eq(PAD), is_causal=True, need_weights=need_weights)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Next-item scores at every position: (B, L) -> (B, L, N + 1) (column 0, padding, included)."""
        return self.hidden(items)[0] @ self.item_emb.weight.T

    def score_last(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores of the item after each history: ``items`` (B, L) right-padded, ``lengths`` (B,) ->
        (B, N + 1) float32 (also under autocast: ranks count ties against the target)."""
        h = self.hidden(items)[0]
        last = h[torch.arange(items.shape[0], device=items.device), lengths - 1]  # (B, E)
        with torch.autocast(items.device.type, enabled=False):  # fp32 scores: bf16 would tie many items
            return last.float() @ self.item_emb.weight.float().T
