"""Blocks against ``nn.TransformerEncoderLayer``/``DecoderLayer`` and timm ``Block``; incremental decoding."""

import pytest
import torch
from torch import nn

import mha
from mha import Decoder, DecoderLayer, Encoder, EncoderLayer

E, H = 32, 4


def perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_layer_matches_torch(norm_first, activation, batch_first):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(
        E, H, dim_feedforward=48, activation=activation, norm_first=norm_first, batch_first=batch_first
    )
    ref = perturb(ref).eval()
    ours = EncoderLayer.from_torch(ref).eval()
    x = torch.randn(2, 6, E)
    kpm = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    mask = torch.rand(6, 6) > 0.7
    mask.fill_diagonal_(False)
    r = ref(x if batch_first else x.transpose(0, 1), src_mask=mask, src_key_padding_mask=kpm)
    r = r if batch_first else r.transpose(0, 1)
    o, w = ours(x, attn_mask=mask, key_padding_mask=kpm)
    assert w is None
    close(o[0], r[0])
    close(o[1, :4], r[1, :4])  # padded positions of sample 1 are unspecified in PyTorch's fast path


def test_encoder_layer_state_dict_and_weights():
    torch.manual_seed(0)
    ref = perturb(nn.TransformerEncoderLayer(E, H, dim_feedforward=64, batch_first=True)).eval()
    ours = EncoderLayer(E, H, ffn_dim=64, activation="relu", norm_first=False).eval()
    ours.load_torch_state_dict(ref.state_dict())
    x = torch.randn(2, 5, E)
    o, w = ours(x, need_weights=True)
    close(o, ref(x))
    assert w.shape == (2, H, 5, 5)
    close(w.sum(-1), torch.ones(2, H, 5))


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_layer_matches_torch(norm_first):
    torch.manual_seed(0)
    ref = perturb(
        nn.TransformerDecoderLayer(E, H, dim_feedforward=48, norm_first=norm_first, batch_first=True)
    )
    ref = ref.eval()
    ours = DecoderLayer.from_torch(ref).eval()
    tgt, mem = torch.randn(2, 5, E), torch.randn(2, 7, E)
    mem_kpm = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    r = ref(tgt, mem, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=mem_kpm)
    o, w = ours(tgt, mem, memory_key_padding_mask=mem_kpm, need_weights=True)
    close(o, r)
    assert w.shape == (2, H, 5, 7) and torch.equal(w[1, ..., 5:], torch.zeros_like(w[1, ..., 5:]))
    r_nc = ref(tgt, mem)  # not causal
    close(ours(tgt, mem, tgt_is_causal=False)[0], r_nc)


def test_encoder_stack_matches_torch_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=48, norm_first=True, batch_first=True)
    ref = perturb(nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(E), enable_nested_tensor=False)).eval()
    ours = Encoder(2, E, H, ffn_dim=48, activation="relu").eval()
    for mine, theirs in zip(ours.layers, ref.layers, strict=True):
        mine.load_torch_state_dict(theirs.state_dict())
    ours.norm.load_state_dict(ref.norm.state_dict())
    x = torch.randn(2, 6, E)
    o, ws = ours(x, need_weights=True)
    close(o, ref(x))
    assert len(ws) == 2 and ws[0].shape == (2, H, 6, 6)


@pytest.mark.parametrize("norm_first", [True, False])
def test_stacks_from_torch(norm_first):
    torch.manual_seed(0)
    enc_layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=48, norm_first=norm_first, batch_first=True)
    ref_enc = perturb(
        nn.TransformerEncoder(enc_layer, 2, norm=nn.LayerNorm(E), enable_nested_tensor=False)
    ).eval()
    dec_layer = nn.TransformerDecoderLayer(E, H, dim_feedforward=48, norm_first=norm_first, batch_first=True)
    ref_dec = perturb(nn.TransformerDecoder(dec_layer, 2, norm=nn.LayerNorm(E))).eval()
    enc, dec = Encoder.from_torch(ref_enc).eval(), Decoder.from_torch(ref_dec).eval()
    src, tgt = torch.randn(2, 7, E), torch.randn(2, 5, E)
    close(enc(src)[0], ref_enc(src))
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    close(dec(tgt, src)[0], ref_dec(tgt, src, tgt_mask=causal, tgt_is_causal=True))
    cache = dec.make_cache()  # a PyTorch decoder, decoded incrementally
    steps = torch.cat([dec(tgt[:, i : i + 1], src, cache=cache)[0] for i in range(5)], 1)
    close(steps, ref_dec(tgt, src, tgt_mask=causal, tgt_is_causal=True))


