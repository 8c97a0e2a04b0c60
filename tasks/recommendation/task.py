"""``task=recommendation``: next-item prediction with SASRec on the ``mha`` core, evaluated leave-one-out
with full ranking and with sampled negatives, beside the most-popular and co-occurrence baselines."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection

from tasks.base import RunContext, Task

from .data import PAD, RecommendationDataModule, read_titles, titles_path
from .metrics import Transitions, baseline_scores, metric_names, popularity, protocol_ranks, ranking_metrics
from .model import SASRec

#: the model card written into the run folder: what ``recommend.py`` needs to rebuild model and catalogue
MODEL_FILE = "recommendation.json"
BASELINES = ("most popular", "co-occurrence")


class RecommendationTask(Task):
    """Sequential recommendation.

    Args:
        data: :class:`~tasks.recommendation.data.RecommendationDataModule` kwargs.
        model: :class:`~tasks.recommendation.model.SASRec` kwargs (``num_items`` and ``max_len`` come from
            the data).
        loss: ``"ce"`` (full softmax cross-entropy over all items) or ``"bce"`` (SASRec's binary
            cross-entropy with ``num_train_negatives`` uniform negatives per position).
        num_train_negatives: negatives per position for ``loss="bce"``.
        ks: cut-offs of ``hr@k`` / ``ndcg@k``.
        exclude_seen: drop the user's history items from the full ranking (the target always stays).
        monitor: validation metric that picks the best checkpoint (e.g. ``full/ndcg@10``).
        num_attention_plots: test users whose last-position attention is drawn.
        run: the run this task is part of (:class:`~tasks.base.RunContext`).
    """

    monitor = "full/ndcg@10"
    monitor_mode = "max"
    metric_scales = {
        f"{p}/{m}@{k}": "0-1" for p in ("full", "s100") for m in ("hr", "ndcg") for k in (5, 10, 20)
    }

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        loss: str = "ce",
        num_train_negatives: int = 1,
        ks: list[int] | tuple[int, ...] = (5, 10, 20),
        exclude_seen: bool = True,
        monitor: str = "full/ndcg@10",
        num_attention_plots: int = 4,
        run: RunContext | None = None,
    ) -> None:
        super().__init__(data, model, run)
        if loss not in ("ce", "bce"):
            raise ValueError(f"task.loss={loss!r}; pick ce (full softmax) or bce (sampled negatives)")
        if int(num_train_negatives) < 1:
            raise ValueError(f"task.num_train_negatives must be >= 1, got {num_train_negatives}")
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"task.ks must be a non-empty list of cut-offs >= 1, got {ks}")
        for key in ("num_items", "max_len"):
            if key in self.model_cfg:
                raise ValueError(f"task.model.{key} comes from the data; drop it (set task.data.max_len)")
        self.loss, self.num_train_negatives = loss, int(num_train_negatives)
        self.ks = [int(k) for k in ks]
        self.num_negatives = int(self.data_cfg.get("num_negatives", 100))
        names = [name for name, *_ in metric_names(self.ks, self.num_negatives)]
        if monitor != "loss" and monitor not in names:
            raise ValueError(f"task.monitor={monitor!r}; pick loss or one of {', '.join(names)}")
        self.monitor = monitor
        self.monitor_mode = "min" if monitor == "loss" else "max"
        self.exclude_seen = bool(exclude_seen)
        self.num_attention_plots = num_attention_plots

    # -- building ----------------------------------------------------------------------------------------
    def build_datamodule(self) -> RecommendationDataModule:
        return RecommendationDataModule(**self.data_cfg)

    def build_model(self, datamodule: RecommendationDataModule) -> SASRec:
        model = SASRec(datamodule.num_items, max_len=datamodule.max_len, **self.model_cfg)
        if self.run.run_dir is not None:
            write_model_card(self.run.run_dir, model, datamodule, self.exclude_seen)
        return model

    def build_metrics(self) -> MetricCollection:
        return ranking_metrics(self.ks, self.num_negatives)

    # -- steps -------------------------------------------------------------------------------------------
    def training_loss(self, model: SASRec, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Full-softmax CE over items ``1..N`` at every non-padding position (or BCE with negatives)."""
        h, _ = model.hidden(batch["items"])  # (B, L, E)
        keep = batch["targets"].ne(PAD)
        h, target = h[keep], batch["targets"][keep]  # (P, E), (P,): real positions only
        table = model.item_emb.weight
        if self.loss == "ce":
            return F.cross_entropy((h @ table[1:].T).float(), target - 1)
        neg = torch.randint(1, model.num_items + 1, (h.shape[0], self.num_train_negatives), device=h.device)
        pos_logit = (h * table[target]).sum(-1)  # (P,)
        neg_logit = torch.einsum("pe,pne->pn", h, table[neg])  # (P, n)
        return F.binary_cross_entropy_with_logits(
            pos_logit.float(), torch.ones_like(pos_logit, dtype=torch.float)
        ) + F.binary_cross_entropy_with_logits(
            neg_logit.float(), torch.zeros_like(neg_logit, dtype=torch.float)
        )

    def eval_step(
        self, model: SASRec, batch: dict[str, torch.Tensor], metrics: MetricCollection
    ) -> torch.Tensor:
        """Rank each user's held-out target under both protocols; returns the target's CE."""
        scores = model.score_last(batch["items"], batch["lengths"]).float()  # (B, N + 1)
        ranks = protocol_ranks(
            scores,
            batch["target"],
            batch["seen"] if self.exclude_seen else None,
            batch.get("negatives"),
        )
        metrics.update(ranks)
        return F.cross_entropy(scores[:, 1:], batch["target"] - 1)

    # -- baselines and artefacts -------------------------------------------------------------------------
    def baseline_rows(self, datamodule: RecommendationDataModule, split: str) -> dict[str, dict[str, float]]:
        """Most popular and co-occurrence (last item -> next) on ``split``, with the model's metrics."""
        datamodule.setup()
        dataset = datamodule.eval_dataset(split)
        pop = popularity(dataset.histories, datamodule.num_items)
        trans = Transitions(dataset.histories, datamodule.num_items)
        # every process scores the whole split itself: no sum over DDP processes (the sum counted each user
        # once per process, and rank 0 drawing the curves alone waited for processes that had finished)
        collections = {name: ranking_metrics(self.ks, self.num_negatives, sync=False) for name in BASELINES}
        for start in range(0, len(dataset), datamodule.eval_batch_size):
            stop = min(start + datamodule.eval_batch_size, len(dataset))
            batch = datamodule.collate([dataset[i] for i in range(start, stop)])
            for name, metrics in collections.items():
                scores = baseline_scores(name, batch["items"], batch["lengths"], pop, trans)
                seen = batch["seen"] if self.exclude_seen else None
                metrics.update(protocol_ranks(scores, batch["target"], seen, batch.get("negatives")))
        return {name: {k: float(v) for k, v in m.compute().items()} for name, m in collections.items()}

    def baselines(self, datamodule: RecommendationDataModule) -> dict[str, dict[str, float]]:
        return self.baseline_rows(datamodule, "test")

    @torch.no_grad()
    def save_artifacts(self, model: SASRec, datamodule: RecommendationDataModule, run_dir: Path) -> None:
        """``plots/attention_users.png`` (last-position attention over the history of a few test users),
        ``plots/ranking_curves.png`` (validation metrics over training beside the baselines) and the card."""
        run_dir = Path(run_dir)
        write_model_card(run_dir, model, datamodule, self.exclude_seen)
        plot_dir = run_dir / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        if self.num_attention_plots > 0:
            plot_attention(model, datamodule, self.num_attention_plots, plot_dir / "attention_users.png")
        if (run_dir / "metrics.csv").is_file():
            plot_curves(run_dir / "metrics.csv", self.baseline_rows(datamodule, "val"), plot_dir)


