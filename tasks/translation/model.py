"""Encoder-decoder Transformer for translation, built from ``mha.Encoder`` and ``mha.Decoder``.

Token embeddings are scaled by ``sqrt(embed_dim)`` and get absolute positions (sinusoidal or learned) added
outside the attention; during incremental decoding the position offset is ``cache.seq_len`` (a static
cache's ``position``, a device tensor, for fixed-shape steps that a CUDA graph replays). The output
projection is tied to the target embedding, and source / target embeddings are one table when the
vocabulary is shared.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mha

from .data import BOS_ID, EOS_ID, PAD_ID

POSITIONALS = ("sinusoidal", "learned")


class Seq2SeqTransformer(nn.Module):
    """Transformer encoder-decoder (pre-norm by default) on the ``mha`` core.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (ids 0..3 are pad, bos, eos, unk).
        embed_dim: model width; num_heads: attention heads; ffn_dim: MLP hidden size (default 4 * embed_dim).
        encoder_layers, decoder_layers: depth of each stack.
        dropout: dropout on embeddings, residual branches and the MLP; attn_dropout: on attention weights.
        activation: MLP activation (``gelu``, ``relu``, ...); norm_first: pre-norm (True) or post-norm.
        positional: ``sinusoidal`` or ``learned`` absolute positions; max_positions: learned table size.
        share_embeddings: one embedding table for source and target (needs equal vocabularies).
        tie_output: output projection uses the target embedding matrix.
        num_kv_heads: grouped-query heads; qk_norm: normalise q and k; drop_path: stochastic depth (max).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        embed_dim: int = 256,
        num_heads: int = 4,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation: str = "gelu",
        norm_first: bool = True,
        positional: str = "sinusoidal",
        max_positions: int = 512,
        share_embeddings: bool = True,
        tie_output: bool = True,
        num_kv_heads: int | None = None,
        qk_norm: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if positional not in POSITIONALS:
            raise ValueError(f"positional={positional!r}; pick one of {', '.join(POSITIONALS)}.")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got sizes {src_vocab_size} and "
                f"{tgt_vocab_size}; set model.share_embeddings=false or data.shared_vocab=true."
            )
        self.config: dict[str, Any] = {
            "src_vocab_size": src_vocab_size,
            "tgt_vocab_size": tgt_vocab_size,
            "embed_dim": embed_dim,
            "num_heads": num_heads,
            "encoder_layers": encoder_layers,
            "decoder_layers": decoder_layers,
            "ffn_dim": ffn_dim,
            "dropout": dropout,
            "attn_dropout": attn_dropout,
            "activation": activation,
            "norm_first": norm_first,
            "positional": positional,
            "max_positions": max_positions,
            "share_embeddings": share_embeddings,
            "tie_output": tie_output,
            "num_kv_heads": num_kv_heads,
            "qk_norm": qk_norm,
            "drop_path": drop_path,
        }
        self.embed_dim, self.pad_id, self.bos_id, self.eos_id = embed_dim, PAD_ID, BOS_ID, EOS_ID
        self.max_positions = max_positions if positional == "learned" else None
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim, padding_idx=PAD_ID)
        self.tgt_embed = (
            self.src_embed
            if share_embeddings
            else nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=PAD_ID)
        )
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.weight, std=embed_dim**-0.5)  # times sqrt(E) in forward: unit scale
            with torch.no_grad():
                emb.weight[PAD_ID].zero_()
        if positional == "sinusoidal":
            self.src_pos = mha.SinusoidalPositionalEncoding(embed_dim)
            self.tgt_pos = mha.SinusoidalPositionalEncoding(embed_dim)
            # the same encodings, computed once (8 small kernels per call otherwise); beyond it: computed
            table = mha.sinusoidal_table(torch.arange(max(max_positions, 1024)), embed_dim)
            self.register_buffer("_sinusoid", table, persistent=False)
        else:
            self.src_pos = mha.LearnedPositionalEmbedding(max_positions, embed_dim)
            self.tgt_pos = mha.LearnedPositionalEmbedding(max_positions, embed_dim)
        self.embed_dropout = nn.Dropout(dropout)
        layer_kwargs = dict(
            ffn_dim=ffn_dim,
            dropout=dropout,
            attn_dropout=attn_dropout,
            activation=activation,
            norm_first=norm_first,
            num_kv_heads=num_kv_heads,
            qk_norm=qk_norm,
        )
        self.encoder = mha.Encoder(encoder_layers, embed_dim, num_heads, drop_path=drop_path, **layer_kwargs)
        self.decoder = mha.Decoder(decoder_layers, embed_dim, num_heads, **layer_kwargs)
        self.tie_output = tie_output
        if tie_output:
            self.output_bias = nn.Parameter(torch.zeros(tgt_vocab_size))
            self.output = None
        else:
            self.output = nn.Linear(embed_dim, tgt_vocab_size)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (embedding tables, learned positions)."""
        return {n for n, _ in self.named_parameters() if "embed" in n or "_pos." in n}

    # -- pieces ------------------------------------------------------------------------------------------

    def _embed(self, ids: Tensor, table: nn.Embedding, pos: nn.Module, offset: int = 0) -> Tensor:
        """(batch, seq) ids -> (batch, seq, embed) scaled embeddings plus positions from ``offset``."""
        if self.max_positions is not None and offset + ids.shape[1] > self.max_positions:
            raise ValueError(
                f"sequence reaches position {offset + ids.shape[1]} but model.max_positions="
                f"{self.max_positions}; raise it or cut inputs with data.max_len."
            )
        x = table(ids) * math.sqrt(self.embed_dim)
        sinusoid = getattr(self, "_sinusoid", None)
        if sinusoid is not None and offset + ids.shape[1] <= sinusoid.shape[0]:
            return self.embed_dropout(x + sinusoid[offset : offset + ids.shape[1]].to(x.dtype))
        return self.embed_dropout(pos(x, offset=offset))

    def _embed_at(self, ids: Tensor, position: Tensor, capacity: int) -> Tensor:
        """(batch, 1) target ids at a device ``position`` (1,) -> (batch, 1, embed): the same sums as
        :meth:`_embed` without reading the position on the host; ``capacity`` bounds the positions."""
        x = self.tgt_embed(ids) * math.sqrt(self.embed_dim)
        sinusoid = getattr(self, "_sinusoid", None)
        if self.max_positions is not None:
            pos = self.tgt_pos.weight.index_select(0, position)
        elif capacity <= sinusoid.shape[0]:
            pos = sinusoid.index_select(0, position)
        else:
            pos = mha.sinusoidal_table(position, self.embed_dim)
        return self.embed_dropout(x + pos.to(x.dtype))

    def encode(self, src: Tensor, *, has_padding: bool = True) -> tuple[Tensor, Tensor | None]:
        """Source ids (batch, src_len) -> memory (batch, src_len, embed) and its padding mask
        (batch, src_len), ``True`` at padding (``nn.MultiheadAttention`` meaning).

        ``has_padding=False`` is the caller's word (known on the host, e.g. from the collate function,
        without a device sync) that ``src`` holds no pad id: no mask is built (``None`` is returned) and
        attention runs unmasked.  Giving it for a batch that has padding attends to the pads.
        """
        src_pad = src.eq(self.pad_id) if has_padding else None
        memory, _ = self.encoder(self._embed(src, self.src_embed, self.src_pos), key_padding_mask=src_pad)
        return memory, src_pad

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., embed) decoder states -> (..., tgt_vocab) logits."""
        if self.output is None:
            return F.linear(hidden, self.tgt_embed.weight, self.output_bias)
        return self.output(hidden)

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        memory_pad: Tensor | None,
        *,
        cache: mha.KVCache | Any = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Decoder logits for target ids ``tgt_in`` (batch, tgt_len) (bos-prefixed).

        With ``cache`` (from :meth:`make_cache`), ``tgt_in`` holds only the new tokens; positions continue
        from ``cache.seq_len`` and the self-attention attends over the cached keys.

        Returns:
            logits (batch, tgt_len, tgt_vocab) and, with ``need_weights``, the per-layer cross-attention
            weights, each (batch, heads, tgt_len, src_len).
        """
        if isinstance(cache, mha.StaticDecoderCache):
            x = self._embed_at(tgt_in, cache.position, cache.capacity)
        else:
            offset = cache.seq_len if cache is not None else 0
            x = self._embed(tgt_in, self.tgt_embed, self.tgt_pos, offset=offset)
        # targets are right-padded, so under the causal mask no real token sees a pad key: no padding mask
        h, weights = self.decoder(
            x,
            memory,
            memory_key_padding_mask=memory_pad,
            tgt_is_causal=True,
            cache=cache,
            need_weights=need_weights,
        )
        return self.logits(h), weights

    def make_cache(self, capacity: int | None = None, *, static: bool = False) -> Any:
        """An empty decoder cache (one self- and one static cross-attention KV cache per layer);
        ``capacity``: target positions to preallocate (the decoding length limit).

        ``static=True``: a :class:`mha.StaticDecoderCache` of exactly ``capacity`` positions on the model's
        device, for fixed-shape steps (one token each) that a CUDA graph can replay.
        """
        if not static:
            return self.decoder.make_cache(capacity)
        if capacity is None:
            raise ValueError("a static cache needs its capacity (the decoding length limit)")
        return mha.StaticDecoderCache(len(self.decoder.layers), capacity, device=self.tgt_embed.weight.device)

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_has_padding: bool = True) -> Tensor:
        """Teacher-forced logits: src (batch, src_len), tgt_in (batch, tgt_len) -> (batch, tgt_len, vocab).

        ``src_has_padding=False``: the batch has no pad id in ``src`` (decided on the host, see
        :meth:`encode`): the attention runs without any padding mask.
        """
        memory, memory_pad = self.encode(src, has_padding=src_has_padding)
        return self.decode(tgt_in, memory, memory_pad)[0]
