"""``torch.compile(fullgraph=True)`` (forward and backward) and ``torch.export`` smoke tests.

``aot_eager`` traces the full graph through AOTAutograd (a graph break or an untraceable op fails the test)
without paying for Inductor's C++ codegen on CPU; one slow-marked test (~50 s cold) runs Inductor end to end.
"""

import pytest
import torch

import mha

pytestmark = pytest.mark.compile

E, H = 32, 4


def inputs():
    torch.manual_seed(0)
    x = torch.randn(2, 8, E, requires_grad=True)
    kpm = torch.zeros(2, 8, dtype=torch.bool)
    kpm[1, 6:] = True
    return x, kpm


def check_fwd_bwd(module, args, kwargs, backend="aot_eager"):
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    out = compiled(*args, **kwargs)[0]
    ref = module(*args, **kwargs)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out.square().sum(), args[0])
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), args[0])
    torch.testing.assert_close(grad, ref_grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "build,kwargs",
    [
        (
            lambda: mha.MultiHeadAttention(E, H, num_kv_heads=2, positional="rope", qk_norm=True),
            {"is_causal": True},
        ),
        (lambda: mha.EncoderLayer(E, H, positional="alibi", drop_path=0.1, layer_scale=1e-2).eval(), {}),
        (lambda: mha.Encoder(2, E, H), {"need_weights": True}),
    ],
    ids=["mha-gqa-rope", "encoder-layer-alibi", "encoder-weights"],
)
def test_fullgraph_forward_backward(build, kwargs):
    x, kpm = inputs()
    check_fwd_bwd(build(), (x,), {"key_padding_mask": kpm, **kwargs})


def test_fullgraph_decoder_and_cached_decoding():
    x, kpm = inputs()
    memory = torch.randn(2, 8, E)
    decoder = mha.Decoder(2, E, H, positional="rope")
    check_fwd_bwd(decoder, (x, memory), {"memory_key_padding_mask": kpm})
    decoder.eval()
    compiled = torch.compile(decoder, fullgraph=True, backend="aot_eager")
    cache = decoder.make_cache()
    with torch.no_grad():
        steps = [compiled(x[:, i : i + 1], memory, cache=cache)[0] for i in range(3)]
        full, _ = decoder(x[:, :3], memory)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_inductor_forward_backward():
    x, kpm = inputs()
    check_fwd_bwd(
        mha.MultiHeadAttention(E, H), (x,), {"key_padding_mask": kpm, "is_causal": True}, "inductor"
    )


def test_export_inference():
    x, kpm = inputs()
    x = x.detach()
    for module in (mha.MultiHeadAttention(E, H, positional="rope").eval(), mha.EncoderLayer(E, H).eval()):
        program = torch.export.export(module, (x,), {"key_padding_mask": kpm})
        out = program.module()(x, key_padding_mask=kpm)[0]
        torch.testing.assert_close(out, module(x, key_padding_mask=kpm)[0])


def test_pinned_kernel_traces():
    """A pinned SDPA kernel (``backend=``, ``force_backend``) enters ``sdpa_kernel`` inside the graph."""
    torch._dynamo.reset()
    q, k, v = torch.randn(3, 2, 2, 16, 8).unbind(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    compiled = torch.compile(
        lambda q, k, v: mha.attention(q, k, v, is_causal=True, backend="math"),
        fullgraph=True,
        backend="aot_eager",
    )
    torch.testing.assert_close(compiled(q, k, v), expected)
    assert mha.last_backend() == "math"
