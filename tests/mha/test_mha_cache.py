"""Preallocated KV caches (in-place appends, growth, reorder), static caches for CUDA graphs, stack-level
padding masks and op counts."""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mha import Decoder, Encoder, KVCache, MultiHeadAttention, StaticDecoderCache
from mha.masks import key_padding_to_sdpa

E, H = 32, 4


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


class OpCounter(TorchDispatchMode):
    """Counts aten ops that produce new data (views are free), forward and backward."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        rets = func._schema.returns
        if not (rets and rets[0].alias_info is not None and not rets[0].alias_info.is_write):
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("capacity", [None, 2, 16])
def test_preallocated_cache_equals_full_forward_and_grows(capacity):
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H, num_kv_heads=2, positional="rope").eval()
    x = torch.randn(2, 9, E)
    full, _ = m(x, is_causal=True)
    cache = KVCache(capacity=capacity)
    with torch.no_grad():
        steps = [m(x[:, :3], is_causal=True, cache=cache)[0]]
        first_buffer = cache._k
        steps += [m(x[:, i : i + 1], is_causal=True, cache=cache)[0] for i in range(3, 9)]
    close(torch.cat(steps, 1), full)
    assert cache.seq_len == 9 and cache.k.shape == (2, 2, 9, E // H)
    assert cache.capacity >= 9
    if capacity == 16:  # big enough: written in place, never reallocated
        assert cache._k is first_buffer and cache.capacity == 16
    if capacity == 2:  # 3 tokens first (allocates 3), then doubling: 6, 12
        assert cache.capacity == 12


def test_cache_reorder_then_grow_equals_full_forward():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H).eval()
    x = torch.randn(3, 7, E)
    idx = torch.tensor([2, 0, 0])
    full, _ = m(x[idx], is_causal=True)
    cache = KVCache(capacity=4)
    with torch.no_grad():
        m(x[:, :4], is_causal=True, cache=cache)
        cache.reorder(idx)
        steps = [m(x[idx, i : i + 1], is_causal=True, cache=cache)[0] for i in range(4, 7)]  # grows at 5
    close(torch.cat(steps, 1), full[:, 4:])
    assert cache.capacity == 8


def test_cache_with_grad_appends_functionally():
    torch.manual_seed(0)
    m = MultiHeadAttention(E, H)
    x = torch.randn(2, 5, E, requires_grad=True)
    cache = KVCache()
    outs = [m(x[:, :2], is_causal=True, cache=cache)[0]]
    outs += [m(x[:, i : i + 1], is_causal=True, cache=cache)[0] for i in range(2, 5)]
    torch.cat(outs, 1).sum().backward()  # in-place writes would break this backward
    full, _ = m(x, is_causal=True)
    close(torch.cat(outs, 1), full)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_cache_batch_mismatch_and_bad_capacity():
    with pytest.raises(ValueError, match="capacity"):
        KVCache(capacity=0)
    m = MultiHeadAttention(E, H).eval()
    cache = KVCache()
    with torch.no_grad():
        m(torch.randn(2, 3, E), is_causal=True, cache=cache)
        with pytest.raises(ValueError, match="reorder"):
            m(torch.randn(3, 1, E), is_causal=True, cache=cache)
    cache.reset()
    assert cache.seq_len == 0 and cache.is_empty


def test_decoder_cache_beam_reorder_without_cross_caches():
    """Beams of one sentence share memory rows: reordering only the self caches gives the same result."""
    torch.manual_seed(0)
    dec = Decoder(2, E, H, ffn_dim=48).eval()
    mem = torch.randn(2, 5, E).repeat_interleave(2, dim=0)  # 2 sentences x 2 beams
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2]).repeat_interleave(2, dim=0)
    tgt = torch.randn(4, 4, E)
    idx = torch.tensor([1, 1, 2, 3])  # within-sentence moves only
    full, _ = dec(tgt[idx], mem, memory_key_padding_mask=kpm)
    cache = dec.make_cache(capacity=2)
    with torch.no_grad():
        dec(tgt[:, :2], mem, memory_key_padding_mask=kpm, cache=cache)
        cross_k = cache.cross_attn[0].k
        cache.reorder(idx, cross=False)
        assert cache.cross_attn[0].k is cross_k  # not copied
        steps = [dec(tgt[idx, i : i + 1], mem, memory_key_padding_mask=kpm, cache=cache)[0] for i in (2, 3)]
    close(torch.cat(steps, 1), full[:, 2:])


def test_key_padding_prepared_once_matches_per_layer_and_skips_the_guard():
    torch.manual_seed(0)
    enc = Encoder(3, E, H, ffn_dim=48).eval()
    x = torch.randn(3, 6, E)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    kpm[2, 1:] = True
    out, _ = enc(x, key_padding_mask=kpm)
    h = x  # reference: each layer converting the module-convention mask itself
    for layer in enc.layers:
        h, _ = layer(h, key_padding_mask=kpm)
    close(out, enc.norm(h))
    with OpCounter() as counter:
        enc(x, key_padding_mask=kpm)
    # no fully-masked-row guard, no per-call bool -> float conversion inside SDPA; one conversion for 3 layers
    assert counter.ops["any"] == 0 and counter.ops["where"] == 0 and counter.ops["bitwise_or"] == 0
    assert counter.ops["all"] == 1 and counter.ops["masked_fill"] == 1


def test_fully_padded_sequence_stays_finite_in_a_stack():
    enc = Encoder(2, E, H).eval()
    kpm = torch.zeros(2, 4, dtype=torch.bool)
    kpm[1] = True
    out, _ = enc(torch.randn(2, 4, E), key_padding_mask=kpm)
    assert torch.isfinite(out).all()
    prepared = key_padding_to_sdpa(kpm)
    assert prepared.shape == (2, 1, 1, 4) and prepared[1].all() and prepared[0].all()
    additive = key_padding_to_sdpa(kpm, torch.bfloat16)
    assert additive.dtype == torch.bfloat16 and torch.equal(
        additive, torch.zeros(2, 1, 1, 4, dtype=torch.bfloat16)
    )
    kpm[0, 3] = True
    assert key_padding_to_sdpa(kpm, torch.float32)[0, 0, 0].tolist() == [0.0, 0.0, 0.0, float("-inf")]
    with pytest.raises(TypeError, match="bool"):
        key_padding_to_sdpa(kpm.float())


def test_decode_step_builds_no_masks():
    """A q_len == 1 step with no padding runs no mask ops at all (no causal mask, no guard)."""
    torch.manual_seed(0)
    dec = Decoder(2, E, H).eval()
    mem = torch.randn(2, 5, E)
    cache = dec.make_cache(capacity=8)
    with torch.no_grad():
        dec(torch.randn(2, 3, E), mem, cache=cache)
        with OpCounter() as counter:
            dec(torch.randn(2, 1, E), mem, cache=cache)
    for name in ("any", "where", "bitwise_not", "bitwise_or", "cat", "ones", "tril", "index_select"):
        assert counter.ops[name] == 0, (name, counter.ops)


def test_decoder_cache_pools_layers_one_copy_per_beam_reorder():
    torch.manual_seed(0)
    dec = Decoder(3, E, H).eval()
    tgt, mem = torch.randn(3, 5, E), torch.randn(3, 4, E)
    idx = torch.tensor([1, 0, 0])
    full, _ = dec(tgt[idx], mem[idx])
    cache = dec.make_cache(capacity=8)
    with torch.no_grad():
        dec(tgt[:, :3], mem, cache=cache)
        with OpCounter() as counter:
            cache.reorder(idx)  # self caches: one copy for all layers; cross caches: two per layer
        assert counter.ops["index_select"] == 1 + 2 * 3
        out = torch.cat([dec(tgt[idx, i : i + 1], mem[idx], cache=cache)[0] for i in (3, 4)], 1)
    close(out, full[:, 3:])
    cache.self_attn[1].reset()  # a layer leaving the pool: reorders fall back to per-layer copies
    cache.reorder(idx)
    assert cache.self_attn[0].seq_len == 5 and cache.self_attn[1].seq_len == 0


def test_static_decoder_cache_equals_full_forward_and_is_reused_after_reset():
    """Fixed shapes for CUDA graphs: one token per call written in place at a device position, attention over
    every slot under the cache's mask, a beam reorder in place; the same buffers serve the next batch."""
    torch.manual_seed(0)
    dec = Decoder(2, E, H, ffn_dim=48).eval()
    cache = StaticDecoderCache(len(dec.layers), capacity=8)
    seen = []  # the buffers' addresses in each batch
    for batch in range(2):
        tgt, mem = torch.randn(3, 5, E), torch.randn(3, 4, E)
        kpm = torch.tensor([[False] * 4, [False] * 2 + [True] * 2, [False] * 4])
        idx = torch.tensor([2, 0, 0])
        full, _ = dec(tgt[idx], mem[idx], memory_key_padding_mask=kpm[idx])
        cache.reset()
        with torch.no_grad():
            for i in range(3):
                dec(tgt[:, i : i + 1], mem, memory_key_padding_mask=kpm, cache=cache)
            cache.reorder(idx)  # self and cross caches follow the rows (the memory mask is the caller's)
            buffers = [b.data_ptr() for b in cache._buffers]
            mem, kpm = mem[idx], kpm[idx]
            steps = [
                dec(tgt[idx, i : i + 1], mem, memory_key_padding_mask=kpm, cache=cache)[0] for i in (3, 4)
            ]
        close(torch.cat(steps, 1), full[:, 3:])
        assert cache.position.tolist() == [5]
        assert cache.front == 1 - batch  # the reorder gathered into the other buffer, now the front one
        seen.append(buffers)
        assert cache.mask.shape == (1, 1, 1, 8)
        assert cache.mask[0, 0, 0].isinf().tolist() == [False] * 5 + [True] * 3
    assert seen[0] == seen[1]  # the same two buffers served the second batch


def test_static_decoder_cache_errors():
    with pytest.raises(ValueError, match="capacity"):
        StaticDecoderCache(2, capacity=0)
    dec = Decoder(1, E, H).eval()
    mem = torch.randn(2, 3, E)
    with torch.no_grad(), pytest.raises(ValueError, match="one token per call"):
        dec(torch.randn(2, 2, E), mem, cache=StaticDecoderCache(1, capacity=4))
    rope = MultiHeadAttention(E, H, positional="rope").eval()
    with torch.no_grad(), pytest.raises(ValueError, match="RoPE/ALiBi"):
        rope(torch.randn(2, 1, E), is_causal=True, cache=StaticDecoderCache(1, capacity=4).self_attn[0])
