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


def test_auto_reports_sdpa():
    q, k, v = strided_qkv(2, 8, 8, 512, 128)
    mha.attention(q, k, v, is_causal=True)
    assert mha.last_backend() == "sdpa"


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


def _kernel_names(fn) -> frozenset[str]:
    """The GPU kernels ``fn`` launches (after a warm-up call: no first-call runtime events)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return frozenset(e.key for e in prof.key_averages() if e.device_type == DeviceType.CUDA)


# (batch, heads, kv_heads, q_len, k_len, head_dim): ViT-B, a long sequence, GQA, a decode step against a cache
SHAPES = [
    (16, 12, 12, 197, 197, 64),
    (2, 8, 8, 1024, 1024, 64),
    (4, 16, 4, 512, 512, 128),
    (32, 8, 2, 1, 300, 64),
]


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_auto_launches_sdpas_own_kernels(shape, grad):
    """``backend="auto"`` is F.sdpa's own choice: the same kernels (forward and backward) and the same
    numbers, reported as ``"sdpa"``."""
    b, h, hkv, lq, lk, d = shape
    torch.manual_seed(0)
    q = torch.randn(b, h, lq, d, device=DEV, dtype=torch.bfloat16, requires_grad=grad)
    k, v = (torch.randn(b, hkv, lk, d, device=DEV, dtype=torch.bfloat16, requires_grad=grad) for _ in "kv")
    gqa = h != hkv

    def ours():
        q.grad = k.grad = v.grad = None  # no accumulation kernels from an earlier call
        out = mha.attention(q, k, v)
        if grad:
            out.sum().backward()
        return out

    def theirs():
        q.grad = k.grad = v.grad = None
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        if grad:
            out.sum().backward()
        return out

    assert _kernel_names(ours) == _kernel_names(theirs)
    assert mha.last_backend() == "sdpa"
    with torch.no_grad():
        expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        torch.testing.assert_close(mha.attention(q, k, v), expected, rtol=0, atol=0)


def test_key_padding_mask_runs_sdpas_kernel():
    """A key-padding mask (translation, recommendation) keeps SDPA's masked kernel; the guard only adds
    elementwise work around it."""
    q, k, v = (torch.randn(32, 8, 128, 64, device=DEV, dtype=torch.bfloat16) for _ in "qkv")
    kpm = torch.rand(32, 128, device=DEV) > 0.8
    allowed = ~kpm[:, None, None, :]
    ours = _kernel_names(lambda: mha.attention(q, k, v, mask=allowed))
    ref = _kernel_names(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    words = ("attention", "fmha", "sdpa", "flash")  # the fused kernels' names (cuDNN's say sdpa / flash)
    attention_kernels = {n for n in ref if any(w in n.lower() for w in words)}
    assert attention_kernels and attention_kernels <= ours, ours


@pytest.mark.parametrize("backend", ["cudnn", "flash", "efficient", "math"])
def test_pinned_backend_runs_that_kernel(backend):
    """``backend=`` pins one SDPA kernel: the kernels of F.sdpa under ``sdpa_kernel`` of that backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(8, 16, 1024, 64, device=DEV, dtype=torch.bfloat16) for _ in "qkv")
    try:
        ours = _kernel_names(lambda: mha.attention(q, k, v, is_causal=True, backend=backend))
    except RuntimeError as err:  # a kernel unavailable on this GPU/build
        pytest.skip(f"{backend}: {err}")
    assert mha.last_backend() == backend
    pinned = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
    pinned |= {"efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    with sdpa_kernel(pinned[backend]):
        ref = _kernel_names(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert ours == ref
    with mha.force_backend(backend):
        assert _kernel_names(lambda: mha.attention(q, k, v, is_causal=True)) == ref


def test_padding_mask_module_path_finite_with_a_sequence_of_padding_only():
    """The module's short key-padding path on a GPU kernel: a sequence of padding only gives a zero
    attention output and finite gradients (a plain SDPA mask would give NaN there)."""
    torch.manual_seed(0)
    attn = mha.MultiHeadAttention(256, 4, device=DEV, dtype=torch.bfloat16)
    x = torch.randn(4, 64, 256, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    kpm = torch.zeros(4, 64, dtype=torch.bool, device=DEV)
    kpm[1, 40:] = True
    kpm[3] = True
    out, _ = attn(x, key_padding_mask=kpm)
    out.float().square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.equal(out[3], attn.out_proj.bias.expand(64, 256))
    general, _ = attn(x, key_padding_mask=kpm, need_weights=True)
    torch.testing.assert_close(out, general, atol=2e-2, rtol=2e-2)
