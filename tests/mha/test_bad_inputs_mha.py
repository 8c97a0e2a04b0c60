"""Bad input to the attention core: constructor values, tensor shapes, dtypes and masks. Each case raises
the expected error type with one line naming the argument and what it must be (the core touches no files)."""

from __future__ import annotations

import pytest
import torch

from mha import (
    Encoder,
    KVCache,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    attention,
    causal_mask,
    padding_mask,
    sliding_window_mask,
)
from tests.app.test_bad_inputs import expect_error

X = torch.randn(2, 5, 16)  # (batch, seq, embed)
Q = torch.randn(2, 4, 5, 8)  # (batch, heads, seq, head_dim)


def _mha(**kwargs):
    return MultiHeadAttention(16, 4, **kwargs)


CASES = [
    # constructor values
    pytest.param(
        lambda: MultiHeadAttention(16, 3),
        ValueError,
        ["embed_dim (16) must be divisible by num_heads (3)", "num_heads=2"],
        id="heads-divide-width",
    ),
    pytest.param(
        lambda: MultiHeadAttention(16.0, 4),
        ValueError,
        ["embed_dim must be a positive int, got 16.0"],
        id="float-width",
    ),
    pytest.param(
        lambda: MultiHeadAttention(16, 0),
        ValueError,
        ["num_heads must be a positive int, got 0"],
        id="zero-heads",
    ),
    pytest.param(
        lambda: _mha(num_kv_heads=3),
        ValueError,
        ["num_heads (4) must be divisible by num_kv_heads (3)"],
        id="kv-heads",
    ),
    pytest.param(
        lambda: _mha(dropout=1.0), ValueError, ["dropout must be in [0, 1), got 1.0"], id="dropout-one"
    ),
    pytest.param(
        lambda: _mha(positional="xpos"), ValueError, ["positional must be one of", "'xpos'"], id="positional"
    ),
    pytest.param(
        lambda: _mha(backend="cuda"), ValueError, ["backend must be one of", "'cuda'"], id="backend"
    ),
    pytest.param(
        lambda: MultiHeadAttention(12, 4, positional="rope"),
        ValueError,
        ["RotaryEmbedding needs an even head_dim, got 3"],
        id="rope-odd-head-dim",
    ),
    pytest.param(
        lambda: Encoder(0, 16, 4),
        ValueError,
        ["num_layers must be a positive int, got 0"],
        id="encoder-no-layers",
    ),
    pytest.param(
        lambda: Encoder(1, 16, 4, activation="swish"),
        ValueError,
        ["activation must be one of", "'swish'"],
        id="encoder-activation",
    ),
    pytest.param(
        lambda: SinusoidalPositionalEncoding(7),
        ValueError,
        ["needs an even embed_dim, got 7"],
        id="sinusoidal-odd",
    ),
    pytest.param(
        lambda: KVCache(capacity=0),
        ValueError,
        ["capacity must be a positive int or None, got 0"],
        id="cache-capacity",
    ),
    # shapes
    pytest.param(
        lambda: _mha()(torch.randn(2, 5, 8)),
        ValueError,
        ["query last dim must be embed_dim=16", "(2, 5, 8)"],
        id="query-width",
    ),
    pytest.param(
        lambda: _mha()(torch.randn(2, 5, 16, 1)),
        ValueError,
        ["query must be (batch, seq, 16)", "(2, 5, 16, 1)"],
        id="query-4d",
    ),
    pytest.param(
        lambda: _mha()([[0.0] * 16]), TypeError, ["query must be a Tensor, got list"], id="query-list"
    ),
    pytest.param(
        lambda: _mha()(X, torch.randn(3, 5, 16)),
        ValueError,
        ["key and value must share (batch, seq) with batch=2"],
        id="key-batch",
    ),
    pytest.param(
        lambda: _mha()(X, torch.randn(2, 5, 8)),
        ValueError,
        ["key/value last dims must be kdim=16 and vdim=16, got 8"],
        id="key-width",
    ),
    pytest.param(
        lambda: attention(torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
        ValueError,
        ["q must be 4-D (batch, heads, seq, head_dim)", "mha.MultiHeadAttention"],
        id="functional-3d",
    ),
    pytest.param(
        lambda: attention(Q, torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)),
        ValueError,
        ["query heads (4) must be a multiple of key/value heads (3)"],
        id="functional-heads",
    ),
    pytest.param(
        lambda: attention(Q, torch.randn(2, 4, 5, 4), torch.randn(2, 4, 5, 4)),
        ValueError,
        ["q and k head_dim differ: 8 vs 4"],
        id="functional-head-dim",
    ),
    pytest.param(
        lambda: attention(Q, Q, torch.randn(2, 4, 6, 8)),
        ValueError,
        ["k and v must share (kv_heads, k_len)"],
        id="functional-kv-length",
    ),
    # masks
    pytest.param(
        lambda: _mha()(X, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
        ValueError,
        ["key_padding_mask must have shape (batch, k_len)=(2, 5), got (2, 4)"],
        id="padding-mask-shape",
    ),
    pytest.param(
        lambda: _mha()(X, key_padding_mask=torch.zeros(2, 5, dtype=torch.long)),
        TypeError,
        ["key_padding_mask must be a bool tensor or a float tensor", "key_padding_mask.bool()"],
        id="padding-mask-int",
    ),
    pytest.param(
        lambda: _mha()(X, attn_mask=torch.zeros(4, 4, dtype=torch.bool)),
        ValueError,
        ["2-D attn_mask must have shape (q_len, k_len)=(5, 5), got (4, 4)"],
        id="attn-mask-shape",
    ),
    pytest.param(
        lambda: _mha()(X, attn_mask=torch.zeros(5, 5, dtype=torch.int32)),
        TypeError,
        ["attn_mask must be a bool tensor or a float tensor", "torch.int32"],
        id="attn-mask-int",
    ),
    pytest.param(
        lambda: attention(Q, Q, Q, mask=torch.zeros(5, 5, dtype=torch.int64)),
        TypeError,
        ["mask must be a bool tensor or a float tensor", "mask.bool()"],
        id="functional-mask-int",
    ),
    pytest.param(
        lambda: attention(Q, Q, Q, mask=torch.zeros(3, 5, dtype=torch.bool)),
        ValueError,
        ["mask of shape (3, 5) is not broadcastable to (batch, heads, q_len, k_len)=(2, 4, 5, 5)"],
        id="functional-mask-shape",
    ),
    pytest.param(
        lambda: causal_mask(-1, 3),
        ValueError,
        ["causal_mask needs non-negative lengths, got q_len=-1"],
        id="causal-negative",
    ),
    pytest.param(
        lambda: sliding_window_mask(4, 4, window=0),
        ValueError,
        ["window must be >= 1, got 0"],
        id="window-zero",
    ),
    pytest.param(
        lambda: padding_mask(torch.tensor([1.5, 2.0]), 4),
        ValueError,
        ["lengths must be a 1-D integer tensor", "torch.float32"],
        id="padding-lengths-float",
    ),
    # call options and state
    pytest.param(
        lambda: attention(Q, Q, Q, backend="nope"),
        ValueError,
        ["backend must be one of", "'nope'"],
        id="functional-backend",
    ),
    pytest.param(
        lambda: attention(Q, Q, Q, dropout_p=1.5),
        ValueError,
        ["dropout_p must be in [0, 1), got 1.5"],
        id="functional-dropout",
    ),
    pytest.param(
        lambda: attention(Q, Q, Q, backend="flex", dropout_p=0.1),
        ValueError,
        ["FlexAttention has no dropout"],
        id="flex-dropout",
    ),
    pytest.param(
        lambda: _mha()(X, cache=KVCache(static=True)),
        ValueError,
        ["a static (cross-attention) KVCache is empty"],
        id="empty-static-cache",
    ),
    pytest.param(
        lambda: attention(Q, Q.double(), Q.double()),
        TypeError,
        ["q, k and v must share one floating dtype", "torch.float64"],
        id="functional-mixed-dtypes",
    ),
    pytest.param(
        lambda: Encoder(1, 16, 4)(torch.randn(2, 5, 8)),
        ValueError,
        ["Encoder input must be (batch, seq, 16)", "(2, 5, 8)"],
        id="encoder-input-width",
    ),
    pytest.param(
        lambda: _mha()(torch.ones(2, 5, 16, dtype=torch.long)),
        TypeError,
        ["query has dtype torch.int64", "torch.float32"],
        id="integer-query",
    ),
    pytest.param(
        lambda: _mha()(X.double()),
        TypeError,
        ["query has dtype torch.float64 but the module's weights are torch.float32"],
        id="float64-query-float32-weights",
    ),
]


@pytest.mark.parametrize(("call", "error", "fragments"), CASES)
def test_bad_input_to_the_core_is_named(call, error, fragments):
    expect_error(call, error, *fragments)
