"""Log-mel features and batched augmentation, computed on the device (GPU when there is one).

:class:`LogMel` turns waveforms (B, samples) into normalised log-mel spectrograms (B, n_mels, frames) with
torchaudio's ``MelSpectrogram`` and ``AmplitudeToDB``; :class:`Augment` shifts, scales and mixes noise into
training waveforms and applies SpecAugment (``FrequencyMasking`` / ``TimeMasking``) to their spectrograms.
Every clip of a batch gets its own random draw; each operation runs once on the whole batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torchaudio.transforms as T
from torch import nn


class LogMel(nn.Module):
    """Waveforms float (B, samples) -> log-mel (B, n_mels, frames), normalised per mel bin.

    Args:
        sample_rate: input rate in Hz.
        n_mels: mel bins.
        win_ms: analysis window (and FFT size) in milliseconds.
        hop_ms: hop between frames in milliseconds; ``frames = 1 + samples // hop``.
        f_min: lowest mel frequency in Hz.
        f_max: highest mel frequency in Hz (None: half the sample rate).

    The decibel floor is a fixed -100 dB (``top_db`` would depend on the loudest clip of the batch). The
    per-bin mean / std of the training set are buffers, set with :meth:`set_stats`.
    """

    def __init__(
        self,
        sample_rate: int,
        n_mels: int = 40,
        win_ms: float = 25.0,
        hop_ms: float = 16.0,
        f_min: float = 20.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        if n_mels < 1 or win_ms <= 0 or hop_ms <= 0:
            raise ValueError(f"task.features: n_mels={n_mels}, win_ms={win_ms}, hop_ms={hop_ms} must be > 0")
        self.config = {
            "sample_rate": int(sample_rate),
            "n_mels": int(n_mels),
            "win_ms": float(win_ms),
            "hop_ms": float(hop_ms),
            "f_min": float(f_min),
            "f_max": None if f_max is None else float(f_max),
        }
        n_fft = int(round(sample_rate * win_ms / 1000))
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.mel = T.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=self.hop, f_min=f_min, f_max=f_max, n_mels=n_mels, power=2.0
        )
        self.to_db = T.AmplitudeToDB(stype="power", top_db=None)
        self.register_buffer("mean", torch.zeros(n_mels, 1))
        self.register_buffer("std", torch.ones(n_mels, 1))

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of ``num_samples`` samples (centred STFT)."""
        return 1 + num_samples // self.hop

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """Un-normalised log-mel in dB: (B, samples) -> (B, n_mels, frames)."""
        with torch.autocast(waves.device.type, enabled=False):  # the FFT in float32
            return self.to_db(self.mel(waves.float()))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> normalised (B, n_mels, frames)."""
        return (self.log_mel(waves) - self.mean) / self.std

    @torch.no_grad()
    def set_stats(self, waves: torch.Tensor, batch: int = 512) -> None:
        """Per-bin mean / std of the log-mel of ``waves`` (N, samples) float."""
        feats = torch.cat([self.log_mel(waves[i : i + batch]) for i in range(0, len(waves), batch)])
        self.mean.copy_(feats.mean(dim=(0, 2)).unsqueeze(-1))
        self.std.copy_(feats.std(dim=(0, 2)).clamp_min(1e-3).unsqueeze(-1))

    def card(self) -> dict[str, Any]:
        """Settings and statistics as plain values (the model card of :mod:`tasks.audio.predict`)."""
        return {**self.config, "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> LogMel:
        """The inverse of :meth:`card`."""
        card = dict(card)
        mean, std = card.pop("mean"), card.pop("std")
        frontend = cls(**card)
        frontend.mean.copy_(torch.tensor(mean).unsqueeze(-1))
        frontend.std.copy_(torch.tensor(std).unsqueeze(-1))
        return frontend


class Augment(nn.Module):
    """Random augmentation of training clips.

    Args:
        shift_ms: time shift, uniform in [-shift_ms, shift_ms] milliseconds, zero fill (0: off).
        gain_db: gain, uniform in [-gain_db, gain_db] dB (0: off).
        noise_prob: probability a clip gets noise mixed in: background-noise windows when the data has them
            (Speech Commands), else white noise.
        snr_db: signal-to-noise ratio range of the mixed noise in dB.
        freq_masks: SpecAugment frequency masks per clip, each up to ``freq_width`` mel bins.
        freq_width: maximal width of a frequency mask.
        time_masks: SpecAugment time masks per clip, each up to ``time_width`` frames.
        time_width: maximal width of a time mask.
    """

    def __init__(
        self,
        shift_ms: float = 100.0,
        gain_db: float = 6.0,
        noise_prob: float = 0.5,
        snr_db: tuple[float, float] = (5.0, 30.0),
        freq_masks: int = 2,
        freq_width: int = 8,
        time_masks: int = 2,
        time_width: int = 10,
    ) -> None:
        super().__init__()
        if not 0.0 <= noise_prob <= 1.0 or snr_db[0] > snr_db[1]:
            raise ValueError(
                f"task.augment: noise_prob={noise_prob} must be in [0, 1], snr_db={snr_db} lo <= hi"
            )
        self.shift_ms, self.gain_db, self.noise_prob = float(shift_ms), float(gain_db), float(noise_prob)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.freq_masks = [T.FrequencyMasking(freq_width, iid_masks=True) for _ in range(freq_masks)]
        self.time_masks = [T.TimeMasking(time_width, iid_masks=True) for _ in range(time_masks)]

    @torch.no_grad()
    def waves(self, x: torch.Tensor, sample_rate: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Shift, gain and noise on float clips (B, samples); ``noise``: float windows (M, samples)."""
        b, n = x.shape
        dev = x.device
        max_shift = int(sample_rate * self.shift_ms / 1000)
        if max_shift > 0:
            shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=dev)
            src = torch.arange(n, device=dev) - shift  # (B, samples): where each output sample comes from
            x = x.gather(1, src.clamp(0, n - 1)) * ((src >= 0) & (src < n))
        if self.gain_db > 0:
            x = x * 10 ** ((torch.rand(b, 1, device=dev) * 2 - 1) * self.gain_db / 20)
        if self.noise_prob > 0:
            if noise is not None and len(noise):
                bg = noise[torch.randint(len(noise), (b,), device=dev)]
            else:
                bg = torch.randn_like(x)
            snr = torch.empty(b, 1, device=dev).uniform_(*self.snr_db)
            power = x.square().mean(1, keepdim=True)
            scale = (power / (bg.square().mean(1, keepdim=True).clamp_min(1e-10) * 10 ** (snr / 10))).sqrt()
            x = x + bg * scale * (torch.rand(b, 1, device=dev) < self.noise_prob)
        return x

    @torch.no_grad()
    def spec(self, feats: torch.Tensor) -> torch.Tensor:
        """SpecAugment on (B, n_mels, frames); masked cells are 0 (the training mean)."""
        x = feats.unsqueeze(1)  # (B, 1, n_mels, frames): iid masks need a channel dimension
        for mask in (*self.freq_masks, *self.time_masks):
            x = mask(x)
        return x.squeeze(1)
