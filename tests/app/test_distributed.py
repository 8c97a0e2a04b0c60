"""Data sharding under DDP (``tasks.common.distributed``): every sample once across processes, equal
training shares; and ``train.py trainer=ddp`` on CPU (two gloo processes) against the one-process run of the
same global batch, for vision, translation and recommendation: the test metrics must agree."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

import tasks.common.distributed as distributed
from tasks.common.distributed import EvalShardSampler, shard_batches
from tasks.translation.data import TokenBatchSampler, TranslationDataModule
from tasks.vision.data import VisionDataModule
from tests.conftest import TINY_TRANSLATION, run_train


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
#: seconds a run may take: two processes start Lightning on a 2-core box that other jobs share
TIMEOUT = 480


def _results(run_dir: Path) -> dict[str, dict[str, float]]:
    with open(run_dir / "results.csv") as f:
        return {
            row.pop("model"): {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        }


def _validations(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every validation of ``metric`` in ``metrics.csv``."""
    with open(run_dir / "metrics.csv") as f:
        return [(int(r["step"]), float(r[metric])) for r in csv.DictReader(f) if r.get(metric)]


def _check(proc: subprocess.CompletedProcess) -> None:
    """A failed run, with the known way a DDP run dies spelled out."""
    if proc.returncode == 0:
        return
    why = ""
    if proc.returncode == -9 and "terminate called without an active exception" in proc.stderr:
        why = (
            "\nrank 1 aborted at exit (gloo's threads outlived a process group that was never destroyed) and "
            "Lightning's child-process observer then killed rank 0 with SIGKILL: train.py should call "
            "torch.distributed.destroy_process_group() on every rank before it returns.\n"
        )
    raise AssertionError(f"train.py exited with {proc.returncode}{why}\n{proc.stderr[-4000:]}")


def _one_and_two_processes(
    tmp_path: Path, common: list[str], one: list[str], two: list[str]
) -> tuple[Path, Path]:
    """Run ``common + one`` in one process and ``common + two + DDP_CPU`` in two; their run folders."""
    dirs = tmp_path / "one", tmp_path / "ddp"
    for run_dir, extra in zip(dirs, (one, [*two, *DDP_CPU]), strict=True):
        _check(run_train([*common, *extra, f"hydra.run.dir={run_dir}"], timeout=TIMEOUT))
    return dirs


def _assert_rows_agree(one: dict, ddp: dict, metrics_atol: float, loss_rtol: float = 1e-4) -> None:
    assert one.keys() == ddp.keys()
    for model, row in one.items():
        assert row.keys() == ddp[model].keys(), model
        for key, value in row.items():
            if key == "loss":
                assert ddp[model][key] == pytest.approx(value, rel=loss_rtol), (model, key)
            else:
                assert abs(ddp[model][key] - value) <= metrics_atol, (model, key, value, ddp[model][key])


def test_ddp_vision_matches_one_process(tmp_path):
    """Two processes of batch 16 against one of batch 32: the same global batches (the training sampler
    draws one permutation from the seed and the epoch; process r takes its items r, r + 2, ...), the same
    number of steps, every val / test image scored once; so the same test accuracy.

    Why they can differ at all: the gradient is the mean of the two processes' means instead of one mean
    over 32 images, equal up to float rounding (~1e-7 relative), which AdamW carries through 32 steps to
    ~1e-6 in the weights; the test loss agrees to 1e-4 relative, and an image whose two best logits lie
    that close could flip: one image (1/500) is allowed. Augmentation is off (each process would draw its
    own random crops) and the model has no BatchNorm (per-process batch statistics); val and test hold 500
    images each, an even split (Lightning's DDP mean of the loss floors an odd total, see the
    recommendation test)."""
    common = [
        "task=vision",
        "task.model.patch_size=7",
        "task.model.stem_channels=[]",
        "task.model.embed_dim=32",
        "task.model.depth=1",
        "task.model.num_heads=2",
        "task.augment.crop=none",
        "task.augment.rotate=0",
        "task.data.train_limit=512",
        "task.data.eval_batch_size=250",
        "task.num_attention_images=2",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "optim.lr=3e-3",
    ]
    one, ddp = _one_and_two_processes(
        tmp_path, common, ["task.data.batch_size=32"], ["task.data.batch_size=16"]
    )
    rows_one, rows_ddp = _results(one), _results(ddp)
    _assert_rows_agree(rows_one, rows_ddp, metrics_atol=1 / 500 + 1e-6)
    assert rows_one["vision (ours)"]["acc"] > rows_one["majority class"]["acc"], "it learned something"
    val_one, val_ddp = _validations(one, "val/acc"), _validations(ddp, "val/acc")
    assert [s for s, _ in val_one] == [s for s, _ in val_ddp] == [15, 31]  # 16 steps an epoch in both
    assert all(abs(a - b) <= 1 / 500 + 1e-6 for (_, a), (_, b) in zip(val_one, val_ddp, strict=True))
    assert (ddp / "plots" / "attention_maps.png").is_file() and (ddp / "checkpoints" / "best.ckpt").is_file()


