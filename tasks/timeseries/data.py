"""Multivariate series for ``task=timeseries``: loading, the literature's splits and scaling, windows.

Sources (pick one):

* embedded default: the hourly TMY3 weather year inside the ``pvlib`` wheel (``pvlib/data/723170TYA.CSV``,
  Greensboro NC, 8,760 hours), read with ``pvlib.iotools.read_tmy3(..., map_variables=True,
  coerce_year=1990)``; the channels are :data:`TMY3_CHANNELS`;
* ``root=/path/series.csv``: a CSV with a date column (``date_column``) and numeric channels (``channels``,
  default: every other column), e.g. the ETT files (``date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT``).

Splits are chronological. ``borders=[a, b, c]`` gives train rows ``[0, a)``, val ``[a, b)``, test ``[b, c)``
(ETTh: ``[8640, 11520, 14400]``, 12/4/4 months); otherwise ``split=[train, val, test]`` fractions cut the
series as the literature's custom-data loader does (train ``int(n * train)`` rows, test ``int(n * test)``,
val the rest between). Val and test windows reach back ``lookback`` rows into the previous split (their
inputs may be older rows; their targets never are). Every channel is standard-scaled with the mean and
standard deviation (``ddof=0``) of the training rows only; metrics are computed on that scale.

A window ``i`` of a split is ``x = rows[i : i + lookback]`` and ``y = rows[i + lookback : i + lookback +
horizon]``; a split of ``r`` rows (plus its reach-back) holds ``r - horizon + 1`` windows (training: ``r -
lookback - horizon + 1``). Batches leave the loader as ``(x float32 (B, lookback, C), y float32 (B,
horizon, C))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.distributed import ShardedLoaders

#: the TMY3 channels used by the embedded default: measured / modelled hourly quantities that vary (the
#: file's other columns are constant (albedo, AOD), flags and uncertainty codes, extraterrestrial values
#: computed from the sun's position, or illuminances derived from the irradiances)
TMY3_CHANNELS = (
    "ghi",
    "dni",
    "dhi",
    "temp_air",
    "temp_dew",
    "relative_humidity",
    "pressure",
    "wind_speed",
)
SPLITS = ("train", "val", "test")


@dataclass
class Series:
    """A loaded series: ``values`` float64 (T, C) in the file's units, ``dates`` (T,) datetime64, names."""

    values: np.ndarray
    dates: np.ndarray
    channels: list[str]
    source: str


def tmy3_path() -> Path:
    """Path of the TMY3 file inside the installed pvlib package."""
    try:
        import pvlib  # lazy: only the embedded default needs it
    except ImportError as err:  # pragma: no cover - pvlib is in the app extra
        raise ImportError(
            "the embedded time-series data needs pvlib (pip install -e '.[app]'); or pass "
            "task.data.root=/path/to/series.csv"
        ) from err
    path = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the pvlib install; reinstall pvlib")
    return path


def load_tmy3(channels: Sequence[str] | None = None) -> Series:
    """The embedded weather year: 8,760 hourly rows of ``channels`` (default :data:`TMY3_CHANNELS`)."""
    import pvlib

    path = tmy3_path()
    frame, _ = pvlib.iotools.read_tmy3(str(path), map_variables=True, coerce_year=1990)
    names = list(channels or TMY3_CHANNELS)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(
            f"task.data.channels names {missing}, not columns of {path.name}; pick from {list(TMY3_CHANNELS)}"
        )
    dates = frame.index.tz_localize(None).to_numpy(dtype="datetime64[s]")
    series = Series(frame[names].to_numpy(np.float64), dates, names, f"TMY3 {path.name} (pvlib)")
    _check_values(series, {c: frame[c] for c in names}, line_offset=3)  # 2 header lines, then the header
    return series


