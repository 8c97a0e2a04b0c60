"""Random shapes and masks (hypothesis) vs a float64 written-out reference and ``nn.MultiheadAttention``."""

import math

import pytest
import torch
from torch import nn

import mha

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
settings = hypothesis.settings(max_examples=40, deadline=None, derandomize=True)


def reference(q, k, v, allowed):
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    s = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~allowed, -math.inf)
    return torch.softmax(s, -1).nan_to_num(0.0) @ v


@settings
@hypothesis.given(
    batch=st.integers(1, 3),
    kv_heads=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2, 3]),
    q_len=st.integers(1, 9),
    k_len=st.integers(1, 9),
    head_dim=st.sampled_from([4, 8, 16]),
    mask_kind=st.sampled_from(["none", "bool", "float", "bool2d"]),
    is_causal=st.booleans(),
    backend=st.sampled_from(["auto", "sdpa", "math", "eager"]),
    seed=st.integers(0, 2**16),
)
def test_attention_random(
    batch, kv_heads, groups, q_len, k_len, head_dim, mask_kind, is_causal, backend, seed
):
    g = torch.Generator().manual_seed(seed)
    heads = kv_heads * groups
    q = torch.randn(batch, heads, q_len, head_dim, generator=g)
    k = torch.randn(batch, kv_heads, k_len, head_dim, generator=g)
    v = torch.randn(batch, kv_heads, k_len, head_dim, generator=g)
    allowed = torch.ones(batch, heads, q_len, k_len, dtype=torch.bool)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(batch, 1, q_len, k_len, generator=g) > 0.3  # empty rows happen
        allowed = allowed & mask
    elif mask_kind == "bool2d":
        mask = torch.rand(q_len, k_len, generator=g) > 0.3
        allowed = allowed & mask
    elif mask_kind == "float":
        keep = torch.rand(batch, heads, q_len, k_len, generator=g) > 0.3
        mask = torch.randn(batch, heads, q_len, k_len, generator=g).masked_fill(~keep, -math.inf)
        allowed = allowed & keep
    if is_causal:
        allowed = allowed & mha.causal_mask(q_len, k_len)
    out = mha.attention(q, k, v, mask=mask, is_causal=is_causal, backend=backend)
    expected = reference(q, k, v, allowed)
    if mask_kind == "float":  # the reference adds the finite float scores too
        scores = (q.double() @ k.double().repeat_interleave(groups, 1).transpose(-1, -2)) / math.sqrt(
            head_dim
        )
        scores = (scores + mask.double()).masked_fill(~allowed, -math.inf)
        expected = torch.softmax(scores, -1).nan_to_num(0.0) @ v.double().repeat_interleave(groups, 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-4)


@settings
@hypothesis.given(
    batch=st.integers(1, 3),
    q_len=st.integers(1, 7),
    k_len=st.integers(1, 7),
    cross=st.booleans(),
    use_attn_mask=st.booleans(),
    use_kpm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_module_random_vs_torch(batch, q_len, k_len, cross, use_attn_mask, use_kpm, seed):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    ours = mha.MultiHeadAttention.from_torch(ref)
    x = torch.randn(batch, q_len, 16)
    mem = torch.randn(batch, k_len, 16) if cross else x
    k_len = mem.shape[1]
    attn_mask = torch.rand(q_len, k_len) > 0.7 if use_attn_mask else None
    kpm = torch.rand(batch, k_len) > 0.7 if use_kpm else None
    r, rw = ref(x, mem, mem, attn_mask=attn_mask, key_padding_mask=kpm)
    o, ow = ours(x, mem, mem, attn_mask=attn_mask, key_padding_mask=kpm, need_weights=True)
    blocked = torch.zeros(batch, q_len, k_len, dtype=torch.bool)
    if attn_mask is not None:
        blocked = blocked | attn_mask
    if kpm is not None:
        blocked = blocked | kpm[:, None, :]
    live = ~blocked.all(-1)  # (batch, q_len): rows PyTorch answers with numbers (it gives NaN for the others)
    torch.testing.assert_close(o[live], r[live], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ow[live], rw[live], atol=1e-6, rtol=1e-4)
    assert torch.isfinite(o).all()
    torch.testing.assert_close(ow[~live], torch.zeros_like(ow[~live]))
