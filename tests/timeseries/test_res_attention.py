"""PatchTST's residual attention (``res_attention=True``) through mha's API, against a plain-torch reference
that adds each layer's pre-softmax scores to the next layer's."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tasks.timeseries.forecast import Forecaster, main
from tasks.timeseries.model import PatchTST
from tasks.timeseries.task import TimeSeriesTask
from tests.conftest import run_train
from tests.timeseries.conftest import TINY_TIMESERIES, write_series


def reference_encoder(model: PatchTST, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder written out with matmul / softmax and the model's weights (eval mode), as the paper's
    code: ``scores_l = q_l k_l^T / sqrt(head_dim) + scores_{l-1}``; returns (tokens after the final norm,
    per-layer attention probabilities (B * C, heads, N, N))."""
    x, prev, probs = tokens, None, []
    for layer in model.encoder.layers:
        attn = layer.self_attn
        h = layer.norm1(x) if layer.norm_first else x
        batch, seq, width = h.shape
        heads, head_dim = attn.num_heads, width // attn.num_heads
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # (B, N, 3 * E)
        q, k, v = qkv.view(batch, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # each (B, heads, N, hd)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)  # (B, heads, N, N)
        if prev is not None:
            scores = scores + prev
        prev = scores
        probs.append(scores.softmax(-1))
        out = attn.out_proj((probs[-1] @ v).transpose(1, 2).reshape(batch, seq, width))
        x = x + out if layer.norm_first else layer.norm1(x + out)
        mlp = layer.mlp(layer.norm2(x) if layer.norm_first else x)
        x = x + mlp if layer.norm_first else layer.norm2(x + mlp)
    return model.encoder.norm(x), probs


def small_model(res_attention: bool = True, **kwargs) -> PatchTST:
    settings = dict(patch_len=8, stride=4, d_model=16, num_heads=4, num_layers=3, ffn_dim=32, dropout=0.1)
    return PatchTST(3, lookback=48, horizon=12, res_attention=res_attention, **{**settings, **kwargs})


def sharpen(model: PatchTST, factor: float) -> None:
    """Scale the query projections so that scores span several units (the residual then matters)."""
    with torch.no_grad():
        for layer in model.encoder.layers:
            width = layer.self_attn.embed_dim
            layer.self_attn.in_proj_weight[:width] *= factor


@pytest.mark.parametrize(
    "norm, norm_first", [("layer", True), ("batch", False)], ids=["pre-norm LayerNorm", "post-norm BatchNorm"]
)
def test_res_attention_equals_the_reference(norm: str, norm_first: bool):
    torch.manual_seed(0)
    model = small_model(norm=norm, norm_first=norm_first)
    sharpen(model, 4.0)
    if norm == "batch":  # running statistics away from (0, 1), so that eval mode is not the identity
        model.train()(torch.randn(32, 48, 3))
    model.eval()
    x = torch.randn(4, 48, 3)
    with torch.no_grad():
        tokens, _ = model._tokens(x)
        got, weights = model._encode(tokens, need_weights=True)
        want, probs = reference_encoder(model, tokens)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for w, p in zip(weights, probs, strict=True):
            torch.testing.assert_close(w, p, atol=1e-5, rtol=1e-5)
        plain, _ = model.encoder(tokens)
    assert (plain - want).abs().max() > 1e-2  # the residual changes the result at these scores
    # the whole forecast and the plotted maps go through the same path
    attn = model.attention(x)
    torch.testing.assert_close(attn, probs[-1].mean(1).view(4, 3, model.num_patches, model.num_patches))
    with torch.no_grad():
        stats = model.revin.normalize(x)[1]
        head = model.head(want.flatten(1)).view(4, 3, 12).transpose(1, 2)
        torch.testing.assert_close(model(x), model.revin.denormalize(head, stats), atol=1e-5, rtol=1e-5)


def test_off_is_the_plain_encoder_and_parameters_are_the_same():
    """``res_attention`` adds no parameters: checkpoints load either way, and off is the old model."""
    torch.manual_seed(0)
    off, on = small_model(False).eval(), small_model(True).eval()
    on.load_state_dict(off.state_dict())
    x = torch.randn(2, 48, 3)
    with torch.no_grad():
        tokens, _ = off._tokens(x)
        torch.testing.assert_close(off._encode(tokens)[0], off.encoder(tokens)[0], atol=0, rtol=0)
        assert off(x).shape == on(x).shape == (2, 12, 3)
    assert PatchTST(3, lookback=48, horizon=12).res_attention is False  # the class default


def test_shapes_and_attention_maps():
    model = PatchTST(3, lookback=336, horizon=96, res_attention=True)
    x = torch.randn(2, 336, 3)
    assert model(x).shape == (2, 96, 3)
    attn = model.eval().attention(x)
    assert attn.shape == (2, 3, 42, 42)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 42))
    assert model.attention(x, layer=0).shape == (2, 3, 42, 42)


