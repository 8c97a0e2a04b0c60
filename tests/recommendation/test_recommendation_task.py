"""End to end: ``train.py task=recommendation`` on the embedded MovieLens-100k (a few steps), the run's
table, files and plots, the recommend command on the trained model, and every command of the README."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from tasks.recommendation.recommend import Recommender, main
from tasks.recommendation.task import MODEL_FILE
from tests.conftest import REPO, run_train
from tests.recommendation.conftest import TINY_RECOMMENDATION, write_movielens

METRICS = {f"{p}/{m}@{k}" for p in ("full", "s100") for m in ("hr", "ndcg") for k in (5, 10, 20)}


def test_train_prints_both_protocols_beside_the_baselines(trained_run):
    out = (trained_run / "stdout.txt").read_text()
    assert "Results on the test split" in out
    for row in ("recommendation (ours)", "most popular", "co-occurrence"):
        assert row in out
    with open(trained_run / "results.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"recommendation (ours)", "most popular", "co-occurrence"}
    for row in rows.values():
        values = {k: float(row[k]) for k in METRICS}
        assert all(0.0 <= v <= 1.0 for v in values.values())  # fractions, not percent
        assert values["full/hr@5"] <= values["full/hr@10"] <= values["full/hr@20"]
        assert values["full/ndcg@10"] <= values["full/hr@10"]
        assert values["full/hr@10"] <= values["s100/hr@10"]  # 100 negatives are easier than all items
    # the baselines on the embedded data are deterministic: the values of the reference run
    assert float(rows["most popular"]["full/ndcg@10"]) == pytest.approx(0.04385, abs=1e-4)
    assert float(rows["co-occurrence"]["full/ndcg@10"]) == pytest.approx(0.07918, abs=1e-4)


def test_run_folder_holds_card_checkpoints_and_plots(trained_run):
    card = json.loads((trained_run / MODEL_FILE).read_text())
    assert card["model"]["num_items"] == 1682 and card["model"]["max_len"] == 20
    assert len(card["item_ids"]) == 1682 and card["item_ids"][:3] == [1, 2, 3]
    assert card["data"]["path"] is None and card["exclude_seen"] is True
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    for plot in ("attention_users.png", "ranking_curves.png", "full_ndcg@10.png"):
        assert (trained_run / "plots" / plot).stat().st_size > 5000, plot


def test_recommend_from_items_and_user(trained_run, capsys):
    rec = Recommender(trained_run / "checkpoints" / "best.ckpt")
    top = rec.recommend([12, 7, 301], k=10)
    assert len(top) == 10 and not {12, 7, 301} & {item for item, _, _ in top}
    probs = [p for _, p, _ in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert all(title for _, _, title in top)  # MovieLens-100k has titles
    kept = {item for item, _, _ in rec.recommend([12, 7, 301], k=1682, exclude_seen=False)}
    assert {12, 7, 301} <= kept
    history = rec.user_history(196)
    assert len(history) == 39 and history[-3:] == [1118, 94, 110]  # user 196: 39 ratings, the last by time
    assert main([f"ckpt={trained_run}/checkpoints/best.ckpt", "user=196", "k=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("history: 39 items") and len(lines) == 4 and lines[1].startswith("  1  item")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["items=12,99999,7"], r"item 99999 is not in the checkpoint's catalogue \(1682 items"),
        (["items="], r"the history is empty"),
        (["items=12,x"], r"items='x' is not an integer id"),
        (["user=123456"], r"user=123456 is not in the training log"),
        (["items=1", "user=1"], r"exactly one of items="),
        (["items=1", "beam=3"], r"unknown argument 'beam=3'"),
    ],
)
def test_recommend_bad_input_is_one_line(trained_run, capsys, args, match):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in trained_run.rglob("*"))
    assert main([f"ckpt={trained_run}/checkpoints/best.ckpt", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.startswith("error: ") and err.count("\n") == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in trained_run.rglob("*")) == before


def test_recommend_refuses_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    assert main([f"ckpt={tmp_path}/none.ckpt", "items=1"]) == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err
    import torch

    torch.save({"state_dict": {}, "mha_suite": {"task": "vision", "model": {}}}, tmp_path / "v.ckpt")
    assert main([f"ckpt={tmp_path}/v.ckpt", "items=1"]) == 2
    assert "written by task=vision, not task=recommendation" in capsys.readouterr().err


def _readme_commands(prefix: str) -> list[str]:
    text = (REPO / "tasks" / "recommendation" / "README.md").read_text()
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip().startswith(prefix)))


def test_readme_recommend_commands_run(trained_run, capsys):
    commands = _readme_commands("python -m tasks.recommendation.recommend")
    assert len(commands) >= 2
    for command in commands:
        args = command.split()[3:]
        args = [f"ckpt={trained_run}/checkpoints/best.ckpt" if a.startswith("ckpt=") else a for a in args]
        assert main(args) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert re.search(r"^  1  item", out, re.M) and len(out.splitlines()) == 11, out


def test_recommend_runs_as_a_module(trained_run):
    result = subprocess.run(
        [sys.executable, "-m", "tasks.recommendation.recommend"]
        + [f"ckpt={trained_run}/checkpoints/best.ckpt", "items=12,7,301", "k=2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3


@pytest.mark.slow
def test_readme_train_commands_run_on_tiny_fixtures(tmp_path):
    """Every ``python train.py`` line of the README, with steps cut, on logs cut from MovieLens-100k in
    the formats the commands name (``/path/to/data`` -> a folder with ml-1m/ratings.dat and movies.dat)."""
    from tests.app.test_recipes import write_ml1m

    data = tmp_path / "data"
    write_ml1m(data)  # ml-1m/ratings.dat and the movies.dat the recipe's titles key names
    write_movielens(data / "ml-100k" / "u.data", 40, "\t")
    commands = _readme_commands("python train.py")
    assert any("experiment=recommendation_ml1m" in c for c in commands)
    for n, command in enumerate(commands):
        args = [a.replace("/path/to/data", str(data)) for a in command.split()[2:]]
        args += [*TINY_RECOMMENDATION, "trainer.accelerator=cpu", "trainer.precision=32-true"]
        args += [
            "trainer.val_check_interval=null",
            "task.data.num_workers=0",
            f"hydra.run.dir={tmp_path}/r{n}",
        ]
        result = run_train(args)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
        assert "co-occurrence" in result.stdout
