"""PatchTST on mha, RevIN, DLinear and the naive forecasts, pinned with values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tasks.timeseries.model import (
    DLinear,
    PatchTST,
    RevIN,
    last_value,
    moving_average,
    seasonal_naive,
)


def test_revin_round_trip_and_statistics():
    torch.manual_seed(0)
    x = torch.randn(4, 50, 3) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([5.0, -3.0, 100.0])
    revin = RevIN(3)
    with torch.no_grad():
        revin.weight.copy_(torch.tensor([0.5, 2.0, -1.5]))
        revin.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    z, stats = revin.normalize(x)
    plain, _ = RevIN(3, affine=False).normalize(x)
    torch.testing.assert_close(plain.mean(1), torch.zeros(4, 3), atol=1e-4, rtol=0)
    torch.testing.assert_close(plain.std(1, correction=0), torch.ones(4, 3), atol=1e-3, rtol=0)  # eps in var
    torch.testing.assert_close(z, plain * revin.weight + revin.bias)
    torch.testing.assert_close(revin.denormalize(z, stats), x, atol=1e-4, rtol=1e-5)


def test_patchtst_shapes_patches_and_attention():
    model = PatchTST(num_channels=3, lookback=336, horizon=96, d_model=16, num_heads=4, num_layers=3)
    assert model.num_patches == 42  # (336 - 16) / 8 + 2: the paper's count with end padding
    x = torch.randn(2, 336, 3)
    y = model(x)
    assert y.shape == (2, 96, 3)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    attn = model.eval().attention(x)
    assert attn.shape == (2, 3, 42, 42)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 42))
    tokens, _ = model._tokens(torch.arange(336.0).view(1, 336, 1).expand(1, 336, 3).contiguous())
    assert tokens.shape == (3, 42, 16)


def test_patches_cover_the_window_with_end_padding():
    """The last patch ends with ``stride`` copies of the last value (the paper's ``padding_patch='end'``)."""
    model = PatchTST(
        num_channels=1,
        lookback=20,
        horizon=4,
        patch_len=8,
        stride=4,
        d_model=8,
        num_heads=2,
        num_layers=1,
        revin=False,
    )
    captured = {}
    model.patch_embed.register_forward_hook(lambda m, args, out: captured.setdefault("patches", args[0]))
    model(torch.arange(20.0).view(1, 20, 1))
    patches = captured["patches"][0]  # (N, patch_len)
    assert patches.shape == (5, 8)
    assert patches[0].tolist() == list(range(8)) and patches[3].tolist() == list(range(12, 20))
    assert patches[4].tolist() == [16, 17, 18, 19, 19, 19, 19, 19]


def test_channels_are_independent_and_scale_equivariant():
    torch.manual_seed(0)
    model = PatchTST(
        num_channels=2,
        lookback=48,
        horizon=12,
        patch_len=12,
        stride=6,
        d_model=8,
        num_heads=2,
        num_layers=1,
        revin_affine=False,
    ).eval()
    x = torch.randn(3, 48, 2)
    other = x.clone()
    other[..., 1] = torch.randn(3, 48) * 5
    with torch.no_grad():
        torch.testing.assert_close(model(other)[..., 0], model(x)[..., 0])  # channel 0 ignores channel 1
        torch.testing.assert_close(model(x * 3 + 7), model(x) * 3 + 7, atol=1e-4, rtol=1e-4)  # RevIN


def test_patchtst_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"task.model.patch_len=64 must be between 1 and task.lookback=48"):
        PatchTST(num_channels=1, lookback=48, horizon=12, patch_len=64)
    with pytest.raises(ValueError, match=r"task.horizon=0 must be >= 1"):
        PatchTST(num_channels=1, lookback=48, horizon=0)
    with pytest.raises(ValueError, match=r"task.model.stride=20 must be between 1 and patch_len=16"):
        PatchTST(num_channels=1, lookback=48, horizon=12, stride=20)


def test_moving_average_and_dlinear_on_known_series():
    ramp = torch.arange(30.0).view(1, 30, 1)
    trend = moving_average(ramp, 5)
    assert trend.shape == ramp.shape
    torch.testing.assert_close(trend[0, 2:-2, 0], ramp[0, 2:-2, 0])  # centred: a line is its own average
    assert trend[0, 0, 0].item() == pytest.approx((0 + 0 + 0 + 1 + 2) / 5)  # ends repeat the first row
    model = DLinear(lookback=30, horizon=6, kernel_size=5)
    with torch.no_grad():
        model.seasonal.bias.zero_()
        model.trend.bias.zero_()
        const = torch.full((2, 30, 3), 4.0)
        torch.testing.assert_close(model(const), torch.full((2, 6, 3), 4.0))  # starts at the window mean


def test_dlinear_learns_a_daily_cycle():
    torch.manual_seed(0)
    t = torch.arange(2000.0)
    series = torch.sin(2 * math.pi * t / 24) + 0.01 * t / 100
    idx = torch.randint(0, 2000 - 72, (256,))[:, None] + torch.arange(72)
    x, y = series[idx[:, :48]].unsqueeze(-1), series[idx[:, 48:]].unsqueeze(-1)
    model = DLinear(48, 24)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(300):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3


def test_naive_forecasts_on_known_series():
    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 2)
    assert last_value(x, 3)[0, :, 0].tolist() == [9, 9, 9]
    assert seasonal_naive(x, 7, period=3)[0, :, 1].tolist() == [7, 8, 9, 7, 8, 9, 7]
    periodic = torch.sin(2 * math.pi * torch.arange(96.0) / 24).view(1, 96, 1)
    torch.testing.assert_close(seasonal_naive(periodic[:, :72], 24, 24), periodic[:, 72:], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"task.period=20 must be between 1 and task.lookback=10"):
        seasonal_naive(x, 3, period=20)


def test_batch_norm_variant_normalises_over_batch_and_patches():
    torch.manual_seed(0)
    model = PatchTST(
        3,
        lookback=48,
        horizon=8,
        d_model=8,
        num_heads=2,
        num_layers=2,
        ffn_dim=16,
        norm="batch",
        norm_first=False,
    )
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 4 and not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    tokens = torch.randn(5, 7, 8) * 3 + 2
    out = norms[0](tokens)  # training mode: zero mean, unit variance per width over batch and sequence
    torch.testing.assert_close(out.mean(dim=(0, 1)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=(0, 1), unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert model(torch.randn(4, 48, 3)).shape == (4, 8, 3)
    with pytest.raises(ValueError, match="task.model.norm"):
        PatchTST(3, lookback=48, horizon=8, norm="group")
