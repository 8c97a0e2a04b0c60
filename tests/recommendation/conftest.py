"""Fixtures of the recommendation tests: small real logs cut from the embedded MovieLens-100k, and one tiny
trained run shared by the task tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.recommendation.data import embedded_dir, read_interactions
from tests.conftest import run_train

#: a recommendation run that takes seconds on CPU: tiny SASRec, 3 training steps, short windows
TINY_RECOMMENDATION = [
    "task.model.embed_dim=16",
    "task.model.num_layers=1",
    "task.model.num_heads=2",
    "task.model.ffn_dim=32",
    "task.data.max_len=20",
    "task.num_attention_plots=2",
    "trainer.max_epochs=1",
    "trainer.max_steps=3",
    "trainer.check_val_every_n_epoch=1",
    "trainer.val_check_interval=3",  # validate (and save best.ckpt) at the last step
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def write_movielens(path: Path, num_users: int, sep: str) -> Path:
    """The first ``num_users`` users of the embedded MovieLens-100k as ``user<sep>item<sep>rating<sep>time``
    lines (``sep="\\t"``: u.data, ``"::"``: ratings.dat)."""
    users, items, times = read_interactions(embedded_dir() / "ml-100k.inter")
    keep = set(sorted(set(users))[:num_users])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for u, i, t in zip(users, items, times, strict=True):
            if u in keep:
                f.write(f"{u}{sep}{i}{sep}4{sep}{int(t)}\n")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of ``train.py task=recommendation`` (tiny, embedded MovieLens-100k)."""
    run_dir = tmp_path_factory.mktemp("rec_run")
    result = run_train(["task=recommendation", *TINY_RECOMMENDATION, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir / "stdout.txt").write_text(result.stdout)
    return run_dir
