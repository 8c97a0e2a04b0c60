"""Time-series data: the embedded TMY3 year, split borders, training-only scaling, windows, CSV errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.timeseries.data import (
    TMY3_CHANNELS,
    TimeSeriesDataModule,
    load_tmy3,
    read_csv_series,
    split_borders,
)
from tests.timeseries.conftest import write_series


def test_tmy3_is_the_real_weather_year():
    series = load_tmy3()
    assert series.values.shape == (8760, 8) and series.channels == list(TMY3_CHANNELS)
    assert str(series.dates[0]) == "1990-01-01T01:00:00" and str(series.dates[-1]) == "1991-01-01T00:00:00"
    assert set(np.diff(series.dates).astype(int)) == {3600}  # hourly, no gaps
    col = dict(zip(series.channels, series.values.T, strict=True))
    assert col["ghi"].min() == 0 and 900 < col["ghi"].max() < 1100  # W/m2: dark nights, bright noons
    assert col["temp_air"].mean() == pytest.approx(14.4, abs=0.3)  # Greensboro NC, degC
    assert 900 < col["pressure"].mean() < 1000  # mbar at 273 m
    assert (series.values.std(axis=0) > 0.5).all()


def test_split_borders_fractions_and_etth():
    assert split_borders(8760, [0.7, 0.1, 0.2], None) == (6132, 7008, 8760)
    assert split_borders(17420, [0.7, 0.1, 0.2], [8640, 11520, 14400]) == (8640, 11520, 14400)
    assert split_borders(1000, [0.6, 0.2, 0.2], None) == (600, 800, 1000)
    with pytest.raises(ValueError, match=r"task.data.borders=\[8640, 100, 14400\] must be three increasing"):
        split_borders(17420, None, [8640, 100, 14400])
    with pytest.raises(ValueError, match="task.data.borders ends at row 14400 but the series has 9000 rows"):
        split_borders(9000, None, [8640, 8800, 14400])
    with pytest.raises(
        ValueError, match=r"task.data.split=\[0.7, 0.2, 0.2\] must be three positive fractions"
    ):
        split_borders(1000, [0.7, 0.2, 0.2], None)


def test_etth_borders_windows_and_reach_back(tmp_path: Path):
    """ETTh protocol: train rows [0, 8640), val [8640 - L, 11520), test [11520 - L, 14400); rows after
    14400 are never used; every val / test window counted."""
    path = tmp_path / "ETTh1.csv"
    write_series(path, 14500, channels=2)
    dm = TimeSeriesDataModule(lookback=336, horizon=96, root=str(path), borders=[8640, 11520, 14400])
    dm.setup()
    assert dm.row_ranges == {"train": (0, 8640), "val": (8304, 11520), "test": (11184, 14400)}
    assert {s: len(dm.dataset(s)) for s in ("train", "val", "test")} == {
        "train": 8209,
        "val": 2785,
        "test": 2785,
    }


def test_scaler_sees_only_training_rows(tmp_path: Path):
    """Changing every val / test row leaves the scaler as it was; it equals the training rows' mean / std."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    frame = write_series(a, 1000)
    frame.iloc[600:, 1:] = frame.iloc[600:, 1:] * 100 + 1e4  # val and test rows only (train = 600 rows)
    frame.to_csv(b, index=False)
    dms = [TimeSeriesDataModule(lookback=24, horizon=12, root=str(p), split=[0.6, 0.2, 0.2]) for p in (a, b)]
    for dm in dms:
        dm.setup()
    np.testing.assert_array_equal(dms[0].mean, dms[1].mean)
    np.testing.assert_array_equal(dms[0].std, dms[1].std)
    train = frame.iloc[:600, 1:].to_numpy()
    np.testing.assert_allclose(dms[0].mean, train.mean(0))
    np.testing.assert_allclose(dms[0].std, train.std(0))  # ddof=0, as sklearn's StandardScaler
    scaled_train = dms[0].scaled[:600]
    torch.testing.assert_close(scaled_train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled_train.std(0, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    assert dms[1].scaled[600:].abs().min() > 100  # val / test are scaled with the training statistics


def test_windows_at_the_borders(tmp_path: Path):
    """With the row number as the series, each split's first / last window is the expected rows."""
    path = tmp_path / "ramp.csv"
    rows = 200
    frame = pd.DataFrame(
        {"date": pd.date_range("2020", periods=rows, freq="h"), "r": np.arange(rows, dtype=float)}
    )
    frame.to_csv(path, index=False)
    lookback, horizon = 10, 5
    dm = TimeSeriesDataModule(lookback=lookback, horizon=horizon, root=str(path), split=[0.5, 0.25, 0.25])
    dm.setup()

    def rows_of(t: torch.Tensor) -> list[int]:
        return [round(v) for v in (t[:, 0].double() * dm.std[0] + dm.mean[0]).tolist()]

    expect = {
        "train": (0, 100, 86),
        "val": (100, 150, 46),
        "test": (150, 200, 46),
    }  # first target, end, count
    for split, (first_target, end, count) in expect.items():
        ds = dm.dataset(split)
        assert len(ds) == count
        x0, y0 = ds[0]
        x1, y1 = ds[len(ds) - 1]
        assert rows_of(x0) == list(range(first_target - lookback, first_target)) if split != "train" else True
        assert rows_of(y0)[0] == (first_target if split != "train" else lookback)
        assert rows_of(y1) == list(range(end - horizon, end))  # the last target is the split's last row
    x, y = dm.dataset("val").__getitems__([0, 3])
    assert x.shape == (2, lookback, 1) and y.shape == (2, horizon, 1)
    assert rows_of(x[1]) == list(range(93, 103))


def test_loaders_keep_every_eval_window(series_csv: Path):
    dm = TimeSeriesDataModule(
        lookback=48, horizon=24, root=str(series_csv), batch_size=32, eval_batch_size=64
    )
    n_test = len(dm.dataset("test"))
    assert n_test == 200 - 24 + 1 and n_test % 64  # a partial last batch
    assert sum(len(x) for x, _ in dm.test_dataloader()) == n_test  # drop_last=False for evaluation
    assert all(len(x) == 32 for x, _ in dm.train_dataloader())  # drop_last for training
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (32, 48, 3) and y.shape == (32, 24, 3)


def test_csv_channels_and_date_column(tmp_path: Path):
    path = tmp_path / "s.csv"
    write_series(path, 50, channels=3).rename(columns={"date": "time"}).to_csv(path, index=False)
    series = read_csv_series(path, date_column="time", channels=["c2", "c0"])
    assert series.channels == ["c2", "c0"] and series.values.shape == (50, 2)
    assert str(series.dates[1]) == "2020-01-01T01:00:00"


# -- bad input: one clear line, the right type, nothing on disk changed --------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit(path: Path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("edit", "kwargs", "error", "pattern"),
    [
        (("c1", 5, ""), {}, ValueError, r"series.csv line 7: column 'c1' has a missing value"),
        (("c1", 9, "NaN"), {}, ValueError, r"series.csv line 11: column 'c1' has a missing value"),
        (("c2", 3, "high"), {}, ValueError, r"series.csv line 5: column 'c2' holds 'high', not a number"),
        (("date", 4, "yesterday"), {}, ValueError, r"line 6: column 'date' holds 'yesterday', not a date"),
        (("date", 4, "2019-01-01 00:00:00"), {}, ValueError, r"line 6: dates go back in time; sort the rows"),
        (
            None,
            {"date_column": "time"},
            ValueError,
            r"series.csv has no date column 'time'.*task.data.date_column",
        ),
        (None, {"channels": ["c0", "c9"]}, ValueError, r"task.data.channels \['c9'\] not found"),
        (None, {"lookback": 690}, ValueError, r"the train split has 700 rows, too few for task.lookback=690"),
        (None, {"horizon": 0}, ValueError, r"task.horizon=0 must be >= 1"),
        (None, {"root": "missing.csv"}, FileNotFoundError, r"task.data.root=.*missing.csv does not exist"),
    ],
)
def test_bad_csv_input_is_one_clear_line(series_csv: Path, edit, kwargs, error, pattern):
    if edit is not None:
        _edit(series_csv, edit[1], edit[0], edit[2])
    before = _snapshot(series_csv.parent)
    kwargs = {"lookback": 48, "horizon": 24, "root": str(series_csv), **kwargs}
    if kwargs["root"] == "missing.csv":
        kwargs["root"] = str(series_csv.parent / "missing.csv")
    with pytest.raises(error, match=pattern) as info:
        TimeSeriesDataModule(**kwargs).setup()
    assert "\n" not in str(info.value)
    assert _snapshot(series_csv.parent) == before


def test_constant_column_is_named(series_csv: Path):
    frame = pd.read_csv(series_csv)
    frame["c1"] = 3.0
    frame.to_csv(series_csv, index=False)
    with pytest.raises(
        ValueError, match=r"column\(s\) \['c1'\] are constant over the training rows.*channels"
    ):
        TimeSeriesDataModule(lookback=48, horizon=24, root=str(series_csv)).setup()
    dm = TimeSeriesDataModule(lookback=48, horizon=24, root=str(series_csv), channels=["c0", "c2"])
    assert dm.num_channels == 2  # the fix the message names works
