"""``mha.attention`` against ``F.scaled_dot_product_attention`` and a written-out reference."""

import math

import pytest
import torch
import torch.nn.functional as F

import mha
from mha.functional import AttentionCall, select_backend

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


def test_backend_rules_table():
    base = dict(
        device_type="cuda", dtype=torch.bfloat16, head_dim=128, q_len=4096, k_len=4096, has_mask=False,
        is_causal=True, gqa=False, dropout=False, flex=False, return_weights=False,
    )  # fmt: skip
    assert select_backend(AttentionCall(**base))[0] == "cudnn"
    assert select_backend(AttentionCall(**{**base, "has_mask": True}))[0] == "cudnn"
    assert (
        select_backend(AttentionCall(**{**base, "has_mask": True, "dtype": torch.float32}))[0] == "efficient"
    )
    assert "cudnn" not in select_backend(AttentionCall(**{**base, "q_len": 1}))  # cuDNN raised for decode
    assert select_backend(AttentionCall(**{**base, "q_len": 64, "k_len": 64}))[0] == "efficient"
    assert select_backend(AttentionCall(**{**base, "head_dim": 256}))[0] == "flash"
    vit = {**base, "head_dim": 64, "q_len": 197, "k_len": 197, "is_causal": False}  # ViT at 224 px
    assert select_backend(AttentionCall(**vit, batch_heads=16 * 12)) == ("sdpa",)  # small: host-bound
    assert select_backend(AttentionCall(**vit, batch_heads=256 * 6, requires_grad=True))[0] == "cudnn"
    assert select_backend(AttentionCall(**{**vit, "has_mask": True}, batch_heads=16 * 12))[0] == "cudnn"
    assert (
        select_backend(AttentionCall(**{**vit, "q_len": 64, "k_len": 64}, batch_heads=2048))[0] == "efficient"
    )
    tiny = {**vit, "q_len": 64, "k_len": 64}  # the CIFAR ViT's 8x8 tokens, small batch*heads
    assert select_backend(AttentionCall(**tiny, batch_heads=64 * 4))[0] == "efficient"  # inference
    assert select_backend(AttentionCall(**tiny, batch_heads=64 * 4, requires_grad=True)) == ("sdpa",)
    assert select_backend(AttentionCall(**{**base, "flex": True})) == ("flex",)
    assert select_backend(AttentionCall(**{**base, "flex": True, "dropout": True})) == ("eager",)
    assert select_backend(AttentionCall(**{**base, "return_weights": True})) == ("eager",)
    assert select_backend(AttentionCall(**{**base, "device_type": "cpu"})) == ("sdpa",)


def test_rules_see_the_call_facts(monkeypatch):
    """What ``auto`` hands the rules: sizes (batch*heads included), flags and whether grads are needed."""
    seen: list[AttentionCall] = []
    rule = mha.BackendRule("record", lambda c: seen.append(c) or True, ("sdpa",))
    monkeypatch.setattr(mha.functional, "BACKEND_RULES", [rule])
    mha.clear_backend_cache()
    q = torch.randn(3, 4, 5, 8, requires_grad=True)
    k, v = torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 6)
    mha.attention(q, k, v, mask=torch.ones(5, 7, dtype=torch.bool))
    call = seen[-1]
    assert (call.batch_heads, call.q_len, call.k_len, call.head_dim) == (12, 5, 7, 8)
    assert call.gqa and call.has_mask and call.requires_grad and not call.is_causal
    mha.clear_backend_cache()


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


def test_rules_are_overridable(monkeypatch):
    rule = mha.BackendRule("force math for the test", lambda c: True, ("math",))
    monkeypatch.setattr(mha.functional, "BACKEND_RULES", [rule])
    q, k, v = qkv()
    mha.attention(q, k, v)
    assert mha.last_backend() == "math"


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


@pytest.fixture
def no_short_call(monkeypatch):
    """Plain CPU calls take ``_short_call`` (straight to F.sdpa); tests of the memo and plans behind it
    switch it off."""
    monkeypatch.setattr(mha.functional, "_SHORT_TABLE", None)


def test_auto_decisions_are_memoised_and_clearable(no_short_call):
    mha.clear_backend_cache()
    q, k, v = qkv()
    mha.attention(q, k, v)
    assert len(mha.functional._DECISIONS) == 1
    mha.attention(q, k, v)  # same signature: reused
    assert len(mha.functional._DECISIONS) == 1
    mha.attention(q, k, v, is_causal=True)
    assert len(mha.functional._DECISIONS) == 2
    mha.clear_backend_cache()
    assert not mha.functional._DECISIONS


