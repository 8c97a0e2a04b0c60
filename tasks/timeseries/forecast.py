"""Forecast the rows after the end of a CSV with a trained checkpoint.

    python -m tasks.timeseries.forecast ckpt=outputs/timeseries/<run>/checkpoints/best.ckpt --csv series.csv
    python -m tasks.timeseries.forecast ckpt=<ckpt> --csv series.csv out=forecast.csv device=cuda

The model settings, the channels, the date column and the training scaler are read from ``timeseries.json``
in the checkpoint's run folder (its folder, parent or grandparent; or ``run_dir=<folder>``); the checkpoint
is read with ``weights_only=True``. The CSV needs the date column and the trained channels (other columns
are ignored) and at least ``lookback`` rows; its last ``lookback`` rows are the input. Written: ``out``
(default ``<csv stem>_forecast.csv`` beside the CSV): the date column (continuing at the CSV's median time
step) and one column per channel in the CSV's units, ``horizon`` rows; and the same name with ``.png``:
the last rows of history and the forecast, one panel per channel.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasks.common import cli, load_checkpoint, read_model_card

from .data import read_csv_series
from .model import PatchTST
from .task import MODEL_FILE

OPTIONS = ("ckpt", "out", "device", "run_dir")


class Forecaster:
    """A trained PatchTST with its scaler, loaded from a ``train.py`` checkpoint and its model card.

    Args:
        ckpt: ``<run>/checkpoints/best.ckpt`` (or ``last.ckpt``).
        run_dir: the folder with ``timeseries.json`` (default: found beside ``ckpt``).
        device: where to run.
    """

    def __init__(self, ckpt: str | Path, run_dir: str | Path | None = None, device: str = "cpu") -> None:
        self.device = cli.device(device)  # a bad name fails before the checkpoint is read
        ckpt = Path(ckpt).expanduser()
        state = load_checkpoint(ckpt, task="timeseries")  # weights_only=True; raises on a missing file
        given = Path(run_dir) / MODEL_FILE if run_dir else None
        self.card, card_path = read_model_card(ckpt, MODEL_FILE, "timeseries", given)
        self.model = PatchTST(**self.card["model"])
        cli.load_weights(self.model, state, ckpt, card_path)
        self.model.to(self.device).eval()
        self.mean = np.asarray(self.card["mean"])
        self.std = np.asarray(self.card["std"])

    @property
    def lookback(self) -> int:
        return int(self.card["model"]["lookback"])

    @torch.no_grad()
    def __call__(self, history: np.ndarray) -> np.ndarray:
        """``history`` (T >= lookback, C) in the data's units -> forecast (horizon, C) in the same units."""
        x = (history[-self.lookback :] - self.mean) / self.std
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)[None]  # (1, lookback, C)
        y = self.model(x)[0].float().cpu().numpy()  # (horizon, C)
        return y * self.std + self.mean

    def forecast_csv(self, csv: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
        """Forecast after the last row of ``csv``; write ``out`` (CSV) and its ``.png``; return both paths."""
        csv = Path(csv).expanduser()
        series = read_csv_series(csv, self.card["date_column"], self.card["channels"])
        if len(series.values) < self.lookback:
            raise ValueError(
                f"{csv} has {len(series.values)} rows; the model reads the last {self.lookback} "
                "(its look-back): pass a longer CSV"
            )
        pred = self(series.values)
        dates = series.dates.astype("datetime64[s]")
        step = np.median(np.diff(dates)) if len(dates) > 1 else np.timedelta64(self.card["step_seconds"], "s")
        future = dates[-1] + step * np.arange(1, len(pred) + 1)
        out = Path(out) if out is not None else csv.with_name(f"{csv.stem}_forecast.csv")
        png = out.with_suffix(".png")
        _write_csv(out, self.card["date_column"], series.channels, future, pred)
        _plot(png, series, pred, future, self.lookback)
        return out, png


def _write_csv(
    path: Path, date_column: str, channels: list[str], dates: np.ndarray, values: np.ndarray
) -> None:
    """The forecast as CSV (``date_column``, then the channels), written atomically."""
    import pandas as pd

    frame = pd.DataFrame(values, columns=channels)
    frame.insert(0, date_column, pd.to_datetime(dates))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _plot(path: Path, series: Any, pred: np.ndarray, future: np.ndarray, lookback: int) -> None:
    """History (the last look-back rows) and forecast, one panel per channel (at most 8); atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = series.channels[:8]
    fig, axes = plt.subplots(len(channels), 1, figsize=(9, 1.8 * len(channels)), sharex=True, squeeze=False)
    for c, name in enumerate(channels):
        ax = axes[c, 0]
        ax.plot(series.dates[-lookback:], series.values[-lookback:, c], color="0.4", lw=0.8, label="history")
        ax.plot(future, pred[:, c], color="C0", lw=1.0, label="forecast")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


USAGE = __doc__ or ""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``ckpt=`` (required), ``--csv PATH`` (required), ``out=``, ``device=``, ``run_dir=``.
    A bad option raises ``SystemExit("error: ...")``, a bad file or checkpoint the project's own error;
    ``python -m`` turns either into one line and exit status 2 (:func:`tasks.common.cli.run_command`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--csv":
            if i + 1 >= len(args):
                raise SystemExit("error: --csv needs a path: --csv series.csv")
            opts["csv"] = args[i + 1]
            i += 2
            continue
        key = arg.split("=", 1)[0]
        if "=" not in arg or key not in OPTIONS:
            raise SystemExit(
                f"error: unknown argument {arg!r}; use {', '.join(f'{o}=' for o in OPTIONS)}, --csv"
            )
        opts[key] = arg.split("=", 1)[1]
        i += 1
    for needed, how in (("ckpt", "ckpt=<run>/checkpoints/best.ckpt"), ("csv", "--csv series.csv")):
        if needed not in opts:
            raise SystemExit(f"error: give {how}")
    csv = Path(opts["csv"]).expanduser()
    if not csv.is_file():  # before the checkpoint is read
        raise SystemExit(f"error: --csv {opts['csv']}: {'is a folder' if csv.is_dir() else 'no such file'}")
    forecaster = Forecaster(opts["ckpt"], opts.get("run_dir"), device=opts.get("device", "cpu"))
    out, png = forecaster.forecast_csv(opts["csv"], opts.get("out"))
    print(f"forecast of {forecaster.card['model']['horizon']} rows written to {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
