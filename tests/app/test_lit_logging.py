"""``train/loss`` logging of TaskModule: metrics.csv as if logged every step, fewer ``self.log`` calls, the
progress bar still showing the latest loss (in-process fits of a tiny ViT on CPU, a few seconds)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from tasks.lit import LossProgressBar, TaskModule, _batch_size
from tasks.vision.task import VisionTask

BATCHES_PER_EPOCH = 8  # 128 training images in batches of 16


class EveryStepModule(TaskModule):
    """The reference: ``self.log("train/loss")`` after every training step, as TaskModule used to."""

    def training_step(self, batch, batch_idx):
        loss = self.task.training_loss(self.model, batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=_batch_size(batch))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        pass


def _fit(run_dir: Path, module_cls: type[TaskModule], max_steps: int, log_every: int):
    """Fit a tiny ViT (train.py's logger and callbacks); returns the module, the trainer, the loss of
    every step (read from the task, not from the module) and the number of ``self.log("train/loss")``."""
    L.seed_everything(0, verbose=False)
    task = VisionTask(
        data={"batch_size": 16, "eval_batch_size": 100, "train_limit": 16 * BATCHES_PER_EPOCH},
        model={"patch_size": 7, "stem_channels": [], "embed_dim": 32, "depth": 1, "num_heads": 2},
    )
    datamodule = task.build_datamodule()
    module = module_cls(task, task.build_model(datamodule), {"lr": 1e-3, "weight_decay": 0.05, "warmup": 2})
    losses: list[float] = []
    training_loss = task.training_loss

    def recording_loss(model, batch):
        loss = training_loss(model, batch)
        losses.append(loss.item())
        return loss

    task.training_loss = recording_loss
    log_calls = []
    log = module.log

    def counting_log(name, *args, **kwargs):
        log_calls.append(name)
        return log(name, *args, **kwargs)

    module.log = counting_log
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        log_every_n_steps=log_every,
        val_check_interval=5,  # validation mid-epoch too: the bar shows train/loss next to val/*
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.CSVLogger(run_dir, name="", version=""),
        callbacks=[
            ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/acc", mode="max"),
            LearningRateMonitor(logging_interval="step"),
            LossProgressBar(refresh_rate=3),
        ],
        gradient_clip_val=1.0,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    trainer.fit(module, datamodule=datamodule)
    return module, trainer, losses, log_calls.count("train/loss")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "train/epoch_time_s"} for row in csv.DictReader(f)]


def test_train_loss_in_metrics_csv_as_if_logged_every_step(tmp_path: Path):
    log_every, max_steps = 3, 2 * BATCHES_PER_EPOCH + 3  # ends mid-epoch
    module, trainer, losses, num_logs = _fit(tmp_path / "new", TaskModule, max_steps, log_every)
    assert len(losses) == max_steps
    logged = {int(r["step"]): float(r["train/loss"]) for r in _rows(tmp_path / "new") if r["train/loss"]}
    # Lightning writes step metrics after every log_every-th step; "step" counts from 0
    expected_steps = [s for s in range(max_steps) if (s + 1) % log_every == 0]
    assert sorted(logged) == expected_steps
    assert all(logged[s] == losses[s] for s in expected_steps), "metrics.csv must hold the loss of that step"
    # self.log only where read: the written steps, the epoch ends and the last step (callback_metrics)
    read_steps = {*expected_steps, BATCHES_PER_EPOCH - 1, 2 * BATCHES_PER_EPOCH - 1, max_steps - 1}
    assert num_logs == len(read_steps) < max_steps, f"train/loss logged {num_logs} times in {max_steps} steps"
    assert trainer.callback_metrics["train/loss"].item() == losses[-1]
    assert "train/loss" not in trainer.progress_bar_metrics  # Lightning would .item() it every step

    _, _, reference_losses, reference_logs = _fit(tmp_path / "ref", EveryStepModule, max_steps, log_every)
    assert reference_logs == max_steps and reference_losses == losses
    assert _rows(tmp_path / "new") == _rows(tmp_path / "ref"), "metrics.csv differs from logging every step"

    bar = trainer.progress_bar_callback
    shown = bar.get_metrics(trainer, module)
    assert shown["train/loss"] == losses[-1] and list(shown)[0] == "train/loss"  # first, as before
    assert {"val/loss", "val/acc"} <= shown.keys()


def test_progress_bar_without_a_training_step_shows_no_loss(tmp_path: Path):
    module = TaskModule(
        VisionTask(model={"patch_size": 7, "embed_dim": 32, "depth": 1, "num_heads": 2}),
        torch.nn.Linear(2, 2),
        {"lr": 1e-3, "weight_decay": 0.0, "warmup": 0},
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    assert "train/loss" not in LossProgressBar().get_metrics(trainer, module)
