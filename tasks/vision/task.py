"""``task=vision``: image classification with a ViT built from ``mha`` blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tasks.base import RunContext, Task
from tasks.vision.augment import BatchAugment
from tasks.vision.data import VisionDataModule
from tasks.vision.model import ViT


class VisionTask(Task):
    """Image classification.

    Args:
        data: :class:`~tasks.vision.data.VisionDataModule` kwargs (``root`` / ``hub`` / batch size ...).
        model: :class:`~tasks.vision.model.ViT` kwargs (``image_size``, ``in_chans`` and ``num_classes``
            default to the data's).
        augment: :class:`~tasks.vision.augment.BatchAugment` kwargs (training batches only, on device).
        label_smoothing: label smoothing of the training cross-entropy.
        tta_flip: at validation / test, average the logits of each image and its horizontal mirror
            (test-time augmentation; only for data where a mirrored image keeps its label).
        num_attention_images: test images drawn in ``attention_maps.png``.
        run: the run this task is part of (:class:`~tasks.base.RunContext`).
    """

    monitor = "acc"
    monitor_mode = "max"
    metric_scales = {"acc": "0-1"}

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        tta_flip: bool = False,
        num_attention_images: int = 8,
        run: RunContext | None = None,
    ) -> None:
        super().__init__(data, model, run)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.augment = BatchAugment(**(augment or {}))
        self.label_smoothing = label_smoothing
        self.tta_flip = bool(tta_flip)
        self.num_attention_images = num_attention_images
        self.num_classes = 0
        self.mean = self.std = None  # per-channel statistics of the training images, (1, C, 1, 1)

    def build_datamodule(self) -> VisionDataModule:
        return VisionDataModule(**self.data_cfg)

    def build_model(self, datamodule: VisionDataModule) -> ViT:
        channels, height, width = datamodule.image_shape
        if height != width:
            raise ValueError(f"images are {height}x{width}; set task.data.image_size to make them square")
        self.num_classes = datamodule.num_classes
        mean, std = datamodule.channel_stats()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        kwargs = {
            "image_size": height,
            "in_chans": channels,
            "num_classes": self.num_classes,
        } | self.model_cfg
        if kwargs["image_size"] != height or kwargs["in_chans"] != channels:
            raise ValueError(
                f"task.model expects {kwargs['in_chans']}x{kwargs['image_size']}px images but the data is "
                f"{channels}x{height}px; drop task.model.image_size / in_chans or set task.data.image_size"
            )
        return ViT(**kwargs)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection(
            {"acc": MulticlassAccuracy(num_classes=max(self.num_classes, 2), average="micro")}
        )

    def compile_batch_work(self) -> None:
        """The GPU augmentation is ~60 small kernels a batch (3 ms of host time on an H100); compiled, few."""
        self.augment.compile()

    def on_device_batch(self, batch: Any, training: bool) -> Any:
        """uint8 (B, C, H, W) -> normalised float; training batches are augmented (and maybe mixed) here."""
        images, labels = batch
        x = images.float().div_(255)
        if training:
            x = self.augment(x)
        if self.mean.device != x.device:  # once: a pageable host->device copy per step would sync the GPU
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - self.mean) / self.std
        if training and self.augment.mixes:
            x, labels = self.augment.mix(x, labels, self.num_classes)
        return x, labels

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, target = batch  # target: int64 (B,) or mixed probabilities (B, num_classes)
        return F.cross_entropy(model(x).float(), target, label_smoothing=self.label_smoothing)

    def eval_step(self, model: nn.Module, batch: Any, metrics: MetricCollection) -> torch.Tensor:
        x, y = batch
        logits = model(x).float()
        if self.tta_flip:
            logits = (logits + model(x.flip(-1)).float()) / 2
        metrics.update(logits, y)
        return F.cross_entropy(logits, y)

    def baselines(self, datamodule: VisionDataModule) -> dict[str, dict[str, float]]:
        """Majority class of the training split, scored on the test split."""
        train, test = datamodule.splits["train"].labels, datamodule.splits["test"].labels
        majority = int(torch.bincount(train, minlength=self.num_classes).argmax())
        return {"majority class": {"acc": float((test == majority).float().mean())}}

    @torch.no_grad()
    def save_artifacts(self, model: nn.Module, datamodule: VisionDataModule, run_dir: Path) -> None:
        """``attention_maps.png``: last-layer attention over patches for a few test images."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = min(self.num_attention_images, len(datamodule.splits["test"]))
        if n == 0:
            return
        test = datamodule.splits["test"]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        images = test.images[:n]
        x, _ = self.on_device_batch((images.to(device), test.labels[:n].to(device)), training=False)
        maps = model.attention_maps(x).float().cpu()  # (n, grid, grid)
        preds = model(x).argmax(-1).cpu()
        model.train(was_training)
        fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
        for i in range(n):
            img = images[i].permute(1, 2, 0).numpy()
            axes[0, i].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
            classes = datamodule.classes
            axes[0, i].set_title(f"{classes[test.labels[i]]} -> {classes[preds[i]]}", fontsize=8)
            axes[1, i].imshow(maps[i].numpy(), cmap="viridis")
            for ax in axes[:, i]:
                ax.axis("off")
        label = "[CLS] -> patch" if getattr(model, "pool", "token") == "token" else "attention received"
        fig.suptitle(f"last-layer attention ({label}), head average; title: label -> prediction", fontsize=9)
        fig.tight_layout()
        out = run_dir / "plots"
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "attention_maps.png", dpi=100)
        plt.close(fig)