def read_csv_series(
    path: str | Path, date_column: str = "date", channels: Sequence[str] | None = None
) -> Series:
    """A CSV with a date column and numeric channels (default: every other column), rows in time order.

    Raises ValueError (naming the file, the column and the line) for a missing date column, unparsable or
    unsorted dates, non-numeric cells and missing values; FileNotFoundError for a missing file.
    """
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"task.data.root={path} {state}; pass a CSV with a date column and numeric channels "
            "(e.g. paths.data_dir=/path/to/data for the recipes), or drop it for the embedded TMY3 data"
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:  # offsets from the file's start (pandas' count from a chunk's)
            line = raw[: err.start].count(b"\n") + 1
            raise ValueError(
                f"{path} line {line} is not UTF-8 text ({err.reason}); save the CSV as UTF-8, e.g. "
                f"iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"
            ) from None
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{path} is not a readable CSV ({str(err).splitlines()[0][:200]})") from None
    if date_column not in frame.columns:
        raise ValueError(
            f"{path} has no date column {date_column!r} (columns: {list(frame.columns)[:10]}); set "
            "task.data.date_column to the column holding the timestamps"
        )
    names = [c for c in frame.columns if c != date_column] if channels is None else list(channels)
    missing = [c for c in names if c not in frame.columns]
    if missing or not names:
        raise ValueError(
            f"{path}: task.data.channels {missing or names} not found among the columns "
            f"{[c for c in frame.columns if c != date_column][:10]}; fix task.data.channels"
        )
    raw_dates = frame[date_column]
    dates = pd.to_datetime(raw_dates, errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{path} line {i + 2}: column {date_column!r} holds {raw_dates.iloc[i]!r}, not a date; fix the "
            "file or set task.data.date_column"
        )
    if not dates.is_monotonic_increasing:
        i = int(np.flatnonzero(np.diff(dates.to_numpy().astype("int64")) < 0)[0]) + 1
        raise ValueError(f"{path} line {i + 2}: dates go back in time; sort the rows by {date_column!r}")
    series = Series(
        np.zeros((len(frame), len(names))), dates.to_numpy(dtype="datetime64[s]"), names, str(path)
    )
    series.values = _check_values(series, {c: frame[c] for c in names}, line_offset=2)
    return series


def _check_values(series: Series, columns: dict, line_offset: int) -> np.ndarray:
    """Numeric (T, C) float64 of ``columns`` (pandas Series of text or numbers); raises on missing values
    and non-numeric cells with the file line (``row + line_offset``)."""
    import pandas as pd

    out = np.empty((len(series.dates), len(columns)))
    for j, (name, col) in enumerate(columns.items()):
        text = col.astype(str).str.strip()
        empty = np.flatnonzero((text == "") | text.str.lower().isin(["nan", "na", "null", "none"]))
        if len(empty):
            i = int(empty[0])
            raise ValueError(
                f"{series.source} line {i + line_offset}: column {name!r} has a missing value "
                f"({len(empty)} in all); fill or drop those rows, or leave the column out of "
                "task.data.channels"
            )
        values = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"{series.source} line {i + line_offset}: column {name!r} holds {text.iloc[i]!r}, not a "
                "number; fix the file or leave the column out of task.data.channels"
            )
        out[:, j] = values
    return out


def split_borders(
    num_rows: int, split: Sequence[float] | None, borders: Sequence[int] | None
) -> tuple[int, int, int]:
    """``(train_end, val_end, test_end)`` row borders: ``borders`` as given, else from ``split`` fractions
    (train ``int(n * f_train)`` rows, test ``int(n * f_test)`` rows ending at ``n``, val between)."""
    if borders is not None:
        if len(borders) != 3 or not 0 < borders[0] < borders[1] < borders[2]:
            raise ValueError(
                f"task.data.borders={list(borders)} must be three increasing row counts [train_end, "
                "val_end, test_end], e.g. [8640, 11520, 14400] for ETTh"
            )
        if borders[2] > num_rows:
            raise ValueError(
                f"task.data.borders ends at row {borders[2]} but the series has {num_rows} rows; lower "
                "task.data.borders or use task.data.split fractions"
            )
        return int(borders[0]), int(borders[1]), int(borders[2])
    if split is None or len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
        raise ValueError(
            f"task.data.split={None if split is None else list(split)} must be three positive fractions "
            "[train, val, test] summing to 1, e.g. [0.7, 0.1, 0.2]"
        )
    train_end = int(num_rows * split[0])
    val_end = num_rows - int(num_rows * split[2])
    return train_end, val_end, num_rows


class Windows(Dataset):
    """Sliding windows over ``values`` (rows, C): window ``i`` is ``(values[i : i + lookback], values[i +
    lookback : i + lookback + horizon])``; ``__getitems__`` gathers a whole batch with one index op."""

    def __init__(self, values: torch.Tensor, lookback: int, horizon: int) -> None:
        self.values, self.lookback, self.horizon = values, lookback, horizon
        self.offsets = torch.arange(lookback + horizon)

    def __len__(self) -> int:
        return max(0, self.values.shape[0] - self.lookback - self.horizon + 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)[:, None] + self.offsets  # (B, lookback + horizon)
        window = self.values[rows]  # (B, lookback + horizon, C)
        return window[:, : self.lookback], window[:, self.lookback :]