def test_encoder_drop_path_ramp_and_final_norm():
    enc = Encoder(4, E, H, drop_path=0.3)
    assert [layer.drop_path.p for layer in enc.layers] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert isinstance(enc.norm, nn.LayerNorm)
    assert isinstance(Encoder(2, E, H, norm_first=False).norm, nn.Identity)
    assert isinstance(Encoder(2, E, H, final_norm=False).norm, nn.Identity)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"positional": "rope", "num_kv_heads": 2},
        {"positional": "alibi"},
        {"norm_first": False, "qk_norm": True},
    ],
)
def test_decoder_incremental_equals_full(kwargs):
    torch.manual_seed(0)
    dec = Decoder(2, E, H, ffn_dim=48, **kwargs).eval()
    tgt, mem = torch.randn(2, 6, E), torch.randn(2, 5, E)
    mem_kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    full, _ = dec(tgt, mem, memory_key_padding_mask=mem_kpm)
    cache = dec.make_cache()
    steps = []
    for i in range(6):
        assert cache.seq_len == i
        out, _ = dec(tgt[:, i : i + 1], mem, memory_key_padding_mask=mem_kpm, cache=cache)
        steps.append(out)
    close(torch.cat(steps, 1), full)


def test_decoder_cache_reorder_beam():
    torch.manual_seed(0)
    dec = Decoder(2, E, H).eval()
    tgt, mem = torch.randn(3, 4, E), torch.randn(3, 5, E)
    full, ws = dec(tgt, mem, need_weights=True)
    assert len(ws) == 2 and ws[0].shape == (3, H, 4, 5)
    cache = dec.make_cache()
    dec(tgt[:, :3], mem, cache=cache)
    idx = torch.tensor([2, 2, 0])
    cache.reorder(idx)
    out, _ = dec(tgt[idx, 3:], mem[idx], cache=cache)
    close(out, full[idx, 3:])
    with pytest.raises(ValueError, match="make_cache"):
        Decoder(3, E, H)(tgt, mem, cache=cache)


def test_timm_vit_block_loads():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    block = perturb(
        Block(E, H, mlp_ratio=2.0, qkv_bias=True, init_values=1e-2, norm_layer=nn.LayerNorm)
    ).eval()
    ours = EncoderLayer.from_timm_block(block).eval()
    x = torch.randn(2, 9, E)
    close(ours(x)[0], block(x))
    assert timm.__version__


def test_layer_scale_and_drop_path_training():
    torch.manual_seed(0)
    layer = EncoderLayer(E, H, layer_scale=0.0, drop_path=0.5)
    x = torch.randn(4, 3, E)
    close(layer.eval()(x)[0], x)  # zero layer scale: identity
    dp = mha.DropPath(0.5).train()
    y = dp(torch.ones(1000, 2))
    kept = (y[:, 0] != 0).float().mean()
    assert 0.4 < kept < 0.6 and torch.allclose(y[y != 0], torch.tensor(2.0))
    assert torch.equal(dp.eval()(x), x)


def test_mlp_shapes_and_activation():
    mlp = mha.MLP(E, 64, activation="silu")
    assert isinstance(mlp.act, nn.SiLU)
    assert mlp(torch.randn(2, 3, E)).shape == (2, 3, E)
    with pytest.raises(ValueError, match="activation must be one of"):
        mha.MLP(E, 64, activation="swish2")


def test_block_errors():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        EncoderLayer(30, 4)
    with pytest.raises(ValueError, match="drop_path"):
        EncoderLayer(E, H, drop_path=1.0)
    with pytest.raises(ValueError, match="num_layers"):
        Encoder(0, E, H)
    with pytest.raises(TypeError, match="TransformerEncoderLayer"):
        EncoderLayer.from_torch(nn.Linear(2, 2))


def test_sinusoidal_and_learned_positions():
    pe = mha.SinusoidalPositionalEncoding(8)
    x = torch.zeros(1, 4, 8)
    out = pe(x)
    pos, i = 3, 1  # pe[pos, 2i] = sin(pos / 10000^(2i/d)), pe[pos, 2i+1] = cos(...)
    close(out[0, pos, 2 * i], torch.tensor(float(torch.sin(torch.tensor(pos / 10000 ** (2 * i / 8))))))
    close(out[0, pos, 2 * i + 1], torch.tensor(float(torch.cos(torch.tensor(pos / 10000 ** (2 * i / 8))))))
    close(pe(x[:, :1], offset=3)[0, 0], out[0, 3])  # decoding offset
    learned = mha.LearnedPositionalEmbedding(10, 8)
    close(learned(x[:, :2], offset=5)[0], learned.weight[5:7])
    with pytest.raises(ValueError, match="max_len"):
        learned(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match="even"):
        mha.SinusoidalPositionalEncoding(7)


def test_alibi_slopes_known_values():
    close(mha.alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert mha.alibi_slopes(12).shape == (12,)
    assert mha.alibi_slopes(12)[:8].equal(mha.alibi_slopes(8))


def test_mask_factories():
    assert mha.causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert mha.sliding_window_mask(3, window=2).tolist() == [
        [True, False, False],
        [True, True, False],
        [False, True, True],
    ]
    assert mha.padding_mask(torch.tensor([1, 3])).tolist() == [[False, True, True], [False, False, False]]
