"""Features, augmentation and the spectrogram transformer (fast, CPU, random inputs)."""

from __future__ import annotations

import pytest
import torch

from tasks.audio.features import Augment, LogMel
from tasks.audio.model import SpectrogramTransformer


def test_log_mel_shape_normalisation_and_card_round_trip():
    torch.manual_seed(0)
    frontend = LogMel(16000, n_mels=40, win_ms=25, hop_ms=16)
    waves = torch.randn(8, 16000) * 0.1
    assert frontend.num_frames(16000) == 63 and frontend(waves).shape == (8, 40, 63)
    frontend.set_stats(waves)
    feats = frontend(waves)
    torch.testing.assert_close(feats.mean(dim=(0, 2)), torch.zeros(40), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(dim=(0, 2)), torch.ones(40), atol=1e-3, rtol=0)
    again = LogMel.from_card(frontend.card())
    torch.testing.assert_close(again(waves), feats)
    # a clip's features do not depend on the rest of the batch (no batch-wide top_db)
    torch.testing.assert_close(frontend(waves[:1]), feats[:1], atol=1e-5, rtol=0)
    assert frontend.log_mel(torch.zeros(1, 16000)).max() == -100.0  # silence sits on the fixed floor


def test_time_shift_moves_an_impulse_and_fills_zeros():
    torch.manual_seed(0)
    aug = Augment(shift_ms=2.0, gain_db=0, noise_prob=0, freq_masks=0, time_masks=0)
    x = torch.zeros(64, 100)
    x[:, 50] = 1.0
    y = aug.waves(x, sample_rate=1000)  # up to +-2 samples
    where = y.argmax(1) - 50
    assert y.sum(1).eq(1).all() and set(where.tolist()) == {-2, -1, 0, 1, 2}
    z = Augment(shift_ms=100.0, gain_db=0, noise_prob=0).waves(torch.ones(16, 100), sample_rate=1000)
    assert (z == 0).any(1).sum() >= 12 and ((z == 0) | (z == 1)).all()  # shifted-in samples are zeros


def test_noise_is_mixed_at_the_requested_snr():
    torch.manual_seed(0)
    aug = Augment(shift_ms=0, gain_db=0, noise_prob=1.0, snr_db=(20.0, 20.0))
    x = torch.sin(torch.linspace(0, 300, 4000)).repeat(4, 1)
    bank = torch.randn(3, 4000)
    y = aug.waves(x, 8000, noise=bank)
    snr = 10 * torch.log10(x.square().mean(1) / (y - x).square().mean(1))
    torch.testing.assert_close(snr, torch.full((4,), 20.0), atol=1e-3, rtol=0)


def test_spec_augment_masks_whole_rows_and_columns():
    torch.manual_seed(0)
    aug = Augment(freq_masks=1, freq_width=10, time_masks=1, time_width=10)
    feats = torch.ones(32, 40, 63)
    out = aug.spec(feats)
    zero_rows = (out == 0).all(-1).sum(-1)  # masked mel bins per clip
    zero_cols = (out == 0).all(-2).sum(-1)
    assert zero_rows.max() <= 10 and zero_cols.max() <= 10 and zero_rows.sum() > 0 and zero_cols.sum() > 0
    assert not torch.equal(zero_rows, zero_rows[:1].expand(32))  # drawn per clip


@pytest.mark.parametrize(
    ("patch_freq", "patch_time", "pool", "grid"), [(None, 1, "token", (1, 63)), (10, 4, "avg", (4, 16))]
)
def test_spectrogram_transformer_shapes_and_attention(patch_freq, patch_time, pool, grid):
    torch.manual_seed(0)
    model = SpectrogramTransformer(
        40,
        63,
        12,
        patch_freq=patch_freq,
        patch_time=patch_time,
        embed_dim=32,
        depth=2,
        num_heads=4,
        pool=pool,
    ).eval()
    feats = torch.randn(3, 40, 63)
    assert model(feats).shape == (3, 12)
    maps = model.attention_map(feats)
    assert maps.shape == (3, *grid) and (maps >= 0).all()
    if pool == "token":  # the class token's weights over the patches (its own weight left out)
        assert (maps.sum((1, 2)) <= 1 + 1e-5).all() and (maps.sum((1, 2)) > 0.5).all()
    else:
        torch.testing.assert_close(maps.sum((1, 2)), torch.ones(3))
    # the batch does not leak between clips
    torch.testing.assert_close(model(feats[:1]), model(feats)[:1], atol=1e-5, rtol=0)


def test_model_config_errors():
    with pytest.raises(ValueError, match="patch_freq=7 must divide n_mels=40"):
        SpectrogramTransformer(40, 63, 10, patch_freq=7)
    with pytest.raises(ValueError, match="pool must be 'token' or 'avg'"):
        SpectrogramTransformer(40, 63, 10, pool="max")
    with pytest.raises(ValueError, match="embed_dim=30 is not divisible by num_heads=4"):
        SpectrogramTransformer(40, 63, 10, embed_dim=30)