class TimeSeriesDataModule(ShardedLoaders, L.LightningDataModule):
    """Train / val / test loaders of scaled windows (see the module docstring).

    Args:
        lookback: input rows per window (``task.lookback``).
        horizon: forecast rows per window (``task.horizon``).
        root: a CSV file; None: the embedded TMY3 year.
        date_column: the CSV's timestamp column.
        channels: columns to forecast (None: every column but the date; TMY3: :data:`TMY3_CHANNELS`).
        split: ``[train, val, test]`` fractions (used when ``borders`` is None).
        borders: ``[train_end, val_end, test_end]`` rows (ETTh: ``[8640, 11520, 14400]``).
        batch_size: training batch size (per device under DDP).
        eval_batch_size: val / test batch size (the last batch is kept: every window counts).
        seed: seeds the training shuffle under DDP.
        num_workers, pin_memory: DataLoader settings (0 workers is right: a batch is one index op).
    """

    def __init__(
        self,
        lookback: int = 336,
        horizon: int = 96,
        root: str | None = None,
        date_column: str = "date",
        channels: Sequence[str] | None = None,
        split: Sequence[float] | None = (0.7, 0.1, 0.2),
        borders: Sequence[int] | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if int(horizon) < 1:
            raise ValueError(f"task.horizon={horizon} must be >= 1 (rows to forecast)")
        if int(lookback) < 1:
            raise ValueError(f"task.lookback={lookback} must be >= 1 (input rows)")
        if batch_size < 1:
            raise ValueError(f"task.data.batch_size={batch_size} must be >= 1")
        if root is not None and not Path(root).expanduser().is_file():
            read_csv_series(root)  # raises the clear "does not exist" error
        self.lookback, self.horizon = int(lookback), int(horizon)
        self.root, self.date_column = root, date_column
        self.channels = list(channels) if channels is not None else None
        self.split = list(split) if split is not None else None
        self.borders = list(borders) if borders is not None else None
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or 2 * batch_size
        self.seed, self.num_workers, self.pin_memory = seed, num_workers, pin_memory
        self.series: Series | None = None
        self.mean = self.std = None  # (C,) float64: the training rows' statistics
        self.scaled: torch.Tensor | None = None  # (T, C) float32 on the training scale
        self.row_ranges: dict[str, tuple[int, int]] = {}  # split -> rows [start, end) incl. its reach-back

    @property
    def source(self) -> str:
        return self.root or "embedded TMY3 (pvlib)"

    def setup(self, stage: str | None = None) -> None:
        """Load, split and scale once (idempotent)."""
        if self.series is not None:
            return
        if self.root is None:
            series = load_tmy3(self.channels)
        else:
            series = read_csv_series(self.root, self.date_column, self.channels)
        train_end, val_end, test_end = split_borders(len(series.values), self.split, self.borders)
        self.row_ranges = {
            "train": (0, train_end),
            "val": (train_end - self.lookback, val_end),
            "test": (val_end - self.lookback, test_end),
        }
        for name, (start, end) in self.row_ranges.items():
            if start < 0 or end - start < self.lookback + self.horizon:
                own = end - max(start, 0) - (self.lookback if name != "train" else 0)
                raise ValueError(
                    f"{series.source}: the {name} split has {own} rows, too few for task.lookback="
                    f"{self.lookback} + task.horizon={self.horizon}; use a longer series, shorter "
                    "lookback / horizon, or other task.data.split fractions"
                )
        train = series.values[:train_end]
        mean, std = train.mean(axis=0), train.std(axis=0)
        constant = [c for c, s in zip(series.channels, std, strict=True) if not s > 1e-12]
        if constant:
            raise ValueError(
                f"{series.source}: column(s) {constant} are constant over the training rows (nothing to "
                "forecast, and the scaler would divide by 0); leave them out of task.data.channels"
            )
        self.series, self.mean, self.std = series, mean, std
        self.scaled = torch.from_numpy((series.values - mean) / std).float()

    @property
    def num_channels(self) -> int:
        self.setup()
        return len(self.series.channels)

    def dataset(self, split: str) -> Windows:
        """The windows of ``split`` (train, val or test) on the training scale."""
        self.setup()
        start, end = self.row_ranges[split]
        return Windows(self.scaled[start:end], self.lookback, self.horizon)
