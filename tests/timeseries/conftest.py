"""Tiny time-series settings and CSV fixtures (random series only here, in tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

#: a timeseries run on the embedded TMY3 year that takes seconds on CPU: tiny PatchTST, a few steps
TINY_TIMESERIES = [
    "task=timeseries",
    "task.lookback=48",
    "task.horizon=12",
    "task.model.patch_len=12",
    "task.model.stride=12",
    "task.model.d_model=8",
    "task.model.ffn_dim=16",
    "task.model.num_heads=2",
    "task.model.num_layers=1",
    "task.dlinear.epochs=1",
    "task.num_plot_windows=2",
    "task.num_plot_channels=2",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",  # validate (and save best.ckpt) every 2 steps
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def write_series(
    path: Path, rows: int, channels: int = 3, seed: int = 0, start: str = "2020-01-01", freq: str = "h"
) -> pd.DataFrame:
    """A CSV ``date,c0,c1,...`` of random walks plus a daily cycle; returns the frame written."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)[:, None]
    values = np.cumsum(rng.normal(size=(rows, channels)), axis=0) * 0.1 + np.sin(2 * np.pi * t / 24)
    frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(channels)])
    frame.insert(0, "date", pd.date_range(start, periods=rows, freq=freq).strftime("%Y-%m-%d %H:%M:%S"))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


@pytest.fixture
def series_csv(tmp_path: Path) -> Path:
    """1,000 hourly rows of 3 channels."""
    path = tmp_path / "series.csv"
    write_series(path, 1000)
    return path
