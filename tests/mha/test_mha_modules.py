"""``MultiHeadAttention`` vs ``nn.MultiheadAttention`` and timm ``Attention``; caches, positions, errors."""

import math

import pytest
import torch
from torch import nn

import mha
from mha import KVCache, MultiHeadAttention

E, H = 32, 4


def pair(**kwargs):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(E, H, batch_first=kwargs.pop("batch_first", True), **kwargs).eval()
    with torch.no_grad():  # non-zero biases so they are tested too
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ref, MultiHeadAttention.from_torch(ref)


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights,average", [(False, True), (True, True), (True, False)])
def test_self_attention_matches_torch(bias, need_weights, average):
    ref, ours = pair(bias=bias)
    x = torch.randn(3, 6, E)
    r, rw = ref(x, x, x, need_weights=need_weights, average_attn_weights=average)
    o, ow = ours(x, need_weights=need_weights, average_attn_weights=average)
    close(o, r)
    if need_weights:
        close(ow, rw)
    else:
        assert ow is None
    o2, _ = ours(x, x, x)  # nn.MultiheadAttention's call style works too
    close(o2, r)


@pytest.mark.parametrize("mask_kind", ["bool", "float", "bool3d"])
def test_masks_match_torch(mask_kind):
    ref, ours = pair()
    x = torch.randn(2, 5, E)
    if mask_kind == "bool":
        attn_mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    elif mask_kind == "float":
        attn_mask = torch.randn(5, 5)
    else:
        attn_mask = torch.rand(2 * H, 5, 5) > 0.6
        attn_mask[..., 0] = False
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    r, rw = ref(x, x, x, attn_mask=attn_mask, key_padding_mask=kpm, average_attn_weights=False)
    o, ow = ours(x, attn_mask=attn_mask, key_padding_mask=kpm, need_weights=True, average_attn_weights=False)
    close(o, r)
    close(ow, rw)


def test_float_key_padding_mask_matches_torch():
    ref, ours = pair()
    x = torch.randn(2, 5, E)
    kpm = torch.randn(2, 5)
    close(ours(x, key_padding_mask=kpm)[0], ref(x, x, x, key_padding_mask=kpm)[0])


def test_is_causal_needs_no_mask_and_matches_torch():
    ref, ours = pair()
    x = torch.randn(2, 6, E)
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    r, _ = ref(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    close(ours(x, is_causal=True)[0], r)
    close(ours(x, attn_mask=causal, is_causal=True)[0], r)


def test_cross_attention_and_kdim_vdim_match_torch():
    ref, ours = pair()
    x, mem = torch.randn(2, 4, E), torch.randn(2, 7, E)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[0, 5:] = True
    close(ours(x, mem, mem, key_padding_mask=kpm)[0], ref(x, mem, mem, key_padding_mask=kpm)[0])
    other = torch.randn(2, 7, E)
    close(ours(x, mem, other)[0], ref(x, mem, other)[0])

    ref, ours = pair(kdim=12, vdim=20)
    assert ours.in_proj_weight is None and ours.k_proj_weight.shape == (E, 12)
    k, v = torch.randn(2, 7, 12), torch.randn(2, 7, 20)
    r, rw = ref(x, k, v)
    o, ow = ours(x, k, v, need_weights=True)
    close(o, r)
    close(ow, rw)


def test_batch_first_false_and_unbatched_match_torch():
    ref, ours = pair(batch_first=False)
    x = torch.randn(6, 2, E)  # (seq, batch, embed)
    close(ours(x)[0], ref(x, x, x)[0])
    ref, ours = pair()
    x = torch.randn(6, E)  # unbatched
    r, rw = ref(x, x, x)
    o, ow = ours(x, need_weights=True)
    close(o, r)
    close(ow, rw)


def test_fully_masked_rows_zero_where_torch_gives_nan():
    ref, ours = pair()
    x = torch.randn(2, 4, E)
    kpm = torch.tensor([[False] * 4, [True] * 4])
    r, _ = ref(x, x, x, key_padding_mask=kpm)
    o, w = ours(x, key_padding_mask=kpm, need_weights=True)
    assert torch.isnan(r[1]).all() or torch.isfinite(r).all()  # PyTorch's behaviour varies by path
    assert torch.isfinite(o).all() and torch.isfinite(w).all()
    close(o[0], r[0])
    close(o[1], ours.out_proj.bias.expand(4, E))  # zero attention output -> only the output bias remains
    assert torch.equal(w[1], torch.zeros_like(w[1]))


def test_padding_mask_fast_path_matches_general_path_with_finite_grads():
    # a bool key-padding mask alone takes the short path; it must agree with the general one (weights
    # requested) in values and gradients, a sequence of padding only included
    torch.manual_seed(0)
    _, ours = pair()
    x = torch.randn(3, 5, E, requires_grad=True)
    kpm = torch.tensor([[False] * 5, [False, False, True, True, True], [True] * 5])
    fast, _ = ours(x, key_padding_mask=kpm)
    (gx_fast,) = torch.autograd.grad(fast.square().sum(), x)
    general, _ = ours(x, key_padding_mask=kpm, need_weights=True)
    (gx_general,) = torch.autograd.grad(general.square().sum(), x)
    close(fast, general)
    close(gx_fast, gx_general)
    close(fast[2], ours.out_proj.bias.expand(5, E))  # zero attention output -> only the output bias remains
    assert torch.isfinite(gx_fast).all()


def test_from_torch_keeps_dtype_device_and_mode():
    ref = nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    ours = MultiHeadAttention.from_torch(ref)
    assert ours.in_proj_weight.dtype == torch.float64 and ours.training
    x = torch.randn(2, 3, E, dtype=torch.float64)
    close(ours.eval()(x)[0], ref.eval()(x, x, x)[0])


def test_from_torch_rejects_bias_kv():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(E, H, add_bias_kv=True))
    with pytest.raises(TypeError, match="nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(nn.Linear(2, 2))


@pytest.mark.parametrize("qkv_bias,qk_norm", [(False, False), (True, True)])
def test_timm_attention_matches(qkv_bias, qk_norm):
    timm_attention = pytest.importorskip("timm.layers").Attention
    torch.manual_seed(0)
    ref = timm_attention(E, H, qkv_bias=qkv_bias, qk_norm=qk_norm, norm_layer=nn.LayerNorm).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 9, E)
    ours = mha.load_timm_attention(ref).eval()
    close(ours(x)[0], ref(x))
    from_state = mha.load_timm_attention(ref.state_dict(), num_heads=H).eval()
    close(from_state(x)[0], ref(x))
    assert (ours.in_proj_bias is None) == (not qkv_bias) and ours.out_proj.bias is not None