def test_fast_path_plans_repeat_calls_and_keeps_results(no_short_call):
    """A repeated unmasked signature goes straight to its kernel call (a "plan"), with equal results."""
    mha.clear_backend_cache()
    plans = mha.functional._PLANS
    q, k, v = qkv()
    first = mha.attention(q, k, v, is_causal=True)
    assert len(plans) == 1
    calls = []
    key = next(iter(plans))
    plan = plans[key]
    plans[key] = lambda *a: calls.append(1) or plan(*a)
    again = mha.attention(q, k, v, is_causal=True)
    assert calls == [1]  # the plan ran, not the slow path
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(first, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert mha.last_backend() == "sdpa"
    # every fact the checks and the rules read is part of the key
    mha.attention(q, k, v)  # not causal
    mha.attention(q.requires_grad_(), k, v)  # grads
    assert len(plans) == 3
    # strides are not: a "sdpa" plan hands them to F.sdpa, which reads them itself
    qt = q.detach().transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(mha.attention(qt, k, v), F.scaled_dot_product_attention(qt, k, v))
    assert len(plans) == 3
    # masks, dropout, weights and Flex never take or make a plan
    mha.attention(q, k, v, mask=torch.ones(q.shape[2], k.shape[2], dtype=torch.bool))
    mha.attention(q, k, v, dropout_p=0.1)
    mha.attention(q, k, v, return_weights=True)
    assert len(plans) == 3
    mha.clear_backend_cache()
    assert not plans


def test_fast_path_still_validates_new_signatures_and_respects_force_backend():
    mha.clear_backend_cache()
    q, k, v = qkv()
    mha.attention(q, k, v)  # a plan exists now
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


class _FakeTensor:
    """What ``_short_call`` reads of a tensor, so that its CUDA branch is testable on CPU."""

    def __init__(self, shape, is_cuda, dtype, requires_grad=False):
        self.shape, self.is_cuda, self.dtype, self.requires_grad = (
            torch.Size(shape),
            is_cuda,
            dtype,
            requires_grad,
        )


@pytest.mark.parametrize("cuda", [True, False])
def test_short_call_takes_only_what_the_shipped_rules_send_to_sdpa(monkeypatch, cuda):
    """``_short_call`` (plain calls straight to F.sdpa, no look-up) against ``select_backend``: every call it
    takes, the rules send to ``("sdpa",)``; and on CUDA it takes every self-attention call they send there
    (so the short path is not dead code)."""
    from mha.functional import _short_call

    ran = []
    monkeypatch.setattr(mha.functional, "_SDPA", lambda *a, **kw: ran.append(1) or "sdpa")
    taken = 0
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for b, h in ((1, 1), (16, 12), (32, 16), (64, 8)):
            for n in (1, 64, 128, 129, 197, 256, 257, 1024):
                for d in (64, 128, 256):
                    for causal in (False, True):
                        for grad in (False, True):
                            q, k, v = (_FakeTensor((b, h, n, d), cuda, dtype, grad) for _ in "qkv")
                            out = _short_call(q, k, v, causal, None)
                            call = AttentionCall(
                                device_type="cuda" if cuda else "cpu", dtype=dtype, head_dim=d, q_len=n,
                                k_len=n, has_mask=False, is_causal=causal, gqa=False, dropout=False,
                                flex=False, return_weights=False, requires_grad=grad, batch_heads=b * h,
                            )  # fmt: skip
                            rules = select_backend(call)
                            if out is not None:
                                taken += 1
                                assert rules == ("sdpa",), call
                            else:
                                assert rules != ("sdpa",), call
    assert taken == len(ran) > 0
    # not taken: GQA, a different v head_dim, bottom-right causal with q_len != k_len, mismatched batch
    q = _FakeTensor((2, 4, 197, 64), cuda, torch.bfloat16)
    for k_shape, v_shape, causal in (
        ((2, 2, 197, 64), (2, 2, 197, 64), False),
        ((2, 4, 197, 64), (2, 4, 197, 32), False),
        ((2, 4, 200, 64), (2, 4, 200, 64), True),
        ((1, 4, 197, 64), (1, 4, 197, 64), False),
    ):
        k, v = _FakeTensor(k_shape, cuda, torch.bfloat16), _FakeTensor(v_shape, cuda, torch.bfloat16)
        assert _short_call(q, k, v, causal, None) is None
    flat = _FakeTensor((197,), cuda, torch.bfloat16)  # not 4-D: left to the validated way
    assert _short_call(flat, flat, flat, False, None) is None


def test_short_call_is_off_when_forced_or_rules_edited(monkeypatch):
    q, k, v = qkv()
    mha.attention(q, k, v)
    assert mha.last_backend() == "sdpa"
    with mha.force_backend("math"):
        mha.attention(q, k, v)
        assert mha.last_backend() == "math"
    rule = mha.BackendRule("math for the test", lambda c: True, ("math",))
    monkeypatch.setattr(mha.functional, "BACKEND_RULES", [rule])  # a new table
    mha.attention(q, k, v)
    assert mha.last_backend() == "math"


def test_editing_the_rules_in_place_forgets_plans_and_short_path():
    """``BACKEND_RULES`` edited in place (even an element replaced: same id, same length) takes effect on the
    next call, without ``clear_backend_cache()``; putting the shipped rule back restores the short path."""
    rules = mha.BACKEND_RULES
    q, k, v = qkv(h=4, hkv=2)  # GQA: not a short call, so it makes a plan
    mha.attention(q, k, v)
    mha.attention(q, k, v)
    assert mha.last_backend() == "sdpa" and mha.functional._PLANS
    i = next(i for i, r in enumerate(rules) if r.reason.startswith("not CUDA"))
    shipped = rules[i]
    rules[i] = mha.BackendRule("math on CPU for the test", lambda c: c.device_type != "cuda", ("math",))
    try:
        assert mha.functional._SHORT_TABLE is None and not mha.functional._PLANS
        mha.attention(q, k, v)
        assert mha.last_backend() == "math"
        mha.attention(*qkv())  # a plain call: not short while the table differs from the shipped one
        assert mha.last_backend() == "math"
    finally:
        rules[i] = shipped
    assert mha.functional._SHORT_TABLE is rules
    mha.attention(*qkv())
    assert mha.last_backend() == "sdpa"
    mha.attention(q, k, v)
    assert mha.last_backend() == "sdpa"
