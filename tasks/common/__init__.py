"""Helpers shared by every task and by ``train.py``: checkpoint IO, schedules, results tables, plots.

The names are imported on first use, so that a light submodule (``tasks.common.sweep``, which Hydra loads
at start-up) does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AtomicCheckpointIO": "checkpoint",
    "ResumableModelCheckpoint": "checkpoint",
    "SigtermCheckpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "model_state_dict": "checkpoint",
    "read_model_card": "checkpoint",
    "appending_csv_logger": "report",
    "format_table": "report",
    "plot_metrics": "report",
    "save_artifacts": "report",
    "write_results": "report",
    "warmup_cosine": "schedule",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tasks.common' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tasks.common.{_WHERE[name]}"), name)
