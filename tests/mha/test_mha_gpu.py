"""CUDA checks (skipped without a GPU): every backend against float32 math, on the strided q/k/v that the
module produces, with GQA, masks, fully masked rows, Flex and compile.  Run: ``pytest -m gpu tests/mha``."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mha

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEV = "cuda"


def reference(q, k, v, allowed=None, causal=False):
    q, k, v = q.float(), k.float(), v.float()
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if allowed is not None:
        s = s.masked_fill(~allowed, -math.inf)
    if causal:
        lq, lk = s.shape[-2:]
        s = s.masked_fill(~torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq), -math.inf)
    return torch.softmax(s, -1).nan_to_num(0.0) @ v


def strided_qkv(b, h, hkv, n, d, dtype=torch.bfloat16):
    """q/k/v as views of one fused projection, like MultiHeadAttention's self-attention path."""
    qkv = torch.randn(b, n, (h + 2 * hkv) * d, device=DEV, dtype=dtype)
    q, k, v = qkv.split([h * d, hkv * d, hkv * d], -1)
    return (
        q.view(b, n, h, d).transpose(1, 2),
        k.view(b, n, hkv, d).transpose(1, 2),
        v.view(b, n, hkv, d).transpose(1, 2),
    )


@pytest.mark.parametrize("backend", ["auto", "cudnn", "flash", "efficient", "math", "eager"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hkv", [8, 2])
def test_backends_match_reference(backend, causal, hkv):
    torch.manual_seed(0)
    q, k, v = strided_qkv(2, 8, hkv, 256, 64)
    try:
        out = mha.attention(q, k, v, is_causal=causal, backend=backend)
    except RuntimeError as err:  # a forced kernel unavailable on this GPU/build
        pytest.skip(f"{backend}: {err}")
    torch.testing.assert_close(out.float(), reference(q, k, v, causal=causal), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("backend", ["auto", "efficient", "math", "eager"])
def test_masked_rows_zero_on_gpu(backend):
    torch.manual_seed(0)
    q, k, v = (t.detach().requires_grad_() for t in strided_qkv(2, 4, 4, 64, 64))
    allowed = torch.rand(2, 1, 64, 64, device=DEV) > 0.5
    allowed[1] = False
    allowed[0, :, 3] = False
    out = mha.attention(q, k, v, mask=allowed, backend=backend)
    assert torch.isfinite(out).all() and out[1].abs().max() == 0 and out[0, :, 3].abs().max() == 0
    torch.testing.assert_close(out.float(), reference(q, k, v, allowed), atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_auto_reports_a_real_kernel():
    q, k, v = strided_qkv(2, 8, 8, 512, 128)
    mha.attention(q, k, v, is_causal=True)
    assert mha.last_backend() in ("cudnn", "flash", "efficient", "math")


def test_flex_compiled_score_mod():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 256, 64, device=DEV, dtype=torch.bfloat16) for _ in range(3))
    slopes = mha.alibi_slopes(4).to(DEV)

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx).abs()

    out = mha.attention(q, k, v, score_mod=alibi)
    assert mha.last_backend() == "flex"
    bias = mha.alibi_bias(slopes, torch.arange(256, device=DEV), torch.arange(256, device=DEV), torch.float32)
    s = (q.float() @ k.float().transpose(-1, -2)) / 8 + bias
    torch.testing.assert_close(out.float(), torch.softmax(s, -1) @ v.float(), atol=2e-2, rtol=2e-2)


def test_module_matches_torch_in_bf16_and_compiles():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(256, 4, batch_first=True, device=DEV, dtype=torch.bfloat16).eval()
    ours = mha.MultiHeadAttention.from_torch(ref)
    x = torch.randn(4, 197, 256, device=DEV, dtype=torch.bfloat16)
    kpm = torch.zeros(4, 197, dtype=torch.bool, device=DEV)
    kpm[1, 150:] = True
    expected = ref(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
    torch.testing.assert_close(ours(x, key_padding_mask=kpm)[0], expected, atol=3e-2, rtol=3e-2)
    compiled = torch.compile(ours, fullgraph=True)
    torch.testing.assert_close(compiled(x, key_padding_mask=kpm)[0], expected, atol=3e-2, rtol=3e-2)
    xg = x.detach().requires_grad_()
    compiled(xg, is_causal=True)[0].float().sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_sdpa_reference_equivalence_fp16():
    q, k, v = strided_qkv(2, 8, 8, 128, 64, dtype=torch.float16)
    torch.testing.assert_close(
        mha.attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=2e-3, rtol=2e-3
    )


@pytest.mark.parametrize(
    "shape", [(80, 8, 8, 64, 64), (80, 8, 8, 197, 64), (2, 8, 2, 512, 64), (1, 4, 4, 300, 128)]
)  # batch*heads > 512 at <= 256 keys: smaller calls go to PyTorch's own SDPA choice (see BACKEND_RULES)
@pytest.mark.parametrize("causal", [False, True])
def test_direct_kernel_path_matches_sdpa_with_grads(shape, causal):
    """Mask-free auto calls go straight to the decided kernel's ATen op: same output and grads as SDPA."""
    from mha.functional import _SDPA_FLAGS, _run_only

    b, h, hkv, n, d = shape
    torch.manual_seed(0)
    mha.clear_backend_cache()
    base = strided_qkv(b, h, hkv, n, d)
    ours_in = [t.detach().clone().requires_grad_() for t in base]
    ref_in = [t.detach().clone().requires_grad_() for t in base]
    out = mha.attention(*ours_in, is_causal=causal)
    kernel = mha.last_backend()
    assert kernel in _SDPA_FLAGS, kernel
    rq, rk, rv = ref_in
    rk, rv = rk.repeat_interleave(h // hkv, 1), rv.repeat_interleave(h // hkv, 1)
    ref = _run_only(kernel, lambda: F.scaled_dot_product_attention(rq, rk, rv, is_causal=causal))
    torch.testing.assert_close(out, ref, atol=1e-2, rtol=1e-2)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    for ours_t, ref_t in zip(ours_in, ref_in, strict=True):
        torch.testing.assert_close(ours_t.grad, ref_t.grad, atol=3e-2, rtol=3e-2)
    with torch.no_grad():  # no logsumexp needed without grads
        torch.testing.assert_close(mha.attention(*base, is_causal=causal), ref.detach(), atol=1e-2, rtol=1e-2)


def test_direct_kernel_plan_steps_aside_for_other_strides_and_flags():
    """A one-kernel plan is keyed without strides and SDPA flags: it must check both and defer on change."""
    from mha.functional import _PLANS, _SDPA_FLAGS

    mha.clear_backend_cache()
    q, k, v = (torch.randn(80, 8, 512, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mha.attention(q, k, v)
    kernel = mha.last_backend()
    assert kernel in _SDPA_FLAGS and len(_PLANS) == 1, kernel
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(mha.attention(q, k, v), ref, atol=1e-2, rtol=1e-2)
    qt = q.transpose(2, 3).contiguous().transpose(2, 3)  # same signature, head_dim not contiguous
    torch.testing.assert_close(mha.attention(qt, k, v), ref, atol=1e-2, rtol=1e-2)
    _, enable = _SDPA_FLAGS[kernel]
    enable(False)
    try:
        torch.testing.assert_close(mha.attention(q, k, v), ref, atol=1e-2, rtol=1e-2)
        other = mha.last_backend()
        assert other != kernel  # the disabled kernel is not run through the old plan
        mha.attention(q, k, v)  # the new layout (flags) got its own entry: the same kernel again
        assert mha.last_backend() == other
    finally:
        enable(True)
    mha.attention(q, k, v)
    assert mha.last_backend() == kernel
    (plan,) = _PLANS.values()
    if other in _SDPA_FLAGS and other != "math":  # a checked fused kernel: kept beside the first layout
        assert len(plan.layouts) == 2
    mha.clear_backend_cache()


def test_plan_keeps_one_entry_per_layout():
    """Contiguous q/k/v and the strided views of a fused qkv projection share a signature: both layouts keep
    their own kernel call instead of the second one taking the slow path on every call."""
    from mha.functional import _PLANS

    mha.clear_backend_cache()
    b, h, n, d = 8, 16, 1024, 64
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qkv = torch.randn(b, n, 3, h, d, device="cuda", dtype=torch.bfloat16)
    qs, ks, vs = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # the module's layout
    mha.attention(q, k, v)
    kernel = mha.last_backend()
    mha.attention(qs, ks, vs)
    assert mha.last_backend() == kernel
    (plan,) = _PLANS.values()
    assert len(plan.layouts) == 2, kernel  # a one-kernel plan at this shape (rule: > 256 keys)
    ref = F.scaled_dot_product_attention(qs, ks, vs)
    torch.testing.assert_close(mha.attention(qs, ks, vs), ref, atol=1e-2, rtol=1e-2)
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(mha.attention(q, k, v), ref, atol=1e-2, rtol=1e-2)
    mha.clear_backend_cache()


def _kernel_names(fn) -> frozenset[str]:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return frozenset(e.key for e in prof.key_averages())


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_plan_runs_the_kernel_it_reports(causal, grad):
    """A remembered plan launches exactly the kernels of the decided backend forced, and ``last_backend``
    names it."""
    from mha.functional import _PLANS, _SDPA_FLAGS, _run_only

    mha.clear_backend_cache()
    q, k, v = (
        torch.randn(8, 16, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=grad) for _ in "qkv"
    )
    with torch.set_grad_enabled(grad):
        first = mha.attention(q, k, v, is_causal=causal)  # slow path: validates, decides, remembers
        kernel = mha.last_backend()
        assert kernel in _SDPA_FLAGS and len(_PLANS) == 1, kernel
        ours = _kernel_names(lambda: mha.attention(q, k, v, is_causal=causal))
        assert mha.last_backend() == kernel
        ref = _kernel_names(
            lambda: _run_only(kernel, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        )
        assert ours == ref, (kernel, ours ^ ref)
        torch.testing.assert_close(mha.attention(q, k, v, is_causal=causal), first, atol=0, rtol=0)
    mha.clear_backend_cache()


@pytest.mark.parametrize("grad", [False, True])
def test_short_call_takes_host_bound_vit_calls(grad):
    """A ViT-B-sized bf16 call (the shipped "host time dominates" rule) goes straight to F.sdpa on real CUDA
    tensors, strided or not: no decision memo, no plan, the same output as F.sdpa, reported as "sdpa"; a
    1k-token call does not (it is decided and planned)."""
    mf = mha.functional
    mha.clear_backend_cache()
    for q, k, v in (
        tuple(torch.randn(16, 12, 197, 64, device=DEV, dtype=torch.bfloat16) for _ in "qkv"),
        strided_qkv(16, 12, 12, 197, 64),
    ):
        q, k, v = (t.detach().requires_grad_(grad) for t in (q, k, v))
        out = mha.attention(q, k, v)
        assert mha.last_backend() == "sdpa"
        assert not mf._DECISIONS and not mf._PLANS
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=0)
        if grad:
            out.sum().backward()
    q, k, v = (torch.randn(2, 8, 1024, 64, device=DEV, dtype=torch.bfloat16) for _ in "qkv")
    mha.attention(q, k, v)
    assert mf._DECISIONS and mf._PLANS and mha.last_backend() != "sdpa"
    mha.clear_backend_cache()
