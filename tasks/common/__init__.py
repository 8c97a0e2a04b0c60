"""Helpers shared by every task and by ``train.py``: checkpoint IO, schedules, results tables, plots."""

from tasks.common.checkpoint import (
    AtomicCheckpointIO,
    ResumableModelCheckpoint,
    SigtermCheckpoint,
    load_checkpoint,
    model_state_dict,
)
from tasks.common.report import (
    appending_csv_logger,
    format_table,
    plot_metrics,
    save_artifacts,
    write_results,
)
from tasks.common.schedule import warmup_cosine

__all__ = [
    "AtomicCheckpointIO",
    "ResumableModelCheckpoint",
    "SigtermCheckpoint",
    "appending_csv_logger",
    "format_table",
    "load_checkpoint",
    "model_state_dict",
    "plot_metrics",
    "save_artifacts",
    "warmup_cosine",
    "write_results",
]
