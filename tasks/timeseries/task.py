"""``task=timeseries``: long-horizon multivariate forecasting with PatchTST on the ``mha`` core.

MSE / MAE on the training-scaled test windows (all channels, all windows), beside three baselines from the
same windows: last value, seasonal naive and DLinear trained here on the same loaders.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from tasks.base import RunContext, Task
from tasks.common.distributed import keep_batch

from .data import TimeSeriesDataModule
from .model import DLinear, PatchTST, last_value, seasonal_naive

#: the model card written into the run folder: what ``forecast.py`` needs to rebuild the model and scale data
MODEL_FILE = "timeseries.json"
LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.smooth_l1_loss}
DEFAULT_DLINEAR: dict[str, Any] = {
    "kernel_size": 25,  # moving-average window of the trend
    "epochs": 10,  # epochs over the training windows (the best by validation MSE is kept)
    "lr": 5e-3,  # Adam learning rate, halved after every epoch (the DLinear authors' schedule)
    "batch_size": 32,  # training batch size
}


class TimeSeriesTask(Task):
    """Forecast ``horizon`` rows of every channel from the previous ``lookback`` rows.

    Args:
        data: :class:`~tasks.timeseries.data.TimeSeriesDataModule` kwargs (source, split, batch size).
        model: :class:`~tasks.timeseries.model.PatchTST` kwargs (channels, look-back, horizon come from here).
        lookback: input rows per window.
        horizon: rows to forecast.
        period: season length of the seasonal-naive baseline in rows (24 for hourly data).
        loss: training loss on the scaled series: ``mse``, ``mae`` or ``huber`` (evaluation is MSE / MAE).
        dlinear: the DLinear baseline's settings (``DEFAULT_DLINEAR``); ``epochs: 0`` leaves it out.
        num_plot_windows: test windows drawn in ``plots/forecasts.png``.
        num_plot_channels: channels per window in that plot (and in ``plots/attention.png``).
        run: the run this task is part of; the model card is written into ``run.run_dir``.
    """

    monitor = "mse"
    monitor_mode = "min"

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        lookback: int = 336,
        horizon: int = 96,
        period: int = 24,
        loss: str = "mse",
        dlinear: dict[str, Any] | None = None,
        num_plot_windows: int = 4,
        num_plot_channels: int = 3,
        run: RunContext | None = None,
    ) -> None:
        super().__init__(data, model, run)
        if int(horizon) < 1:
            raise ValueError(f"task.horizon={horizon} must be >= 1 (rows to forecast)")
        if int(lookback) < 1:
            raise ValueError(f"task.lookback={lookback} must be >= 1 (input rows)")
        if not 1 <= int(period) <= int(lookback):
            raise ValueError(f"task.period={period} must be between 1 and task.lookback={lookback}")
        if loss not in LOSSES:
            raise ValueError(f"task.loss={loss!r}; pick one of {', '.join(LOSSES)}")
        unknown = set(dlinear or {}) - set(DEFAULT_DLINEAR)
        if unknown:
            raise ValueError(f"unknown task.dlinear keys {sorted(unknown)}; known: {sorted(DEFAULT_DLINEAR)}")
        for key in ("num_channels", "lookback", "horizon"):
            if key in self.model_cfg:
                raise ValueError(
                    f"task.model.{key} is set from the data / task.{key}; remove task.model.{key}"
                )
        self.lookback, self.horizon, self.period = int(lookback), int(horizon), int(period)
        # recorded in checkpoints with task.model: a resume with another look-back / horizon is refused
        self.model_cfg.update(lookback=self.lookback, horizon=self.horizon)
        self.loss_name, self.loss_fn = loss, LOSSES[loss]
        self.dlinear_cfg = {**DEFAULT_DLINEAR, **(dlinear or {})}
        self.num_plot_windows, self.num_plot_channels = num_plot_windows, num_plot_channels
        self.dlinear: DLinear | None = None  # trained by baselines()

    # -- building ----------------------------------------------------------------------------------------

    def build_datamodule(self) -> TimeSeriesDataModule:
        return TimeSeriesDataModule(lookback=self.lookback, horizon=self.horizon, **self.data_cfg)

    def build_model(self, datamodule: TimeSeriesDataModule) -> PatchTST:
        datamodule.setup()
        kwargs = {"num_channels": datamodule.num_channels, **self.model_cfg}
        model = PatchTST(**kwargs)
        if self.run.run_dir is not None:
            write_model_card(Path(self.run.run_dir), kwargs, datamodule, self.period)
        return model

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()})

    # -- steps -------------------------------------------------------------------------------------------

    def training_loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(model(x).float(), y)

    def eval_step(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection
    ) -> torch.Tensor:
        x, y = batch
        pred = model(x).float()
        metrics.update(pred.reshape(-1), y.reshape(-1))  # over every channel, row and window
        return F.mse_loss(pred, y)

    # -- baselines ---------------------------------------------------------------------------------------

    def baselines(self, datamodule: TimeSeriesDataModule) -> dict[str, dict[str, float]]:
        """Last value, seasonal naive (``period``) and DLinear trained on the same windows, on the whole
        test split (not sharded: every process scores every window)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        test = _plain_loader(datamodule, "test", datamodule.eval_batch_size, shuffle=False)
        rows = {
            "last value": evaluate(lambda x: last_value(x, self.horizon), test, device),
            f"seasonal naive (period {self.period})": evaluate(
                lambda x: seasonal_naive(x, self.horizon, self.period), test, device
            ),
        }
        if int(self.dlinear_cfg["epochs"]) > 0:
            self.dlinear = train_dlinear(datamodule, self.dlinear_cfg, device)
            rows["DLinear"] = evaluate(self.dlinear, test, device)
        return rows

    # -- artefacts ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def save_artifacts(self, model: nn.Module, datamodule: TimeSeriesDataModule, run_dir: Path) -> None:
        """``plots/forecasts.png`` (a few test windows and channels: history, truth, ours, DLinear) and
        ``plots/attention.png`` (last-layer attention over patches of the first test window)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        test = datamodule.dataset("test")
        n, channels = (
            min(self.num_plot_windows, len(test)),
            min(self.num_plot_channels, datamodule.num_channels),
        )
        if n == 0 or channels == 0:
            return
        idx = torch.linspace(0, len(test) - 1, n).long().tolist()  # spread over the test split
        x, y = test.__getitems__(idx)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        pred = model(x.to(device)).float().cpu()
        attn = model.attention(x[:1].to(device)).float().cpu()[0]  # (C, N, N)
        model.train(was_training)
        other = self.dlinear.cpu()(x) if self.dlinear is not None else None
        names = datamodule.series.channels
        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)

        fig, axes = plt.subplots(n, channels, figsize=(3.6 * channels, 2.2 * n), squeeze=False)
        hist = min(self.lookback, 2 * self.horizon)
        t_hist, t_pred = torch.arange(-hist, 0), torch.arange(self.horizon)
        for i in range(n):
            for c in range(channels):
                ax = axes[i, c]
                ax.plot(t_hist, x[i, -hist:, c], color="0.5", lw=0.8, label="history")
                ax.plot(t_pred, y[i, :, c], color="k", lw=1.0, label="truth")
                ax.plot(t_pred, pred[i, :, c], color="C0", lw=1.0, label="PatchTST (ours)")
                if other is not None:
                    ax.plot(t_pred, other[i, :, c], color="C1", lw=0.8, ls="--", label="DLinear")
                ax.set_title(f"test window {idx[i]}, {names[c]}", fontsize=8)
                ax.tick_params(labelsize=7)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle("forecasts on the test split (training-scaled units; x: rows from the forecast start)")
        fig.tight_layout()
        fig.savefig(out / "forecasts.png", dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, channels, figsize=(3.4 * channels, 3.2), squeeze=False)
        for c in range(channels):
            im = axes[0, c].imshow(attn[c].numpy(), cmap="viridis")
            axes[0, c].set_title(names[c], fontsize=9)
            axes[0, c].set_xlabel("key patch (old -> new)", fontsize=8)
            axes[0, c].set_ylabel("query patch", fontsize=8)
            fig.colorbar(im, ax=axes[0, c], fraction=0.046)
        fig.suptitle(f"last-layer attention over patches, head average (test window {idx[0]})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "attention.png", dpi=100)
        plt.close(fig)


def _plain_loader(dm: TimeSeriesDataModule, split: str, batch_size: int, shuffle: bool) -> DataLoader:
    """A loader over every window of ``split`` (no DDP sharding; the baselines run on each process)."""
    return DataLoader(dm.dataset(split), batch_size=batch_size, shuffle=shuffle, collate_fn=keep_batch)


@torch.no_grad()
def evaluate(forecast: Any, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """MSE and MAE of ``forecast`` ((B, L, C) -> (B, H, C)) over every element of every window."""
    if isinstance(forecast, nn.Module):
        forecast.to(device).eval()
    sq = ab = count = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        err = forecast(x).float() - y
        sq += float(err.square().sum())
        ab += float(err.abs().sum())
        count += err.numel()
    return {"mse": sq / count, "mae": ab / count}


def train_dlinear(dm: TimeSeriesDataModule, cfg: dict[str, Any], device: torch.device) -> DLinear:
    """DLinear trained with MSE on the training windows (Adam, lr halved each epoch); the epoch with the
    best validation MSE is returned (on the CPU)."""
    gen = torch.Generator().manual_seed(dm.seed)
    model = DLinear(dm.lookback, dm.horizon, int(cfg["kernel_size"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    train = DataLoader(
        dm.dataset("train"),
        batch_size=int(cfg["batch_size"]),
        shuffle=True,
        generator=gen,
        collate_fn=keep_batch,
    )
    val = _plain_loader(dm, "val", dm.eval_batch_size, shuffle=False)
    best, best_state = math.inf, None
    for epoch in range(int(cfg["epochs"])):
        for group in optimizer.param_groups:
            group["lr"] = float(cfg["lr"]) * 0.5**epoch
        model.train()
        for x, y in train:
            loss = F.mse_loss(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        score = evaluate(model, val, device)["mse"]
        if score < best:
            best, best_state = score, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.cpu().eval()


def write_model_card(
    run_dir: Path, model_kwargs: dict[str, Any], dm: TimeSeriesDataModule, period: int
) -> Path:
    """``timeseries.json``: the model's kwargs, the channels, the date column and the training scaler
    (written atomically)."""
    dates = dm.series.dates.astype("datetime64[s]").astype("int64")
    card = {
        "model": model_kwargs,
        "channels": dm.series.channels,
        "date_column": dm.date_column,
        "mean": dm.mean.tolist(),
        "std": dm.std.tolist(),
        "step_seconds": int(torch.tensor(dates[1:] - dates[:-1]).median()) if len(dates) > 1 else 3600,
        "period": period,
        "source": dm.source,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / MODEL_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(card, indent=1))
    os.replace(tmp, path)
    return path