def test_timm_loader_errors():
    with pytest.raises(ValueError, match="num_heads is required"):
        mha.load_timm_attention({"qkv.weight": torch.zeros(3 * E, E), "proj.weight": torch.zeros(E, E)})
    with pytest.raises(ValueError, match="not a timm Attention"):
        mha.load_timm_attention({"foo": torch.zeros(1)}, num_heads=H)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_gqa_module_matches_manual_repeat_kv(num_kv_heads):
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, num_kv_heads=num_kv_heads).eval()
    d = E // H
    assert m.in_proj_weight.shape == (E + 2 * num_kv_heads * d, E)
    x = torch.randn(2, 5, E)
    q, k, v = torch.nn.functional.linear(x, m.in_proj_weight, m.in_proj_bias).split(
        [E, num_kv_heads * d] * 1 + [num_kv_heads * d], -1
    )
    q = q.view(2, 5, H, d).transpose(1, 2)
    k = k.view(2, 5, num_kv_heads, d).transpose(1, 2).repeat_interleave(H // num_kv_heads, 1)
    v = v.view(2, 5, num_kv_heads, d).transpose(1, 2).repeat_interleave(H // num_kv_heads, 1)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v
    expected = m.out_proj(attn.transpose(1, 2).reshape(2, 5, E))
    close(m(x)[0], expected)


@pytest.mark.parametrize("positional", [None, "rope", "alibi"])
@pytest.mark.parametrize("num_kv_heads", [None, 2])
def test_kv_cache_decode_equals_full_causal_forward(positional, num_kv_heads):
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, num_kv_heads=num_kv_heads, positional=positional, qk_norm=True).eval()
    x = torch.randn(2, 7, E)
    full, _ = m(x, is_causal=True)
    cache = KVCache()
    prefix, _ = m(x[:, :3], is_causal=True, cache=cache)  # prefill 3 tokens, then decode one by one
    steps = [prefix] + [m(x[:, i : i + 1], is_causal=True, cache=cache)[0] for i in range(3, 7)]
    assert cache.seq_len == 7
    close(torch.cat(steps, 1), full)


def test_static_cross_cache_reuses_memory_and_reorders():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H).eval()
    x, mem = torch.randn(3, 2, E), torch.randn(3, 6, E)
    cache = KVCache(static=True)
    first, _ = m(x, mem, cache=cache)
    assert cache.seq_len == 6
    again, _ = m(x, torch.zeros_like(mem), cache=cache)  # memory ignored once cached
    close(first, again)
    close(m(x, cache=cache)[0], first)  # key may be omitted
    idx = torch.tensor([2, 0])
    cache.reorder(idx)
    close(m(x[idx], cache=cache)[0], first[idx])
    cache.reset()
    assert cache.seq_len == 0


