"""``task=audio``: spoken-word recognition with a spectrogram transformer on the ``mha`` core."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tasks.audio.data import AudioDataModule, Clips
from tasks.audio.features import Augment, LogMel
from tasks.audio.model import SpectrogramTransformer
from tasks.base import RunContext, Task

#: the model card written into the run folder: what ``tasks.audio.predict`` needs to rebuild the model
MODEL_FILE = "audio.json"


class AudioTask(Task):
    """Keyword spotting / spoken-word classification.

    Args:
        data: :class:`~tasks.audio.data.AudioDataModule` kwargs (source, root, sample rate, batch size ...).
        model: :class:`~tasks.audio.model.SpectrogramTransformer` kwargs (``n_mels``, ``num_frames`` and
            ``num_classes`` come from the features and the data).
        features: :class:`~tasks.audio.features.LogMel` kwargs (the sample rate is the data's).
        augment: :class:`~tasks.audio.features.Augment` kwargs (training batches only, on the device).
        label_smoothing: label smoothing of the training cross-entropy.
        num_plot_clips: test clips drawn in ``plots/attention.png``.
        run: the run this task is part of (:class:`~tasks.base.RunContext`); the model card ``audio.json`` is
            written into its folder.
    """

    monitor = "acc"
    monitor_mode = "max"
    metric_scales = {"acc": "0-1"}

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        features: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        num_plot_clips: int = 6,
        run: RunContext | None = None,
    ) -> None:
        super().__init__(data, model, run)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.features_cfg = dict(features or {})
        self.augment = Augment(**(augment or {}))
        self.label_smoothing = label_smoothing
        self.num_plot_clips = num_plot_clips
        self.num_classes = 0
        self.frontend: LogMel | None = None
        self.noise: torch.Tensor | None = None  # float background-noise windows (M, samples) on the device

    def build_datamodule(self) -> AudioDataModule:
        return AudioDataModule(**self.data_cfg)

    def build_model(self, datamodule: AudioDataModule) -> SpectrogramTransformer:
        datamodule.setup()
        self.num_classes = datamodule.num_classes
        self.frontend = LogMel(datamodule.sample_rate, **self.features_cfg)
        self.noise = None if datamodule.noise is None else datamodule.noise.float() / 32768
        train = datamodule.splits["train"].waves
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:4000]
        self.frontend.set_stats(train[pick].float() / 32768)
        derived = {
            "n_mels": self.frontend.config["n_mels"],
            "num_frames": self.frontend.num_frames(datamodule.clip_samples),
            "num_classes": self.num_classes,
        }
        clash = {k: v for k, v in self.model_cfg.items() if k in derived and v != derived[k]}
        if clash:
            raise ValueError(
                f"task.model {clash} disagrees with the features / data {derived}; drop those task.model keys"
            )
        model = SpectrogramTransformer(**(derived | self.model_cfg))
        if self.run.run_dir is not None:
            write_model_card(self.run.run_dir, model, self.frontend, datamodule)
        return model

    def build_metrics(self) -> MetricCollection:
        return MetricCollection(
            {"acc": MulticlassAccuracy(num_classes=max(self.num_classes, 2), average="micro")}
        )

    def on_device_batch(self, batch: Any, training: bool) -> Any:
        """(int16 waves (B, samples), labels) -> (log-mel (B, n_mels, frames), labels); training batches are
        augmented (waveform shift / gain / noise, then SpecAugment)."""
        waves, labels = batch
        if self.frontend is None:
            raise RuntimeError("build_model(datamodule) must run before batches (it sets the features)")
        if self.frontend.mean.device != waves.device:  # once: a host->device copy per step would sync
            self.frontend.to(waves.device)
            if self.noise is not None:
                self.noise = self.noise.to(waves.device)
        x = waves.float() / 32768
        if training:
            x = self.augment.waves(x, self.frontend.config["sample_rate"], self.noise)
        feats = self.frontend(x)
        if training:
            feats = self.augment.spec(feats)
        return feats, labels

    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing)

    def eval_step(self, model: nn.Module, batch: Any, metrics: MetricCollection) -> torch.Tensor:
        x, y = batch
        logits = model(x).float()
        metrics.update(logits, y)
        return F.cross_entropy(logits, y)

    def baselines(self, datamodule: AudioDataModule) -> dict[str, dict[str, float]]:
        """Majority class of the training split, and logistic regression on MFCC statistics (mean and std
        over time of 20 MFCCs and their deltas), both scored on the test split."""
        train, test = datamodule.splits["train"], datamodule.splits["test"]
        majority = int(torch.bincount(train.labels, minlength=self.num_classes).argmax())
        rows = {"majority class": {"acc": float((test.labels == majority).float().mean())}}
        rows["logistic regression (MFCC stats)"] = {
            "acc": mfcc_logistic_regression(train, test, datamodule.sample_rate)
        }
        return rows

    @torch.no_grad()
    def save_artifacts(self, model: nn.Module, datamodule: AudioDataModule, run_dir: Path) -> None:
        """``plots/attention.png``: a few test clips' log-mel spectrograms with the last layer's class-token
        (or pooled) attention over time; and the model card ``audio.json`` again (a resumed run's folder)."""
        write_model_card(run_dir, model, self.frontend, datamodule)
        test = datamodule.splits["test"]
        n = min(self.num_plot_clips, len(test))
        if n == 0:
            return
        pick = torch.linspace(0, len(test) - 1, n).long()  # spread over the split (it is sorted by voice)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        feats, labels = self.on_device_batch((test.waves[pick].to(device), test.labels[pick]), training=False)
        maps = model.attention_map(feats).cpu()  # (n, F', T')
        probs = model(feats).float().softmax(-1).cpu()
        model.train(was_training)
        plot_attention(
            feats.float().cpu(), maps, labels, probs, datamodule.classes, run_dir / "plots" / "attention.png"
        )


def write_model_card(
    folder: str | Path, model: SpectrogramTransformer, frontend: LogMel, dm: AudioDataModule
) -> Path:
    """Write ``audio.json``: model kwargs, feature settings and statistics, class names, clip length."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = {
        "model": model.config,
        "features": frontend.card(),
        "classes": list(dm.classes),
        "clip_samples": dm.clip_samples,
        "source": dm.source,
    }
    path = folder / MODEL_FILE
    path.write_text(json.dumps(card, indent=2))
    return path


def mfcc_stats(waves: torch.Tensor, sample_rate: int, batch: int = 1024) -> torch.Tensor:
    """int16 clips (N, samples) -> (N, 80): mean and std over time of 20 MFCCs and their deltas."""
    import torchaudio.functional as AF
    import torchaudio.transforms as T

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mfcc = T.MFCC(
        sample_rate,
        n_mfcc=20,
        melkwargs={"n_fft": int(sample_rate * 0.025), "hop_length": int(sample_rate * 0.010), "n_mels": 40},
    ).to(device)
    out = []
    for i in range(0, len(waves), batch):
        c = mfcc(waves[i : i + batch].to(device).float() / 32768)  # (b, 20, frames)
        d = AF.compute_deltas(c)
        out.append(torch.cat([c.mean(-1), c.std(-1), d.mean(-1), d.std(-1)], dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 80)


def mfcc_logistic_regression(train: Clips, test: Clips, sample_rate: int) -> float:
    """Test accuracy of a standardised logistic regression on :func:`mfcc_stats` (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(torch.unique(train.labels)) < 2:
        return float((test.labels == train.labels[0]).float().mean())
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(mfcc_stats(train.waves, sample_rate).numpy(), train.labels.numpy())
    pred = clf.predict(mfcc_stats(test.waves, sample_rate).numpy())
    return float((torch.from_numpy(pred) == test.labels).float().mean())


def plot_attention(
    feats: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    classes: list[str],
    path: Path,
) -> Path:
    """One column per clip: its log-mel spectrogram (n_mels, frames) and, under it, the attention over time
    (``maps`` (n, F', T') summed over frequency patches)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = feats.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 3.6), squeeze=False, height_ratios=[3, 1])
    for i in range(n):
        axes[0, i].imshow(feats[i].numpy(), origin="lower", aspect="auto", cmap="magma")
        pred = int(probs[i].argmax())
        axes[0, i].set_title(f"{classes[labels[i]]} -> {classes[pred]} ({probs[i, pred]:.2f})", fontsize=8)
        over_time = maps[i].sum(0)  # (T',)
        frames = feats.shape[-1]
        centres = (torch.arange(len(over_time)) + 0.5) * frames / len(over_time)
        axes[1, i].fill_between(centres.numpy(), over_time.numpy(), color="tab:blue", alpha=0.7)
        axes[1, i].set_xlim(0, frames)
        axes[0, i].set_xticks([])
        axes[1, i].set_xlabel("frame", fontsize=7)
        axes[0, i].set_yticks([])
        axes[1, i].set_yticks([])
    axes[0, 0].set_ylabel("mel bin", fontsize=7)
    axes[1, 0].set_ylabel("attention", fontsize=7)
    fig.suptitle("log-mel spectrograms; below: last-layer attention over time (head mean)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