def write_model_card(
    folder: str | Path, model: SASRec, dm: RecommendationDataModule, exclude_seen: bool
) -> Path:
    """Write ``recommendation.json``: model kwargs, the data settings and the catalogue (raw item ids in
    index order), atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dm.setup()
    info = {
        "model": model.config,
        "data": {
            "path": None if dm.path is None else str(Path(dm.path).expanduser().resolve()),
            "titles": None if dm.titles is None else str(Path(dm.titles).expanduser().resolve()),
            "min_interactions": dm.min_interactions,
            "k_core": dm.k_core,
        },
        "exclude_seen": exclude_seen,
        "item_ids": dm.data.item_ids,
    }
    path = folder / MODEL_FILE
    tmp = path.with_name(f".{MODEL_FILE}.tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def _short(title: str, width: int = 28) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def plot_attention(model: SASRec, dm: RecommendationDataModule, num_users: int, path: Path) -> Path:
    """One panel per test user: the last layer's attention (head mean) of the last history position over
    the last 20 history items, labelled with titles where the data has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tpath = titles_path(dm.path, dm.titles)
    titles = read_titles(tpath) if tpath is not None and tpath.is_file() else {}
    dataset = dm.eval_dataset("test")
    users = list(range(min(num_users, len(dataset))))
    batch = dm.collate([dataset[u] for u in users])
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    _, weights = model.hidden(batch["items"].to(device), need_weights=True)
    model.train(was_training)
    last = weights[-1].float().mean(1).cpu()  # (B, L, L): last layer, head mean
    fig, axes = plt.subplots(len(users), 1, figsize=(9, 2.6 * len(users)), squeeze=False)
    for row, u in enumerate(users):
        n = int(batch["lengths"][row])
        shown = min(n, 20)
        w = last[row, n - 1, n - shown : n].numpy()  # the last query over its last `shown` keys
        ids = batch["items"][row, n - shown : n].tolist()
        labels = [_short(titles.get(dm.data.item_ids[i - 1], str(dm.data.item_ids[i - 1]))) for i in ids]
        ax = axes[row, 0]
        ax.bar(range(shown), w, color="tab:blue")
        ax.set_xticks(range(shown), labels, rotation=60, ha="right", fontsize=6)
        target = dm.data.item_ids[int(batch["target"][row]) - 1]
        following = _short(titles.get(target, str(target)), 40)
        ax.set_title(
            f"user {dm.data.user_ids[u]}: {n} items seen, next: {following}",
            fontsize=8,
        )
        ax.set_ylabel("attention", fontsize=7)
    fig.suptitle("last layer, last position's attention over the history (mean over heads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(metrics_csv: Path, baselines: dict[str, dict[str, float]], out_dir: Path) -> Path | None:
    """``ranking_curves.png``: validation ``hr@10`` / ``ndcg@10`` of each protocol over training steps, the
    baselines' validation values as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv) as f:
        records = list(csv.DictReader(f))
    cols = [c for c in (records[0] if records else {}) if c.startswith("val/") and "@10" in c]
    if not cols:
        return None
    fig, axes = plt.subplots(1, len(cols), figsize=(3.6 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        pts = [(float(r["step"]), float(r[col])) for r in records if r.get(col)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=2, label="SASRec (mha)")
        name = col.removeprefix("val/")
        for style, (base, row) in zip(("--", ":"), baselines.items(), strict=False):
            if name in row:
                ax.axhline(row[name], linestyle=style, color="gray", label=base)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("validation (leave-one-out, second-to-last item)", fontsize=9)
    fig.tight_layout()
    path = out_dir / "ranking_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
