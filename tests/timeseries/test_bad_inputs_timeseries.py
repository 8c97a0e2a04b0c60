"""Bad CSV series for ``task=timeseries``: each case fails with one line naming the file (and the line
and column where there is one) and what was expected, and changes nothing on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.timeseries.data import TimeSeriesDataModule
from tests.app.test_bad_inputs import expect_error


def _rows(n: int = 60) -> list[str]:
    """``n`` hourly rows of two random channels, after a ``date,a,b`` header."""
    rng = np.random.default_rng(0)
    start = np.datetime64("2020-01-01T00:00")
    lines = ["date,a,b"]
    for i, (a, b) in enumerate(rng.standard_normal((n, 2))):
        lines.append(f"{start + np.timedelta64(i, 'h')},{a:.4f},{b:.4f}")
    return lines


def _write(d: Path, lines: list[str] | bytes, name: str = "series.csv") -> Path:
    path = d / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return path


def latin1(d: Path) -> Path:
    rows = _rows()
    rows[5] = rows[5].split(",")[0] + ",M\xfcnchen,1.0"
    return _write(d, ("\n".join(rows) + "\n").encode("latin-1"))


def binary(d: Path) -> Path:
    return _write(d, b"\x89PNG\r\n\x1a\n" + bytes(range(256)))


def empty(d: Path) -> Path:
    return _write(d, b"")


def ragged(d: Path) -> Path:
    rows = _rows()
    rows[7] += ",9.9,9.9"
    return _write(d, rows)


def text_cell(d: Path) -> Path:
    rows = _rows()
    rows[10] = rows[10].rsplit(",", 1)[0] + ",n/a-sensor"
    return _write(d, rows)


def missing_value(d: Path) -> Path:
    rows = _rows()
    rows[12] = rows[12].rsplit(",", 1)[0] + ","
    return _write(d, rows)


def no_date_column(d: Path) -> Path:
    rows = _rows()
    rows[0] = "time,a,b"
    return _write(d, rows)


def bad_date(d: Path) -> Path:
    rows = _rows()
    rows[3] = "yesterday," + rows[3].split(",", 1)[1]
    return _write(d, rows)


def unsorted_dates(d: Path) -> Path:
    rows = _rows()
    rows[20], rows[21] = rows[21], rows[20]
    return _write(d, rows)


def constant_channel(d: Path) -> Path:
    rows = [r.rsplit(",", 1)[0] + (",b" if i == 0 else ",1.0") for i, r in enumerate(_rows())]
    return _write(d, rows)


def folder(d: Path) -> Path:
    (d / "ETTh1").mkdir()
    return d / "ETTh1"


def too_short(d: Path) -> Path:
    return _write(d, _rows(20))


CASES = [
    pytest.param(latin1, ValueError, ["series.csv line 6 is not UTF-8 text", "iconv"], id="latin1"),
    pytest.param(binary, ValueError, ["series.csv line 1 is not UTF-8 text"], id="binary-file"),
    pytest.param(empty, ValueError, ["series.csv is not a readable CSV"], id="empty-file"),
    pytest.param(ragged, ValueError, ["series.csv is not a readable CSV", "line 8"], id="ragged-row"),
    pytest.param(
        text_cell,
        ValueError,
        ["series.csv line 11: column 'b' holds 'n/a-sensor', not a number"],
        id="text-cell",
    ),
    pytest.param(
        missing_value, ValueError, ["series.csv line 13: column 'b' has a missing value"], id="missing-value"
    ),
    pytest.param(
        no_date_column,
        ValueError,
        ["series.csv has no date column 'date'", "task.data.date_column"],
        id="no-date-column",
    ),
    pytest.param(
        bad_date,
        ValueError,
        ["series.csv line 4: column 'date' holds 'yesterday', not a date"],
        id="bad-date",
    ),
    pytest.param(
        unsorted_dates, ValueError, ["series.csv line 22: dates go back in time"], id="unsorted-dates"
    ),
    pytest.param(
        constant_channel, ValueError, ["series.csv: column(s) ['b'] are constant"], id="constant-channel"
    ),
    pytest.param(folder, FileNotFoundError, ["task.data.root=", "ETTh1 is a folder"], id="folder-as-csv"),
    pytest.param(
        too_short,
        ValueError,
        ["series.csv: the train split has 14 rows, too few for task.lookback=24"],
        id="too-short",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CASES)
def test_bad_csv_is_named(tmp_path: Path, make, error, fragments):
    path = make(tmp_path)

    def load() -> None:
        TimeSeriesDataModule(lookback=24, horizon=6, root=str(path), batch_size=4).setup()

    expect_error(load, error, *fragments, watch=[tmp_path])
