"""The small surface every task exposes to ``train.py``.

A task is built by Hydra from ``conf/task/<name>.yaml``: the config group is the registry (``task=<name>``
picks the file, its ``_target_`` names the :class:`Task` subclass, and nothing else lists tasks, so a run
imports only its own task). A task owns what is specific to it: data, model, loss, metrics, a
non-attention baseline and its artefacts (plots, samples). Everything generic -- optimiser, schedule,
clipping, precision, logging, checkpoints -- lives in the shared LightningModule (``tasks/lit.py``), which
calls the methods below. What a task needs to know about the run it is part of (the run folder, the
checkpoint being resumed, the task's name) comes in one argument, :class:`RunContext`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection


@dataclass(frozen=True)
class RunContext:
    """The run a task is part of; ``train.py`` builds it, tests and notebooks may leave it out.

    Attributes:
        name: the task's name (``task=<name>``, the file name of ``conf/task/<name>.yaml``).
        run_dir: the run folder; a task writes its own files (tokenizer, model card) there. ``None``: write
            nothing (a task built outside ``train.py``).
        resume_from: the checkpoint this run resumes (``ckpt_path=``), or ``None``.
    """

    name: str
    run_dir: Path | None = None
    resume_from: Path | None = None


class Task(ABC):
    """One task head, named by its config file ``conf/task/<name>.yaml``.

    Args:
        data: keyword arguments for the task's data module (paths, batch size, splits, ...).
        model: keyword arguments for the task's model (sizes, dropout, ...).
        run: the run this task is part of (default: no run folder, named after the task's package).
    """

    #: metric the checkpoint callback watches (logged as ``val/<monitor>``) and whether higher is better.
    monitor: ClassVar[str] = "loss"
    monitor_mode: ClassVar[str] = "min"
    #: the range of each reported metric, shown in the results table's header (every row uses it)
    metric_scales: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        run: RunContext | None = None,
    ) -> None:
        self.data_cfg = dict(data or {})
        self.model_cfg = dict(model or {})
        self.run = run or RunContext(name=type(self).__module__.split(".")[1])

    @property
    def name(self) -> str:
        """The task's name (``task=<name>``): labels its row of the results table."""
        return self.run.name

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
