"""``mha``: one multi-head attention core (depends on torch only).

>>> from mha import MultiHeadAttention
>>> attn = MultiHeadAttention(256, 8)            # drop-in for nn.MultiheadAttention(256, 8, batch_first=True)
>>> out, _ = attn(x)                             # self-attention on (batch, seq, 256); weights: None

See ``mha/README.md``.
"""

from .blocks import MLP, Decoder, DecoderLayer, DropPath, Encoder, EncoderLayer, LayerScale
from .cache import DecoderCache, KVCache, StaticDecoderCache
from .functional import attention, force_backend, last_backend
from .masks import and_masks, causal_mask, padding_mask, sliding_window_mask, torch_to_sdpa_mask
from .modules import MultiHeadAttention, load_timm_attention
from .positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    sinusoidal_table,
)

__all__ = [
    "attention",
    "last_backend",
    "force_backend",
    "MultiHeadAttention",
    "load_timm_attention",
    "KVCache",
    "DecoderCache",
    "StaticDecoderCache",
    "MLP",
    "DropPath",
    "LayerScale",
    "EncoderLayer",
    "DecoderLayer",
    "Encoder",
    "Decoder",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "alibi_slopes",
    "alibi_bias",
    "sinusoidal_table",
    "causal_mask",
    "sliding_window_mask",
    "padding_mask",
    "and_masks",
    "torch_to_sdpa_mask",
]