def test_self_cache_reorder_for_beam_search():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, positional="rope").eval()
    x = torch.randn(3, 5, E)
    full, _ = m(x, is_causal=True)
    cache = KVCache()
    m(x[:, :4], is_causal=True, cache=cache)
    idx = torch.tensor([1, 1, 2])
    cache.reorder(idx)
    step, _ = m(x[idx, 4:], is_causal=True, cache=cache)
    close(step, full[idx, 4:])


def test_rope_relative_shift_property():
    rope = mha.RotaryEmbedding(16)
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)

    def score(i, j):
        return (rope(q, torch.tensor([i])) * rope(k, torch.tensor([j]))).sum(-1)

    close(score(3, 1), score(10, 8))
    close(score(0, 5), score(20, 25))
    assert not torch.allclose(score(3, 1), score(3, 2))
    close(rope(q, torch.tensor([0])), q)  # position 0 is the identity
    close(rope(q, torch.tensor([7])).norm(dim=-1), q.norm(dim=-1))  # rotations keep norms


def test_positions_offsets_shift_rope_consistently():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, positional="rope").eval()
    x = torch.randn(2, 5, E)
    base, _ = m(x)
    shifted, _ = m(x, positions=torch.arange(100, 105))
    close(base, shifted)  # RoPE scores depend only on differences
    batched, _ = m(x, positions=torch.arange(5).expand(2, 5))
    close(base, batched)


def test_alibi_matches_manual_bias():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, positional="alibi").eval()
    ref = MultiHeadAttention(E, H).eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 5, E)
    slopes = mha.alibi_slopes(H)
    dist = (torch.arange(5)[:, None] - torch.arange(5)[None, :]).abs()
    bias = -slopes[:, None, None] * dist  # (H, L, L)
    float_mask = bias.repeat(2, 1, 1)  # nn.MultiheadAttention's 3-D layout (batch * heads, L, L)
    close(m(x, is_causal=True)[0], ref(x, attn_mask=float_mask, is_causal=True)[0])


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, dropout=0.5)
    x = torch.randn(2, 5, E)
    a, b = m(x)[0], m(x)[0]
    assert not torch.allclose(a, b)
    m.eval()
    close(m(x)[0], m(x)[0])


def test_module_gradcheck_float64():
    torch.manual_seed(0)
    m = MultiHeadAttention(8, 2, num_kv_heads=1, positional="rope", qk_norm=True, dtype=torch.float64)
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    kpm = torch.tensor([[False, False, True]])
    assert torch.autograd.gradcheck(lambda t: m(t, key_padding_mask=kpm, is_causal=True)[0], (x,))


def test_backend_attribute_forces_backend():
    m = MultiHeadAttention(E, H).eval()
    m.backend = "math"
    m(torch.randn(1, 3, E))
    assert mha.last_backend() == "math"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"embed_dim": 30, "num_heads": 4}, "divisible by num_heads"),
        ({"num_kv_heads": 3}, "divisible by num_kv_heads"),
        ({"positional": "sinusoidal"}, "positional must be one of"),
        ({"dropout": 1.0}, "dropout"),
        ({"embed_dim": 0}, "positive int"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"embed_dim": E, "num_heads": H, **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(args.pop("embed_dim"), args.pop("num_heads"), **args)


def test_forward_errors():
    m = MultiHeadAttention(E, H)
    x = torch.randn(2, 5, E)
    with pytest.raises(ValueError, match="query last dim"):
        m(torch.randn(2, 5, E + 1))
    with pytest.raises(ValueError, match="query must be"):
        m(torch.randn(2, 2, 5, E))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        m(x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        m(x, attn_mask=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be a bool"):
        m(x, attn_mask=torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="share \\(batch, seq\\)"):
        m(x, torch.randn(2, 6, E), torch.randn(2, 7, E))
    with pytest.raises(ValueError, match="static"):
        m(x, torch.randn(2, 6, E), cache=KVCache())
    with pytest.raises(ValueError, match="positional=None"):
        m(x, positions=torch.arange(5))
    with pytest.raises(ValueError, match="self-attention only"):
        MultiHeadAttention(E, H, positional="rope")(x, torch.randn(2, 3, E))
    with pytest.raises(TypeError, match="integer"):
        MultiHeadAttention(E, H, positional="rope")(x, positions=torch.zeros(5))
