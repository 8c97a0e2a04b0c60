"""Metrics of both protocols against hand-computed values, seen-item exclusion, the baselines, and the
model's causality and padding (fast, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from mha import MultiHeadAttention
from tasks.recommendation.data import PAD
from tasks.recommendation.metrics import (
    Transitions,
    baseline_scores,
    exclude_seen,
    popularity,
    protocol_ranks,
    rank_of_target,
    ranking_metrics,
)
from tasks.recommendation.model import SASRec
from tasks.recommendation.task import RecommendationTask

INF = float("-inf")


def test_rank_counts_ties_against_the_target():
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0, 2.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    assert rank_of_target(scores, torch.tensor([3, 1])).tolist() == [2, 3]  # [3 > 2, tie] ; 3 ties


def test_both_protocols_and_metrics_match_hand_computed_values():
    # 2 users, items 1..6 (column 0 is padding)
    scores = torch.tensor(
        [
            [9.0, 0.6, 0.9, 0.1, 0.5, 0.8, 0.7],  # target 4 (0.5): above it 1, 2, 5, 6 -> rank 4
            [9.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # target 6 (0.6): rank 0
        ]
    )
    target = torch.tensor([4, 6])
    seen = torch.tensor([[2, 5], [1, PAD]])  # user 0 saw 2 and 5: they leave the ranking -> rank 2
    negatives = torch.tensor([[1, 3, 3], [1, 2, 3]])  # user 0: 0.6 > 0.5 only -> rank 1
    ranks = protocol_ranks(scores, target, seen, negatives)
    assert ranks["full"].tolist() == [2, 0] and ranks["sampled"].tolist() == [1, 0]
    assert protocol_ranks(scores, target, None, None)["full"].tolist() == [4, 0]
    metrics = ranking_metrics([1, 3], num_negatives=3)
    metrics.update(ranks)
    out = {k: float(v) for k, v in metrics.compute().items()}
    assert out["full/hr@1"] == pytest.approx(0.5) and out["full/hr@3"] == pytest.approx(1.0)
    assert out["full/ndcg@3"] == pytest.approx((1 / math.log2(4) + 1.0) / 2)
    assert out["s3/hr@1"] == pytest.approx(0.5)
    assert out["s3/ndcg@3"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert set(out) == {f"{p}/{m}@{k}" for p in ("full", "s3") for m in ("hr", "ndcg") for k in (1, 3)}


def test_seen_items_are_excluded_but_the_target_stays():
    scores = torch.tensor([[5.0, 1.0, 4.0, 3.0]])
    out = exclude_seen(scores, torch.tensor([[2, 3, PAD]]), torch.tensor([3]))
    assert out.tolist() == [[INF, 1.0, INF, 3.0]]  # 2 excluded, 3 (the target, re-consumed) kept
    assert scores.tolist() == [[5.0, 1.0, 4.0, 3.0]]  # the input is not changed


def test_metrics_accumulate_over_batches_like_one_batch():
    ranks = torch.tensor([0, 4, 9, 25, 2, 11])
    one, two = ranking_metrics([5, 10, 20], 0), ranking_metrics([5, 10, 20], 0)
    one.update({"full": ranks})
    two.update({"full": ranks[:2]})
    two.update({"full": ranks[2:]})
    a, b = one.compute(), two.compute()
    assert a.keys() == b.keys() and all(float(a[k]) == pytest.approx(float(b[k])) for k in a)
    assert float(a["full/hr@10"]) == pytest.approx(4 / 6)


def test_baselines_score_popularity_and_last_item_transitions():
    histories = [[1, 2, 3], [1, 2], [2, 3, 1], [3, 1]]
    pop = popularity(histories, 4)
    assert pop.tolist() == [0.0, 4.0, 3.0, 3.0, 0.0]
    trans = Transitions(histories, 4)
    assert trans.rows(torch.tensor([1, 3, 4])).tolist() == [
        [0, 0, 2, 0, 0],  # 1 -> 2 twice
        [0, 2, 0, 0, 0],  # 3 -> 1 twice
        [0, 0, 0, 0, 0],  # 4 never seen
    ]
    items, lengths = torch.tensor([[2, 1, PAD], [4, PAD, PAD]]), torch.tensor([2, 1])
    assert torch.equal(baseline_scores("most popular", items, lengths, pop, trans), pop.expand(2, -1))
    co = baseline_scores("co-occurrence", items, lengths, pop, trans)
    assert co[0].argmax() == 2 and co[1].argmax() == 1  # counts first; popularity breaks the tie
    assert torch.allclose(co[1], pop / 5)


def _model(**kw) -> SASRec:
    torch.manual_seed(0)
    return SASRec(30, max_len=12, embed_dim=16, num_layers=2, num_heads=2, ffn_dim=32, **kw).eval()


def test_attention_comes_from_mha_only():
    model = _model()
    kinds = {type(m) for m in model.modules()}
    assert MultiHeadAttention in kinds and torch.nn.MultiheadAttention not in kinds


def test_causal_scores_at_t_ignore_later_items():
    model = _model()
    items = torch.tensor([[3, 7, 1, 9, 4, 12, 5, 8]])
    changed = items.clone()
    changed[0, 5:] = torch.tensor([20, 21, 22])
    with torch.no_grad():
        a, b = model(items), model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_right_padding_changes_nothing():
    model = _model()
    seqs = [[3, 7, 1, 9, 4], [11, 2], [6, 6, 6, 6, 6, 6, 6, 6]]
    padded = torch.full((3, 8), PAD)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = torch.tensor(s)
    with torch.no_grad():
        batch = model(padded)
        last = model.score_last(padded, torch.tensor([5, 2, 8]))
        for i, s in enumerate(seqs):
            alone = model(torch.tensor([s]))[0]
            torch.testing.assert_close(batch[i, : len(s)], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(last[i], alone[-1], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batch).all()


def test_history_longer_than_max_len_is_refused():
    with pytest.raises(ValueError, match="longer than max_len=12"):
        _model()(torch.ones(1, 13, dtype=torch.long))


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_training_steps_reduce_the_loss(loss):
    task = RecommendationTask(loss=loss, num_train_negatives=4)
    model = _model(dropout=0.0, attn_dropout=0.0).train()
    batch = {"items": torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, PAD, PAD]])}
    batch["targets"] = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 9, PAD, PAD]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss_value = task.training_loss(model, batch)
        opt.zero_grad()
        loss_value.backward()
        opt.step()
        losses.append(float(loss_value.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_task_settings_are_checked():
    with pytest.raises(ValueError, match=r"task\.loss='bpr'"):
        RecommendationTask(loss="bpr")
    with pytest.raises(ValueError, match=r"task\.monitor='full/ndcg@50'; pick loss or one of"):
        RecommendationTask(monitor="full/ndcg@50")
    with pytest.raises(ValueError, match=r"task\.model\.num_items comes from the data"):
        RecommendationTask(model={"num_items": 5})


def test_scores_stay_float32_under_bf16_autocast():
    model = _model()
    items = torch.tensor([[3, 7, 1, 9, 4]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score_last(items, torch.tensor([5]))
    assert scores.dtype == torch.float32
    assert scores[0, 1:].unique().numel() == 30  # no ties among the 30 items
