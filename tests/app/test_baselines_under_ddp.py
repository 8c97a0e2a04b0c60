"""The baselines every DDP process computes on the whole test split must not be gathered across processes.

A torchmetrics metric gathers its states over the process group in ``compute``. That is right for the
model's metrics (each process scores its shard) and wrong for a baseline that each process scores on the
whole split: gathered, every sentence or user counts once per process, and a metric computed by rank 0
alone (the recommendation curves drawn with the run's artefacts) waits for processes that have finished.
Here a pretend two-process group (``gather`` returns this process's state twice) stands in for DDP, so the
check runs in one process in well under a second; ``tests/app/test_distributed.py`` runs the real thing.
"""

from __future__ import annotations

import pytest
import sacrebleu
import torch
import torchmetrics.metric

from tasks.recommendation.task import RecommendationTask
from tasks.translation.task import TranslationTask, copy_source_scores
from tests.recommendation.conftest import write_movielens


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A pretend process group of two whose other process holds the same states; returns the list that
    counts the gathers (metrics must be built after this fixture: they read the check when built)."""
    gathers: list[int] = []

    def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        gathers.append(1)
        return [tensor, tensor.clone()]

    monkeypatch.setattr(torchmetrics.metric, "jit_distributed_available", lambda: True)
    monkeypatch.setattr(torchmetrics.metric, "gather_all_tensors", gather)
    return gathers


#: copy-source pairs with no matching 4-gram: sacreBLEU smooths that order by its count, so a corpus read
#: twice scores another BLEU (16.3 -> 13.7)
PAIRS = [
    ("A man in a red shirt is running on the grass .", "Ein Mann in a red Hemd is running auf dem Gras ."),
    ("two dogs play", "zwei Hunde spielen"),
    ("ein Hund", "ein Hund"),
    ("x y", "y x"),
]


def test_copy_source_scores_do_not_depend_on_the_number_of_processes(two_processes):
    sources, references = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    alone = {
        "bleu": sacrebleu.corpus_bleu(sources, [references]).score,
        "chrf": sacrebleu.corpus_chrf(sources, [references]).score,
        "exact_match": 0.25,
    }
    assert copy_source_scores(PAIRS) == pytest.approx(alone)
    assert not two_processes, "the copy-source baseline was gathered across processes"
    model_metrics = TranslationTask().build_metrics()  # the model's metrics do gather (the shards)
    model_metrics.update(sources, references)
    assert model_metrics.compute()["bleu"] != pytest.approx(alone["bleu"]) and two_processes


def test_recommendation_baselines_are_not_gathered(tmp_path, two_processes):
    log = write_movielens(tmp_path / "u.data", 12, "\t")
    task = RecommendationTask(data={"path": str(log), "max_len": 10, "num_negatives": 5})
    dm = task.build_datamodule()
    rows = task.baseline_rows(dm, "val")
    assert set(rows) == {"most popular", "co-occurrence"}
    assert not two_processes, "the baselines were gathered across processes (rank 0 alone would hang)"
    assert task.build_metrics()["full/hr@10"].sync_on_compute  # the model's metrics still gather
