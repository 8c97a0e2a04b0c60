"""The shared LightningModule: optimisation, schedule, logging and the metric plumbing for every task.

A :class:`~tasks.base.Task` supplies data, model, loss and metrics; :class:`TaskModule` owns AdamW, the
warmup + cosine schedule, per-stage metric copies and logging. Gradient clipping and precision are Trainer
settings (``optim.grad_clip`` and ``trainer.precision``), applied in ``train.py``. :class:`LossProgressBar`
is the progress bar that shows ``train/loss``.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import get_standard_metrics
from torch import nn
from torchmetrics import MeanMetric

from tasks.base import Task
from tasks.common.checkpoint import TASK_KEY, rng_state, set_rng_state
from tasks.common.schedule import warmup_cosine


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices / conv kernels; no decay for biases, norms, positions, class tokens
    and whatever the model lists in ``no_weight_decay()`` (timm's convention)."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TaskModule(L.LightningModule):
    """Trains ``model`` on ``task``.

    Args:
        task: the task (loss, metrics, device-side batch hook).
        model: the ``nn.Module`` to train (built by ``task.build_model``).
        optim: ``lr``, ``weight_decay``, ``betas``, ``eps``, ``warmup`` (fraction < 1 or steps),
            ``min_lr_ratio`` (``grad_clip`` is read by train.py and given to the Trainer).
        compile: ``torch.compile`` the model in place (state-dict names are unchanged), and the task's
            per-batch work (``Task.compile_batch_work``).
        compile_mode: ``torch.compile`` mode of the model: ``None`` (default), ``"reduce-overhead"`` (CUDA
            graphs: for small models whose training step is bound by kernel launches, not by the GPU),
            ``"max-autotune"``, ...
    """

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        optim: dict[str, Any],
        compile: bool = False,
        compile_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.model = model
        self.optim = dict(optim)
        for key in ("lr", "weight_decay", "warmup"):
            if key not in self.optim:
                raise ValueError(f"optim.{key} is missing from the config (got keys {sorted(self.optim)})")
        if compile:
            self.model.compile(mode=compile_mode)
            task.compile_batch_work()
        self.last_train_loss: torch.Tensor | None = None  # the latest training step's loss, detached
        metrics = task.build_metrics()
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # the mean loss over the split, weighted by batch size and summed over every process before the
        # division (Lightning's own sync_dist mean floors the number of batches when their total is odd)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which task and model configuration wrote the checkpoint, and the random generators'
        states (plain values and tensors: loadable with ``weights_only=True``)."""
        checkpoint[TASK_KEY] = {
            "task": self.task.name,
            "model": _plain(self.task.model_cfg),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming: restore the random generators, so that data order, augmentation and dropout go on as
        in a run that was never stopped."""
        rng = (checkpoint.get(TASK_KEY) or {}).get("rng")
        if rng is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            set_rng_state(rng)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self._trainer is not None and self.trainer.training
        return self.task.on_device_batch(batch, training)

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        """``train/epoch_time_s`` in metrics.csv: wall seconds of the epoch's training batches (under DDP
        the slowest process's)."""
        start = getattr(self, "_epoch_start", None)
        if start is not None:
            elapsed = time.perf_counter() - start
            self.log("train/epoch_time_s", elapsed, on_epoch=True, sync_dist=True, reduce_fx="max")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.task.training_loss(self.model, batch)
        self.last_train_loss = loss.detach()  # logged in on_train_batch_end, shown by LossProgressBar
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """``self.log("train/loss")`` only after the steps whose metrics Lightning writes (metrics.csv:
        every ``trainer.log_every_n_steps`` steps, or when stopping) and at the end of an epoch or of
        training (``trainer.callback_metrics``); metrics.csv is as if logged every step. Each call costs
        ~0.4 ms of host time on a 2-core CPU, and at ``log_every_n_steps=50`` 49 in 50 were never read.
        Runs after the callbacks' hooks and before Lightning writes, so a stop asked for by a callback
        (``max_time``) is seen. The progress bar reads ``last_train_loss`` itself (:class:`LossProgressBar`):
        logged with ``prog_bar=True``, the loss is turned into a Python float after every batch (a GPU
        sync per step, whatever the bar's refresh rate).
        """
        trainer = self.trainer
        if (
            _logger_writes_step_metrics(trainer)
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            or 0 <= trainer.max_steps <= trainer.global_step
        ):
            self.log(
                "train/loss",
                self.last_train_loss,
                on_step=True,
                on_epoch=False,
                batch_size=_batch_size(batch),
            )

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.task.eval_step(self.model, batch, self.val_metrics)
        self.val_loss.update(loss.detach().float(), weight=_batch_size(batch) or 1)
        self.log("val/loss", self.val_loss, prog_bar=True, on_epoch=True)
        self.log_dict(self.val_metrics, prog_bar=True, on_epoch=True)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.task.eval_step(self.model, batch, self.test_metrics)
        self.test_loss.update(loss.detach().float(), weight=_batch_size(batch) or 1)
        self.log("test/loss", self.test_loss, on_epoch=True)
        self.log_dict(self.test_metrics, on_epoch=True)
        return loss

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm=None,
    ) -> None:
        """Clip the global gradient norm (``optim.grad_clip``).

        Lightning refuses to clip for a fused optimizer under any AMP plugin; with bf16 there is no loss
        scaler, gradients are already unscaled here, and clipping them directly is exact.
        """
        if gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(self.parameters(), float(gradient_clip_val))

    def configure_optimizers(self) -> dict[str, Any]:
        opt = self.optim
        optimizer = torch.optim.AdamW(
            param_groups(self.model, float(opt["weight_decay"])),
            lr=float(opt["lr"]),
            betas=tuple(opt.get("betas", (0.9, 0.999))),
            eps=float(opt.get("eps", 1e-8)),
            # fused AdamW unscales fp16 gradients inside step(), after clipping would have run: only with
            # bf16/fp32, where there is no loss scaler
            fused=next(self.model.parameters()).is_cuda and "16-mixed" != str(self.trainer.precision),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        lr_lambda = partial(
            warmup_cosine,
            total_steps=total,
            warmup=float(opt["warmup"]),
            min_lr_ratio=float(opt.get("min_lr_ratio", 0.0)),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
        }


class LossProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, showing ``train/loss`` of the latest step (``TaskModule.last_train_loss``) first
    among the logged metrics, as a ``prog_bar=True`` log would; the loss is read (a GPU sync) only when the
    bar refreshes: every ``refresh_rate`` batches, at the end of an epoch and after validation.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is None:  # no training step yet
            return items
        standard = get_standard_metrics(trainer).keys()  # v_num, then the logged metrics
        return {
            **{k: v for k, v in items.items() if k in standard},
            "train/loss": loss.item(),
            **{k: v for k, v in items.items() if k not in standard},
        }


def _logger_writes_step_metrics(trainer: L.Trainer) -> bool:
    """Whether Lightning hands the step metrics to the loggers after this training batch: its own test
    (``_LoggerConnector.should_update_logs``, private in Lightning 2.6; True if it ever moves: log always)."""
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True) or trainer.fast_dev_run)


def _plain(value: Any) -> Any:
    """``value`` as JSON-like plain Python (tuples become lists), as a checkpoint stores it."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _batch_size(batch: Any) -> int | None:
    """Leading dimension of the first tensor in the batch (for correct epoch averages)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return None
