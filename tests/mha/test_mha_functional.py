"""``mha.attention`` against ``F.scaled_dot_product_attention`` and a written-out reference."""

import math

import pytest
import torch
import torch.nn.functional as F

import mha

CPU_BACKENDS = ["auto", "sdpa", "math", "flash", "eager", "flex"]


def reference(q, k, v, mask=None, causal_br=False, scale=None):
    """softmax(q k^T * scale + mask) v in float64 with repeat-kv GQA; fully masked rows -> 0."""
    q, k, v = q.double(), k.double(), v.double()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    allowed = torch.ones_like(s, dtype=torch.bool)
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            s = s + mask.double()
            allowed = allowed & (mask > -math.inf)
    if causal_br:
        lq, lk = s.shape[-2:]
        allowed = allowed & torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    s = s.masked_fill(~allowed, -math.inf)
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return w @ v, w


def qkv(b=2, h=4, hkv=4, lq=5, lk=5, d=8, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g, dtype=dtype)
    k = torch.randn(b, hkv, lk, d, generator=g, dtype=dtype)
    v = torch.randn(b, hkv, lk, dv or d, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_sdpa_no_mask(backend):
    q, k, v = qkv(lq=6, lk=9)
    out = mha.attention(q, k, v, backend=backend)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_square_causal_matches_sdpa(backend):
    q, k, v = qkv(lq=7, lk=7)
    out = mha.attention(q, k, v, is_causal=True, backend=backend)
    torch.testing.assert_close(
        out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("lq,lk", [(3, 8), (1, 8), (8, 3)])
def test_causal_is_bottom_right(backend, lq, lk):
    q, k, v = qkv(lq=lq, lk=lk)
    out = mha.attention(q, k, v, is_causal=True, backend=backend)
    ref, _ = reference(q, k, v, causal_br=True)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    if lq > lk:  # the first lq - lk queries see nothing: zeros, not NaN
        assert torch.equal(out[:, :, : lq - lk], torch.zeros_like(out[:, :, : lq - lk]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_masks_match_reference(backend, kind):
    q, k, v = qkv(lq=6, lk=7)
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(2, 1, 6, 7, generator=g) > 0.4
    allowed[..., 0] = True  # no empty rows here
    mask = (
        allowed if kind == "bool" else torch.randn(2, 4, 6, 7, generator=g).masked_fill(~allowed, -math.inf)
    )
    out = mha.attention(q, k, v, mask=mask, backend=backend)
    ref, _ = reference(q, k, v, mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, sdpa, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_mask_and_causal_combine(backend):
    q, k, v = qkv(lq=4, lk=6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 1] = False
    out = mha.attention(q, k, v, mask=mask, is_causal=True, backend=backend)
    ref, _ = reference(q, k, v, mask=mask, causal_br=True)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_fully_masked_rows_are_zero_with_finite_grads(backend, kind):
    if backend == "flex":
        pytest.skip("FlexAttention has no CPU backward (auto routes grads on CPU to eager)")
    q, k, v = (t.requires_grad_() for t in qkv(lq=4, lk=5))
    allowed = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    allowed[0, :, 1] = False  # one query row of batch 0 sees nothing
    allowed[1] = False  # every row of batch 1 sees nothing (fully padded sample)
    mask = allowed if kind == "bool" else torch.zeros(allowed.shape).masked_fill(~allowed, -math.inf)
    out = mha.attention(q, k, v, mask=mask, backend=backend)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, :, 1], torch.zeros_like(out[0, :, 1]))
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    ref, _ = reference(q.detach(), k.detach(), v.detach(), mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[1], torch.zeros_like(q.grad[1]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("hkv", [1, 2])
def test_gqa_matches_repeat_kv(backend, hkv):
    q, k, v = qkv(h=4, hkv=hkv, lq=5, lk=6)
    out = mha.attention(q, k, v, backend=backend)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(4 // hkv, 1), v.repeat_interleave(4 // hkv, 1)
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_value_head_dim_may_differ():
    q, k, v = qkv(d=8, dv=12)
    out = mha.attention(q, k, v)
    assert out.shape == (2, 4, 5, 12)
    torch.testing.assert_close(out.double(), reference(q, k, v)[0], atol=1e-5, rtol=1e-5)


def test_scale_argument():
    q, k, v = qkv()
    out = mha.attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out.double(), reference(q, k, v, scale=0.3)[0], atol=1e-5, rtol=1e-5)


def test_return_weights():
    q, k, v = qkv(lq=4, lk=6)
    mask = torch.ones(4, 6, dtype=torch.bool).tril(2)
    mask[0] = False
    out, w = mha.attention(q, k, v, mask=mask, return_weights=True)
    assert mha.last_backend() == "eager"
    ref_out, ref_w = reference(q, k, v, mask=mask)
    torch.testing.assert_close(w.double(), ref_w, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(w[:, :, 0], torch.zeros_like(w[:, :, 0]))
    torch.testing.assert_close(w[:, :, 1:].sum(-1), torch.ones(2, 4, 3))


def test_score_mod_flex_and_eager_agree():
    q, k, v = qkv(lq=6, lk=6)
    bias = torch.randn(4)

    def head_bias(score, b, h, q_idx, kv_idx):
        return score + bias[h] * (q_idx - kv_idx)

    out_flex = mha.attention(q, k, v, score_mod=head_bias)
    assert mha.last_backend() == "flex"
    out_eager = mha.attention(q, k, v, score_mod=head_bias, backend="eager")
    torch.testing.assert_close(out_flex, out_eager, atol=1e-5, rtol=1e-5)
    dist = (torch.arange(6)[:, None] - torch.arange(6)[None, :]).float()
    float_mask = bias[None, :, None, None] * dist
    torch.testing.assert_close(
        out_flex.double(), reference(q, k, v, mask=float_mask)[0], atol=1e-5, rtol=1e-5
    )


def test_block_mask_sliding_window():
    from torch.nn.attention.flex_attention import create_block_mask

    q, k, v = qkv(lq=8, lk=8)

    def window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < 3)

    block_mask = create_block_mask(window, None, None, 8, 8, device="cpu")
    out = mha.attention(q, k, v, block_mask=block_mask)
    out_eager = mha.attention(q, k, v, block_mask=block_mask, backend="eager")
    ref, _ = reference(q, k, v, mask=mha.sliding_window_mask(8, window=3))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_eager.double(), ref, atol=1e-5, rtol=1e-5)


def test_dropout_applies_only_when_asked():
    q, k, v = qkv()
    base = mha.attention(q, k, v)
    torch.manual_seed(0)
    dropped = mha.attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(base, dropped)
    torch.manual_seed(0)
    _, w = mha.attention(q, k, v, dropout_p=0.5, return_weights=True)  # weights are pre-dropout probabilities
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))


def test_float64_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(b=1, h=2, hkv=1, lq=3, lk=4, d=4, dtype=torch.float64))
    mask = torch.tensor([[True, True, False, True]] * 2 + [[False] * 4])  # last row fully masked
    for backend in ("sdpa", "math", "eager"):
        assert torch.autograd.gradcheck(
            lambda a, b, c, be=backend: mha.attention(a, b, c, mask=mask, backend=be), (q, k, v)
        )
    assert torch.autograd.gradcheck(lambda a, b, c: mha.attention(a, b, c, is_causal=True), (q, k, v))


def test_bf16_runs_and_keeps_dtype():
    q, k, v = qkv(dtype=torch.bfloat16)
    out = mha.attention(q, k, v, is_causal=True)
    assert out.dtype == torch.bfloat16
    ref, _ = reference(q, k, v, causal_br=True)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)


