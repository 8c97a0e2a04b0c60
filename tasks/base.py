"""The small surface every task exposes to ``train.py``.

A task is built by Hydra from ``conf/task/<name>.yaml`` (``task._target_`` points at its class) and owns
what is specific to it: data, model, loss, metrics, a non-attention baseline and its artefacts (plots,
samples). Everything generic -- optimiser, schedule, clipping, precision, logging, checkpoints -- lives in
the shared LightningModule (``tasks/lit.py``), which calls the methods below.

Config layout (``conf/task/<name>.yaml`` is ``# @package _global_`` so a task can also set its own
defaults for ``optim`` and ``trainer``; command-line overrides still win)::

    # @package _global_
    task:
      _target_: tasks.vision.task.VisionTask   # the Task subclass
      data: {...}                              # kwargs for the task's data module
      model: {...}                             # kwargs for the task's model
    optim:
      lr: 1.0e-3
    trainer:
      max_epochs: 10
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection

TASKS: dict[str, type[Task]] = {}


def register(name: str):
    """Class decorator: make a :class:`Task` subclass reachable as ``task=<name>``."""

    def wrap(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task name {name!r} is registered twice ({TASKS[name]} and {cls})")
        cls.name = name
        TASKS[name] = cls
        return cls

    return wrap


def get_task(name: str) -> type[Task]:
    """Look a task class up by name; unknown names raise with the list of known ones."""
    import tasks  # noqa: F401  (importing the package registers every task)

    if name not in TASKS:
        known = ", ".join(sorted(TASKS)) or "(none)"
        raise ValueError(f"unknown task {name!r}; known tasks: {known}. Pick one with task=<name>.")
    return TASKS[name]


class Task(ABC):
    """One task head. Subclasses are registered with ``@register("name")``.

    Args:
        data: keyword arguments for the task's data module (paths, batch size, splits, ...).
        model: keyword arguments for the task's model (sizes, dropout, ...).
    """

    name: ClassVar[str] = "?"
    #: metric the checkpoint callback watches (logged as ``val/<monitor>``) and whether higher is better.
    monitor: ClassVar[str] = "loss"
    monitor_mode: ClassVar[str] = "min"

    def __init__(self, data: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> None:
        self.data_cfg = dict(data or {})
        self.model_cfg = dict(model or {})

    @abstractmethod
    def build_datamodule(self) -> L.LightningDataModule:
        """The data module with train / val / test loaders (validates paths and raises early).

        Under DDP the loaders shard themselves (``tasks.common.distributed``: ``train_sampler``,
        ``eval_sampler``, ``shard_batches``); the trainers set ``use_distributed_sampler: false``.
        """

    @abstractmethod
    def build_model(self, datamodule: L.LightningDataModule) -> nn.Module:
        """The model, built from ``mha``; may read sizes (classes, vocabulary) from the prepared data."""

    @abstractmethod
    def build_metrics(self) -> MetricCollection:
        """Fresh metrics for one stage; the LightningModule clones them per stage (val/, test/)."""

    @abstractmethod
    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar loss for one training batch."""

    @abstractmethod
    def eval_step(self, model: nn.Module, batch: Any, metrics: MetricCollection) -> torch.Tensor:
        """Update ``metrics`` on one eval batch and return its loss (a scalar)."""

    def on_device_batch(self, batch: Any, training: bool) -> Any:
        """Hook run after the batch reached the device (e.g. GPU augmentation). Default: unchanged."""
        return batch

    def compile_batch_work(self) -> None:
        """With ``compile=true``: ``torch.compile`` the task's own per-batch tensor work (e.g. augmentation)
        in place. Default: nothing to compile."""
        return None

    def baselines(self, datamodule: L.LightningDataModule) -> dict[str, dict[str, float]]:
        """Non-attention baselines on the test split: ``{"majority class": {"acc": 0.11}}``."""
        return {}

    def save_artifacts(self, model: nn.Module, datamodule: L.LightningDataModule, run_dir: Path) -> None:
        """Write task-specific outputs (attention maps, samples) into the run folder after testing."""
        return None  # optional hook: tasks without artifacts keep this default