@pytest.mark.parametrize("factor", [1.0, 300.0], ids=["ordinary scores", "weights underflow to 0"])
def test_gradients_are_finite(factor: float):
    """Training mode (dropout on); at factor 300 many weights are exactly 0 in fp32, their log clamped."""
    torch.manual_seed(0)
    model = small_model(attn_dropout=0.1).train()
    sharpen(model, factor)
    x = torch.randn(8, 48, 3)
    if factor > 1:
        tokens, _ = model._tokens(x)
        _, weights = model._encode(tokens, need_weights=True)
        assert any((w == 0).any() for w in weights)
    y = model(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.encoder.layers[0].self_attn.in_proj_weight.grad.abs().sum() > 0


def test_bf16_autocast_stays_finite():
    torch.manual_seed(0)
    model = small_model().train()
    sharpen(model, 4.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(torch.randn(4, 48, 3))
    y.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    t = torch.arange(3000.0)
    series = torch.stack([torch.sin(2 * math.pi * t / 24), torch.cos(2 * math.pi * t / 12)], -1)
    idx = torch.randint(0, 3000 - 60, (64,))[:, None] + torch.arange(60)
    x, y = series[idx[:, :48]], series[idx[:, 48:]]
    small = dict(patch_len=12, stride=6, d_model=8, ffn_dim=16)
    model = PatchTST(2, lookback=48, horizon=12, res_attention=True, **small)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_task_trains_evaluates_and_plots_with_res_attention(tmp_path: Path):
    """``TimeSeriesTask(model={"res_attention": True})`` on the embedded year: the model it builds, a few
    optimiser steps on its training loss, its evaluation step and its plots (attention maps included)."""
    torch.manual_seed(0)
    small = {"patch_len": 12, "stride": 6, "d_model": 8, "num_heads": 2, "num_layers": 2, "ffn_dim": 16}
    model_cfg = {**small, "res_attention": True}
    task = TimeSeriesTask(model=model_cfg, lookback=48, horizon=12, dlinear={"epochs": 0})
    dm = task.build_datamodule()
    model = task.build_model(dm)
    assert model.res_attention is True
    train = dm.dataset("train")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(5):
        loss = task.training_loss(model, train.__getitems__(list(range(64 * step, 64 * step + 64))))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    metrics = task.build_metrics()
    model.eval()
    with torch.no_grad():
        task.eval_step(model, dm.dataset("test").__getitems__(list(range(32))), metrics)
    assert 0 < float(metrics.compute()["mse"]) < 5
    task.num_plot_windows, task.num_plot_channels = 2, 2
    task.save_artifacts(model, dm, tmp_path)
    assert (tmp_path / "plots" / "attention.png").stat().st_size > 5000


def test_train_py_and_forecast_with_res_attention(tmp_path: Path):
    """``task.model.res_attention=true`` through train.py (two layers, so the residual is used), then the
    forecast command on its checkpoint, whose model card rebuilds the model with residual attention."""
    run_dir = tmp_path / "run"
    overrides = ["task.model.res_attention=true", "task.model.num_layers=2", f"hydra.run.dir={run_dir}"]
    proc = run_train([*TINY_TIMESERIES, *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pd.read_csv(run_dir / "results.csv")
    assert 0 < rows["mse"].iloc[0] < 5
    assert (run_dir / "plots" / "attention.png").stat().st_size > 5000
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    forecaster = Forecaster(ckpt)
    assert forecaster.model.res_attention is True and forecaster.card["model"]["res_attention"] is True
    frame = write_series(tmp_path / "series.csv", 100, channels=len(forecaster.card["channels"]))
    frame.columns = ["date", *forecaster.card["channels"]]
    frame.to_csv(tmp_path / "series.csv", index=False)
    assert main([f"ckpt={ckpt}", "--csv", str(tmp_path / "series.csv")]) == 0
    out = pd.read_csv(tmp_path / "series_forecast.csv")
    assert len(out) == 12 and out.drop(columns="date").notna().all().all()
