"""Log parsing, the leave-one-out protocol, training windows and sampled negatives (fast, CPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tasks.recommendation import data as rd
from tasks.recommendation.data import (
    PAD,
    EvalTargets,
    RecommendationDataModule,
    TrainSequences,
    build_sequences,
    collate_eval,
    collate_train,
    read_interactions,
    sample_negatives,
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("text", "times"),
    [
        ("7\t30\t4\t100\n7\t10\t3\t50\n", [100.0, 50.0]),  # MovieLens u.data
        ("7::30::4::100\n7::10::3::50\n", [100.0, 50.0]),  # ratings.dat
        (
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n7\t30\t4\t100\n7\t10\t3\t50\n",
            [100.0, 50.0],
        ),
        ("7,30,100\n7,10,50\n", [100.0, 50.0]),  # generic user,item,timestamp
        ("7 30\n\n7   10\n", None),  # generic user item: file order is time order
    ],
)
def test_read_interactions_formats(tmp_path, text, times):
    users, items, stamps = read_interactions(_write(tmp_path / "log.txt", text))
    assert users == [7, 7] and items == [30, 10] and stamps == times


def test_leave_one_out_sorts_by_time_and_keeps_file_order_for_ties():
    # user 1: times 5, 1, 3, 3, 9 -> order 20 (t1), 30 (t3), 40 (t3, later in the file), 10 (t5), 50 (t9)
    users = [1, 1, 1, 1, 1, 2, 2, 2, 3, 3]
    items = [10, 20, 30, 40, 50, 10, 30, 20, 10, 20]
    times = [5.0, 1.0, 3.0, 3.0, 9.0, 2.0, 2.0, 2.0, 1.0, 2.0]
    seqs = build_sequences(users, items, times)
    assert seqs.user_ids == [1, 2]  # user 3 has 2 interactions: dropped
    assert seqs.item_ids == [10, 20, 30, 40, 50]  # ids remapped in ascending raw order: 10 -> 1, ...
    assert seqs.seqs == [[2, 3, 4, 1, 5], [1, 3, 2]]
    val, test = EvalTargets(seqs.seqs, "val", 10, None), EvalTargets(seqs.seqs, "test", 10, None)
    assert (val.histories, val.targets) == ([[2, 3, 4], [1]], [1, 3])
    assert (test.histories, test.targets) == ([[2, 3, 4, 1], [1, 3]], [5, 2])


def test_no_future_item_in_a_training_sequence():
    seqs = [list(range(1, 31)), list(range(31, 36)), [36, 37, 38]]  # distinct items: positions are readable
    windows = TrainSequences(seqs, max_len=8).seqs
    # cut from the end of items[:-2] into windows of 9 overlapping by one: every transition once
    assert windows == [
        list(range(20, 29)),
        list(range(12, 21)),
        list(range(4, 13)),
        [1, 2, 3, 4],
        [31, 32, 33],
    ]
    for seq in seqs:
        held_out = set(seq[-2:])
        assert not any(held_out & set(w) for w in windows)
    targets = [t for w in windows for t in w[1:]]
    assert sorted(targets) == sorted(t for s in seqs for t in s[1:-2])  # each training target exactly once
    assert TrainSequences(seqs, max_len=8, all_windows=False).seqs == [list(range(20, 29)), [31, 32, 33]]


def test_collate_right_pads_and_keeps_every_seen_item():
    batch = collate_train([[1, 2, 3, 4], [5, 6]])
    assert batch["items"].tolist() == [[1, 2, 3], [5, PAD, PAD]]
    assert batch["targets"].tolist() == [[2, 3, 4], [6, PAD, PAD]]
    ds = EvalTargets([[1, 2, 3, 4, 5, 6], [7, 8, 9]], "test", 3, torch.tensor([[8, 9], [1, 2]]))
    ev = collate_eval([ds[0], ds[1]], max_len=3)
    assert ev["items"].tolist() == [[3, 4, 5], [7, 8, PAD]]  # the last max_len items
    assert ev["lengths"].tolist() == [3, 2] and ev["target"].tolist() == [6, 9]
    assert ev["seen"].tolist() == [[1, 2, 3, 4, 5], [7, 8, PAD, PAD, PAD]]  # the whole history
    assert ev["negatives"].tolist() == [[8, 9], [1, 2]]


def test_k_core_filters_users_and_items_until_stable():
    # item 9 is rated once; removing it leaves user 3 with 2 interactions -> dropped at k=3
    users = [1, 1, 1, 2, 2, 2, 3, 3, 3]
    items = [1, 2, 3, 1, 2, 3, 1, 2, 9]
    seqs = build_sequences(users, items, None, k_core=2)
    assert seqs.user_ids == [1, 2] and seqs.item_ids == [1, 2, 3]


def test_sampled_negatives_are_seeded_and_unseen():
    seqs = [[1, 2, 3], [4, 5, 6, 7]]
    a = sample_negatives(seqs, 20, 100, seed=3)
    assert a.shape == (2, 100) and torch.equal(a, sample_negatives(seqs, 20, 100, seed=3))
    assert not torch.equal(a, sample_negatives(seqs, 20, 100, seed=4))
    for row, seq in zip(a.tolist(), seqs, strict=True):
        assert not set(row) & set(seq) and min(row) >= 1 and max(row) <= 20


def test_embedded_default_is_movielens_100k():
    dm = RecommendationDataModule(max_len=50)
    assert dm.stats() == {
        "users": 943,
        "items": 1682,
        "interactions": 100_000,
        "density": 100_000 / (943 * 1682),
    }
    assert [len(dm.eval_dataset(s)) for s in ("val", "test")] == [943, 943]
    assert dm.negatives["val"].shape == (943, 100) and not torch.equal(
        dm.negatives["val"], dm.negatives["test"]
    )


def test_movielens_file_gives_the_same_sequences_as_the_embedded_log(tmp_path):
    from tests.recommendation.conftest import write_movielens

    path = write_movielens(tmp_path / "ml" / "ratings.dat", 30, "::")
    ours = rd.load_sequences(str(path))
    embedded = rd.load_sequences(None)
    assert len(ours.seqs) == 30
    first = [embedded.item_ids[i - 1] for i in embedded.seqs[0]]
    assert [ours.item_ids[i - 1] for i in ours.seqs[0]] == first


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("1\t2\t3\t4\n1\t2\t3\n", ValueError, r"log\.txt: line 2 has 3 fields, earlier lines 4"),
        (
            "1 2 3\n1 abc 4\n",
            ValueError,
            r"log\.txt: line 2: user / item ids must be integers, got '1' / 'abc'",
        ),
        ("1 2 3\n1 2 noon\n", ValueError, r"log\.txt: line 2: timestamp 'noon' is not a number"),
        ("42\n", ValueError, r"log\.txt: line 1 has one field"),
        ("\n\n", ValueError, r"log\.txt holds no interactions"),
    ],
)
def test_bad_logs_fail_in_one_line_naming_the_file_and_line(tmp_path, text, error, match):
    _write(tmp_path / "log.txt", text)
    before = _snapshot(tmp_path)
    with pytest.raises(error, match=match) as info:
        RecommendationDataModule(path=str(tmp_path / "log.txt")).setup()
    assert "\n" not in str(info.value)
    assert _snapshot(tmp_path) == before  # nothing on disk changed


def test_missing_file_and_bad_settings(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task\.data\.path=.*nope\.dat does not exist"):
        RecommendationDataModule(path=str(tmp_path / "nope.dat"))
    with pytest.raises(ValueError, match=r"task\.data\.max_len must be >= 1, got 0"):
        RecommendationDataModule(max_len=0)
    with pytest.raises(ValueError, match=r"task\.data\.min_interactions=2; leave-one-out needs >= 3"):
        build_sequences([1, 1], [1, 2], None, min_interactions=2)
    with pytest.raises(ValueError, match=r"no user has >= 3 interactions"):
        build_sequences([1, 1, 2], [1, 2, 3], None)
    assert list(tmp_path.iterdir()) == []


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1"):
        rd.embedded_dir()