def test_force_backend_context():
    q, k, v = qkv()
    m = mha.MultiHeadAttention(8, 2)
    with mha.force_backend("math"):
        mha.attention(q, k, v)
        assert mha.last_backend() == "math"
        m(torch.randn(1, 3, 8))
        assert mha.last_backend() == "math"
        mha.attention(q, k, v, return_weights=True)
        assert mha.last_backend() == "eager"
        mha.attention(q, k, v, score_mod=lambda s, b, h, qi, ki: s)  # math cannot run a score_mod
        assert mha.last_backend() == "flex"
    mha.attention(q, k, v)
    assert mha.last_backend() == "sdpa"
    with pytest.raises(ValueError, match="backend must be one of"), mha.force_backend("fast"):
        pass


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"q": torch.randn(2, 5, 8)}, ValueError, "4-D"),
        (
            {"k": torch.randn(2, 3, 5, 8), "v": torch.randn(2, 3, 5, 8)},
            ValueError,
            "multiple of key/value heads",
        ),
        ({"v": torch.randn(2, 4, 6, 8)}, ValueError, "k and v must share"),
        ({"k": torch.randn(2, 4, 5, 6)}, ValueError, "head_dim differ"),
        ({"mask": torch.ones(5, 4, dtype=torch.bool)}, ValueError, "not broadcastable"),
        ({"mask": torch.ones(5, 5, dtype=torch.long)}, TypeError, "bool tensor or a float"),
        ({"backend": "xformers"}, ValueError, "backend must be one of"),
        ({"backend": "flash", "return_weights": True}, ValueError, "return_weights"),
        ({"dropout_p": 1.5}, ValueError, "dropout_p"),
        ({"q": [1.0]}, TypeError, "torch.Tensor"),
        ({"k": torch.randn(1, 4, 5, 8), "v": torch.randn(1, 4, 5, 8)}, ValueError, "batch sizes differ"),
        ({"v": torch.randn(1, 4, 5, 8)}, ValueError, "batch sizes differ"),  # SDPA would broadcast these
    ],
)
def test_bad_input_raises(kwargs, err, match):
    q, k, v = qkv()
    args = {"q": q, "k": k, "v": v, **kwargs}
    with pytest.raises(err, match=match):
        mha.attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)


def test_repeat_calls_still_validate_and_respect_force_backend():
    q, k, v = qkv()
    mha.attention(q, k, v)
    with pytest.raises(ValueError, match="k and v must share"):
        mha.attention(q, k, v[:, :, :-1])
    with pytest.raises(TypeError, match="torch.Tensor"):
        mha.attention([1.0], k, v)
    with mha.force_backend("eager"):
        mha.attention(q, k, v)
        assert mha.last_backend() == "eager"


def test_module_short_path_matches_the_general_path():
    """Plain self-attention takes forward's short path; it must equal the general path (key given)."""
    torch.manual_seed(0)
    m = mha.MultiHeadAttention(32, 4).eval()
    x = torch.randn(2, 7, 32, requires_grad=True)
    for causal in (False, True):
        short, _ = m(x, is_causal=causal)
        general, _ = m(x, x, x, is_causal=causal)  # key is query: same projection, general code
        torch.testing.assert_close(short, general, rtol=0, atol=1e-6)
        (gs,) = torch.autograd.grad(short.sum(), x)
        (gg,) = torch.autograd.grad(general.sum(), x)
        torch.testing.assert_close(gs, gg, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="embed_dim=32"):
        m(torch.randn(2, 7, 16))
