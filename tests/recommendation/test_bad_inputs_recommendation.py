"""Bad interaction logs for ``task=recommendation``: each case fails with one line naming the file (and
the line) or the key and what was expected, and changes nothing on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.recommendation.data import RecommendationDataModule
from tests.app.test_bad_inputs import expect_error


def _log(d: Path, lines: list[str] | bytes, name: str = "u.data") -> dict:
    path = d / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return {"path": str(path)}


GOOD = [f"{u}\t{i}\t4\t{1000 + 10 * u + i}" for u in range(1, 4) for i in range(1, 6)]


def string_ids(d: Path) -> dict:
    return _log(d, [*GOOD[:4], "alice\tmatrix\t5\t1200"])


def latin1_ids(d: Path) -> dict:
    return _log(d, ("\n".join(GOOD[:6]) + "\n7\tse\xf1or\t4\t99\n").encode("latin-1"))


def ragged(d: Path) -> dict:
    return _log(d, [*GOOD[:3], "1\t9\t4"])


def one_field(d: Path) -> dict:
    return _log(d, ["42", *GOOD])


def bad_timestamp(d: Path) -> dict:
    return _log(d, [*GOOD[:5], "2\t3\t4\tyesterday"])


def empty(d: Path) -> dict:
    return _log(d, b"\n\n")


def folder(d: Path) -> dict:
    (d / "ml-1m").mkdir()
    return {"path": str(d / "ml-1m")}


def missing(d: Path) -> dict:
    return {"path": str(d / "ratings.dat")}


def missing_titles(d: Path) -> dict:
    return {**_log(d, GOOD), "titles": str(d / "u.item")}


def too_few_per_user(d: Path) -> dict:
    return {**_log(d, GOOD), "min_interactions": 8}


CASES = [
    pytest.param(
        string_ids,
        ValueError,
        ["u.data: line 5: user / item ids must be integers", "'alice'"],
        id="string-ids",
    ),
    pytest.param(
        latin1_ids, ValueError, ["u.data: line 7: user / item ids must be integers"], id="latin1-ids"
    ),
    pytest.param(ragged, ValueError, ["u.data: line 4 has 3 fields, earlier lines 4"], id="ragged-line"),
    pytest.param(one_field, ValueError, ["u.data: line 1 has one field"], id="one-field"),
    pytest.param(
        bad_timestamp,
        ValueError,
        ["u.data: line 6: timestamp 'yesterday' is not a number"],
        id="bad-timestamp",
    ),
    pytest.param(empty, ValueError, ["u.data holds no interactions"], id="empty-log"),
    pytest.param(folder, FileNotFoundError, ["task.data.path=", "ml-1m is a folder"], id="folder-as-log"),
    pytest.param(
        missing, FileNotFoundError, ["task.data.path=", "ratings.dat does not exist"], id="missing-log"
    ),
    pytest.param(
        missing_titles, FileNotFoundError, ["task.data.titles=", "u.item is not a file"], id="missing-titles"
    ),
    pytest.param(
        too_few_per_user,
        ValueError,
        ["no user has >= 8 interactions", "task.data.min_interactions"],
        id="too-few-interactions",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CASES)
def test_bad_interaction_log_is_named(tmp_path: Path, make, error, fragments):
    kwargs = make(tmp_path)

    def load() -> None:
        RecommendationDataModule(**kwargs, max_len=10, num_negatives=5).setup()

    expect_error(load, error, *fragments, watch=[tmp_path])
