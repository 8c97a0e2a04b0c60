"""The end-of-run report: a results table (model vs baselines), results.csv, PNG curves and the task's
artifacts."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import lightning as L
    from torch import nn

    from tasks.base import Task


def save_artifacts(task: Task, model: nn.Module, datamodule: L.LightningDataModule, run_dir: Path) -> None:
    """``task.save_artifacts`` with ``torch.compile`` switched off: the artifacts' few, odd-sized batches
    through a compiled model would each be a recompile (with CUDA graphs also a new recording), which held
    the end of an H100 CIFAR-10 run for over a minute."""
    with torch.compiler.set_stance("force_eager"):
        task.save_artifacts(model, datamodule, run_dir)


def _metric_names(rows: dict[str, dict[str, float]]) -> list[str]:
    names: list[str] = []
    for metrics in rows.values():
        names += [n for n in metrics if n not in names]
    return names


def format_table(rows: dict[str, dict[str, float]], scales: dict[str, str] | None = None) -> str:
    """A plain-text table, one row per model / baseline, one column per metric (missing: ``-``); a metric
    with an entry in ``scales`` shows it in its header (``bleu [0-100]``)."""
    names = _metric_names(rows)
    scales = scales or {}
    header = ["model", *(f"{n} [{scales[n]}]" if n in scales else n for n in names)]
    body = [[row, *(f"{m[n]:.4f}" if n in m else "-" for n in names)] for row, m in rows.items()]
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    fmt = "| " + " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths)) + " |"
    return "\n".join([line, fmt.format(*header), line, *(fmt.format(*r) for r in body), line])


def write_results(rows: dict[str, dict[str, float]], path: Path) -> None:
    """Write the results table as CSV (``model,<metric>,...``)."""
    names = _metric_names(rows)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", *names])
        for row, m in rows.items():
            writer.writerow([row, *(m.get(n, "") for n in names)])


def plot_metrics(metrics_csv: Path, out_dir: Path) -> list[Path]:
    """One PNG per metric name from a Lightning ``metrics.csv``: ``train/loss`` and ``val/loss`` share
    ``loss.png``; the x axis is the optimiser step. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics_csv.exists():
        return []
    with open(metrics_csv) as f:
        records = list(csv.DictReader(f))
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for rec in records:
        step = rec.get("step", "")
        if step == "":
            continue
        for col, val in rec.items():
            if col in ("step", "epoch") or val in ("", None) or "/" not in col:
                continue
            stage, name = col.split("/", 1)
            if stage == "test" or name.startswith("lr"):
                continue
            value = float(val)
            if not math.isfinite(value):
                continue
            xs, ys = series.setdefault(name, {}).setdefault(stage, ([], []))
            xs.append(float(step))
            ys.append(value)
    lr_cols = [c for c in (records[0].keys() if records else []) if "/lr" in c or c.startswith("lr")]
    for col in lr_cols:
        pts = [(float(r["step"]), float(r[col])) for r in records if r.get(col) not in ("", None)]
        if pts:
            series.setdefault("lr", {})["train"] = ([p[0] for p in pts], [p[1] for p in pts])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stages in series.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for stage, (xs, ys) in sorted(stages.items()):
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=stage)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def appending_csv_logger(run_dir: Path):
    """Lightning's ``CSVLogger`` writing ``<run_dir>/metrics.csv``, except that a ``metrics.csv`` already
    there (a run resumed into its own folder) keeps its rows: new rows are appended (Lightning deletes the
    file, and warns about the folder Hydra has already written into)."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class _AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = next(csv.reader(f), [])  # the header: new keys rewrite it

    class _AppendingCSVLogger(CSVLogger):
        @property
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._experiment = _AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return _AppendingCSVLogger(run_dir, name="", version="")