def test_ddp_translation_matches_one_process(tmp_path):
    """Two processes of one sentence each against one process of one sentence with two accumulated
    micro-batches: the same sentences per optimizer step (items 2k and 2k + 1 of the seeded permutation)
    and the same weighting. (With larger batches the two would differ by design: the loss is a mean over
    target tokens, and DDP averages the two processes' token means instead of taking one mean over all
    tokens; one sentence per process and micro-batch makes both an average of per-sentence means.) The
    test sentences are beam-decoded one at a time in both runs, so every hypothesis is the same string and
    BLEU, chrF and exact match agree exactly (the loss to float rounding: 1e-4 relative); the copy-source
    row scores the whole test split on every process and must not change with the number of processes
    (it did: gathered over both processes, each sentence counted twice and BLEU's smoothing of empty
    n-gram orders moved 4.08 -> 2.43)."""
    common = [
        *TINY_TRANSLATION,
        "task.data.numbers.train_size=256",
        "task.data.numbers.val_size=8",
        "task.data.numbers.test_size=8",
        "task.data.batch_size=1",
        "task.data.eval_batch_size=1",
        "trainer.max_epochs=2",
        "optim.lr=3e-3",
    ]
    one, ddp = _one_and_two_processes(tmp_path, common, ["trainer.accumulate_grad_batches=2"], [])
    rows_one, rows_ddp = _results(one), _results(ddp)
    _assert_rows_agree(rows_one, rows_ddp, metrics_atol=1e-9)
    assert rows_one["translation (ours)"]["chrf"] > 0.0
    val_one, val_ddp = _validations(one, "val/loss"), _validations(ddp, "val/loss")
    assert [s for s, _ in val_one] == [s for s, _ in val_ddp] == [127, 255]  # 128 steps an epoch in both
    assert [v for _, v in val_ddp] == pytest.approx([v for _, v in val_one], rel=1e-4)
    assert (one / "samples.tsv").read_text() == (ddp / "samples.tsv").read_text()


@pytest.mark.slow  # 30 s; tests/app/test_baselines_under_ddp.py keeps its two bugs out in CI
def test_ddp_recommendation_matches_one_process(tmp_path):
    """SASRec on 39 users of MovieLens-100k, one user window per process against one process with two
    accumulated windows (the loss is a mean over positions: see the translation test). Every user is
    ranked once across the processes, so the ranking metrics agree exactly; the baselines score the whole
    split on every process (they used to gather across processes, and rank 0 drawing the validation curves
    alone then waited on a process that had finished: the DDP run died at its end).

    The logged test loss is another matter: 39 users split 20 / 19, and Lightning 2.6's DDP mean of an
    epoch-level value divides by the floored mean batch size (19 instead of 19.5: Lightning-AI/
    pytorch-lightning#21859), so the loss comes out 19.5 / 19 times too high. That part is marked as an
    expected failure while it holds."""
    from tests.recommendation.conftest import write_movielens

    log = write_movielens(tmp_path / "data" / "u.data", 39, "\t")
    common = [
        "task=recommendation",
        f"task.data.path={log}",
        "task.data.max_len=20",
        "task.data.batch_size=1",
        "task.data.eval_batch_size=16",
        "task.model.embed_dim=16",
        "task.model.num_layers=1",
        "task.model.num_heads=2",
        "task.model.ffn_dim=32",
        "task.model.dropout=0",
        "task.num_attention_plots=2",
        # one whole epoch (226 windows: 113 steps of two; an odd count would give the
        # accumulating process one more step, of one window); a step limit or val_check_interval would count
        # micro-batches, i.e. stop or validate at other steps in the accumulating process
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "optim.lr=1e-2",
    ]
    one, ddp = _one_and_two_processes(tmp_path, common, ["trainer.accumulate_grad_batches=2"], [])
    rows_one, rows_ddp = _results(one), _results(ddp)
    loss_one, loss_ddp = (
        rows_one["recommendation (ours)"].pop("loss"),
        rows_ddp["recommendation (ours)"].pop("loss"),
    )
    _assert_rows_agree(rows_one, rows_ddp, metrics_atol=1e-6)
    assert (ddp / "plots" / "ranking_curves.png").is_file()
    # the loss is a MeanMetric weighted by batch size (Lightning's sync_dist mean floors an odd batch count)
    assert loss_ddp == pytest.approx(loss_one, rel=1e-4), (loss_one, loss_ddp)
