"""Ranking metrics of both protocols and the non-attention baselines.

Protocols, one metric name prefix each:

* ``full/``: the target is ranked against every item (the honest protocol); items of the user's history
  are excluded first (``exclude_seen``, on by default: they get score ``-inf``; the target itself is never
  excluded, so a re-consumed item stays rankable).
* ``s100/`` (``s<n>/`` for ``n`` negatives): the target is ranked against ``n`` seeded uniform negatives
  the user never interacted with (the protocol of SASRec and most papers).

A rank is the 0-based number of candidates scored above the target, ties counted against it (a
constant scorer ranks last, not first). ``hr@k`` = 1 if rank < k, ``ndcg@k`` = 1 / log2(rank + 2) if
rank < k (one relevant item), both averaged over users: fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics import Metric, MetricCollection

from .data import PAD


def rank_of_target(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` among the columns of ``scores`` (ties counted against the target).

    Args:
        scores: ``(B, C)`` float; target: ``(B,)`` column index of each row's target.

    Returns:
        ``(B,)`` int64.
    """
    t = scores.gather(1, target[:, None])  # (B, 1)
    return (scores > t).sum(1) + (scores == t).sum(1) - 1


def exclude_seen(scores: torch.Tensor, seen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``scores`` (B, N + 1) with the padding column and the ``seen`` items (B, S; ``PAD``-padded) set to
    ``-inf``, the target's own score kept. Returns a new tensor."""
    out = scores.float().clone()
    keep = out.gather(1, target[:, None])
    out.scatter_(1, seen, float("-inf"))
    out[:, PAD] = float("-inf")
    return out.scatter_(1, target[:, None], keep)


def protocol_ranks(
    scores: torch.Tensor,
    target: torch.Tensor,
    seen: torch.Tensor | None,
    negatives: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """Target ranks under both protocols.

    Args:
        scores: ``(B, N + 1)`` item scores (column 0 is padding).
        target: ``(B,)`` item ids.
        seen: ``(B, S)`` history items to exclude from the full ranking (``None``: exclude nothing).
        negatives: ``(B, n)`` sampled negatives (``None``: no sampled protocol).

    Returns:
        ``{"full": (B,), "sampled": (B,)}`` int64 ranks (``"sampled"`` only with negatives).
    """
    full = scores.float().clone()
    full[:, PAD] = float("-inf")
    if seen is not None:
        full = exclude_seen(full, seen, target)
    ranks = {"full": rank_of_target(full, target)}
    if negatives is not None:
        candidates = torch.cat([target[:, None], negatives], dim=1)  # (B, 1 + n): the target first
        ranks["sampled"] = rank_of_target(scores.float().gather(1, candidates), torch.zeros_like(target))
    return ranks


class TopKMetric(Metric):
    """Mean ``hr@k`` or ``ndcg@k`` over users of one protocol; ``update`` takes ``protocol_ranks``' dict.

    Args:
        protocol: ``"full"`` or ``"sampled"``.  kind: ``"hr"`` or ``"ndcg"``.  k: the cut-off.
        sync: sum the states over DDP processes in ``compute`` (``False`` for a score every process
            computes on the whole split itself, e.g. the baselines).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, protocol: str, kind: str, k: int, *, sync: bool = True) -> None:
        super().__init__(sync_on_compute=sync)
        if kind not in ("hr", "ndcg"):
            raise ValueError(f"metric kind {kind!r}; pick hr or ndcg")
        self.protocol, self.kind, self.k = protocol, kind, int(k)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ranks: dict[str, torch.Tensor]) -> None:
        rank = ranks[self.protocol]
        hit = rank < self.k
        gain = hit.double() if self.kind == "hr" else hit.double() / torch.log2(rank.double() + 2.0)
        self.total += gain.sum()
        self.count += rank.numel()

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp_min(1)).float()


def metric_names(ks: Iterable[int], num_negatives: int) -> list[tuple[str, str, str, int]]:
    """``(name, protocol, kind, k)`` of every reported metric, e.g. ``("s100/ndcg@10", "sampled", ...)``."""
    protocols = [("full", "full")] + ([(f"s{num_negatives}", "sampled")] if num_negatives else [])
    return [
        (f"{prefix}/{kind}@{k}", protocol, kind, int(k))
        for prefix, protocol in protocols
        for kind in ("hr", "ndcg")
        for k in ks
    ]


def ranking_metrics(ks: Iterable[int], num_negatives: int, *, sync: bool = True) -> MetricCollection:
    """A fresh collection of every ``metric_names`` entry (``sync``: see :class:`TopKMetric`)."""
    return MetricCollection(
        {
            name: TopKMetric(protocol, kind, k, sync=sync)
            for name, protocol, kind, k in metric_names(ks, num_negatives)
        },
        compute_groups=False,
    )


# ------------------------------------------------------------------------------------------- baselines
def popularity(histories: Iterable[list[int]], num_items: int) -> torch.Tensor:
    """Interaction counts of each item over ``histories``: ``(num_items + 1,)`` float (0 for padding)."""
    counts = torch.zeros(num_items + 1)
    for h in histories:
        counts.index_add_(0, torch.tensor(h, dtype=torch.long), torch.ones(len(h)))
    counts[PAD] = 0.0
    return counts


class Transitions:
    """Item-to-item co-occurrence: how often item ``b`` directly followed item ``a`` in the histories.

    Kept sparse (sorted ``(a, b)`` keys and counts) so a large catalogue costs memory per pair seen, not
    ``num_items ** 2``.
    """

    def __init__(self, histories: Iterable[list[int]], num_items: int) -> None:
        pairs = [(a, b) for h in histories for a, b in zip(h[:-1], h[1:], strict=False)]
        self.width = num_items + 1
        keys = torch.tensor([a * self.width + b for a, b in pairs] or [0], dtype=torch.long)
        keys, counts = torch.unique(keys, return_counts=True)  # sorted
        if not pairs:
            counts = torch.zeros_like(counts)
        self.keys, self.counts = keys, counts.float()

    def rows(self, last: torch.Tensor) -> torch.Tensor:
        """``(B, num_items + 1)`` transition counts out of each item of ``last`` (B,)."""
        out = torch.zeros(last.shape[0], self.width)
        lo = torch.searchsorted(self.keys, last * self.width)
        hi = torch.searchsorted(self.keys, (last + 1) * self.width)
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            out[i, self.keys[a:b] % self.width] = self.counts[a:b]
        return out


def baseline_scores(
    kind: str, items: torch.Tensor, lengths: torch.Tensor, pop: torch.Tensor, trans: Transitions
) -> torch.Tensor:
    """Scores ``(B, N + 1)`` of a baseline for a batch of histories.

    ``"most popular"``: the item counts. ``"co-occurrence"``: transition counts out of the last history
    item, ties broken by popularity (``pop / (max + 1)`` < 1 never reorders different counts).
    """
    scores = pop.expand(items.shape[0], -1).clone()
    if kind == "most popular":
        return scores
    last = items.gather(1, (lengths - 1)[:, None]).squeeze(1)  # (B,)
    return trans.rows(last) + scores / (pop.max() + 1.0)
