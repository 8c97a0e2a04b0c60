"""Data sharding under DDP (``tasks.common.distributed``): every sample once across processes, equal
training shares, and ``trainer=ddp`` end to end on CPU (gloo) for both tasks."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import tasks.common.distributed as distributed
from tasks.common.distributed import EvalShardSampler, shard_batches
from tasks.translation.data import TokenBatchSampler, TranslationDataModule
from tasks.vision.data import VisionDataModule
from tests.conftest import TINY_TRANSLATION, TINY_VISION, run_train


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 10, 11])
def test_eval_shards_cover_every_index_once(n, world):
    shards = [list(EvalShardSampler(range(n), world, rank)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(EvalShardSampler(range(n), world, r)) for r in range(world)] == [len(s) for s in shards]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_batches_even_and_uneven(world):
    items = list(range(10))
    uneven = [shard_batches(items, even=False, rank=r, world=world) for r in range(world)]
    assert sorted(i for s in uneven for i in s) == items
    even = [shard_batches(items, even=True, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in even}) == 1 and len(even[0]) == 10 // world  # same step count everywhere
    assert len({i for s in even for i in s}) == sum(len(s) for s in even)  # disjoint


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "process_rank", lambda: (rank, world))


def test_vision_loaders_shard_without_repeats(monkeypatch):
    dm = VisionDataModule(seed=0, batch_size=64, eval_batch_size=100)
    dm.setup()
    n_train, n_test = len(dm.splits["train"]), len(dm.splits["test"])
    train, test = [], []
    for rank in range(3):
        _as_rank(monkeypatch, rank, 3)
        train.append(list(dm.train_dataloader().sampler))
        test.append(list(dm.test_dataloader().sampler))
    assert sorted(i for s in test for i in s) == list(range(n_test))  # each test image exactly once
    assert len({len(s) for s in train}) == 1 and len(train[0]) == n_train // 3  # equal training shares
    assert len({i for s in train for i in s}) == 3 * len(train[0])  # disjoint
    _as_rank(monkeypatch, 0, 1)
    whole = dm.train_dataloader().sampler  # one process: every training image, in an order set by seed+epoch
    assert sorted(whole) == list(range(n_train)) and list(whole) == list(whole)
    whole.set_epoch(1)
    assert list(whole) != list(dm.train_dataloader().sampler), "each epoch draws a new order"


def test_translation_loaders_shard_without_repeats(monkeypatch, tmp_path):
    dm = TranslationDataModule(
        output_dir=str(tmp_path),
        numbers={"max_digits": 3, "train_size": 300, "val_size": 7, "test_size": 7},
        vocab_size=300,
        eval_batch_size=4,
    )
    dm.prepare()
    n_test = len(dm.datasets["test"])
    seen = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        batches = list(dm.test_dataloader().batch_sampler)
        assert batches, "every process needs at least one evaluation batch"
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(n_test))
    lengths = [1 + i % 9 for i in range(200)]
    shares = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        shares.append(list(TokenBatchSampler(lengths, max_tokens=32, seed=3)))
    assert len(shares[0]) == len(shares[1]) > 0  # the same number of steps on both processes
    flat = [i for s in shares for b in s for i in b]
    assert len(flat) == len(set(flat))  # no sentence twice in one epoch


DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def _results(run_dir: Path) -> dict[str, dict[str, str]]:
    with open(run_dir / "results.csv") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_ddp_vision_end_to_end_on_cpu(tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_train([*TINY_VISION, *DDP_CPU, "trainer.max_steps=4", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0.0 <= float(_results(run_dir)["vision (ours)"]["acc"]) <= 1.0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_ddp_translation_end_to_end_on_cpu(tmp_path):
    """Its length-bucketed batch sampler made Lightning's sampler injection raise a TypeError under DDP."""
    run_dir = tmp_path / "ddp"
    args = [
        *TINY_TRANSLATION,
        "task.data.numbers.train_size=256",
        "task.data.numbers.val_size=6",
        "task.data.numbers.test_size=6",
        "trainer.max_steps=4",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_train([*args, *DDP_CPU], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exact_match" in _results(run_dir)["translation (ours)"]
