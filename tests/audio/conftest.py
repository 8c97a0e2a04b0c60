"""Tiny audio folders in the FSDD and Speech Commands layouts, written with soundfile (tones + noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def tone(digit: int, rate: int, seconds: float, seed: int) -> np.ndarray:
    """A 0.5-amplitude tone whose pitch says ``digit``, with a little noise: float32 (rate * seconds,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * (200 + 150 * digit) * t) + 0.01 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def write_fsdd(root: Path, speakers=("ann", "bob"), digits=range(3), indices=range(12)) -> Path:
    """``root/{digit}_{speaker}_{index}.wav`` at 8 kHz, 0.3-0.5 s each."""
    root.mkdir(parents=True, exist_ok=True)
    for s, speaker in enumerate(speakers):
        for d in digits:
            for i in indices:
                seconds = 0.3 + 0.02 * (i % 10)
                sf.write(
                    root / f"{d}_{speaker}_{i}.wav", tone(d, 8000, seconds, seed=s * 1000 + d * 50 + i), 8000
                )
    return root


def write_speech_commands(root: Path) -> Path:
    """Words yes / no (keywords) and cat / dog (unknown), 4 speakers x 2 clips each, 16 kHz, 1 s; speaker
    ``s3`` is the test list, ``s2`` the validation list; one 3 s background-noise file."""
    for w, word in enumerate(("yes", "no", "cat", "dog")):
        (root / word).mkdir(parents=True, exist_ok=True)
        for s in range(4):
            for k in range(2):
                sf.write(
                    root / word / f"s{s}_nohash_{k}.wav",
                    tone(w, 16000, 1.0, seed=w * 100 + s * 10 + k),
                    16000,
                )
    (root / "_background_noise_").mkdir()
    rng = np.random.default_rng(0)
    sf.write(
        root / "_background_noise_" / "white.wav",
        (0.1 * rng.standard_normal(48000)).astype(np.float32),
        16000,
    )
    lines = {
        s: [f"{w}/s{s}_nohash_{k}.wav" for w in ("yes", "no", "cat", "dog") for k in range(2)] for s in (2, 3)
    }
    (root / "validation_list.txt").write_text("\n".join(lines[2]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lines[3]) + "\n")
    return root


@pytest.fixture
def fsdd_root(tmp_path: Path) -> Path:
    return write_fsdd(tmp_path / "fsdd" / "recordings")


@pytest.fixture
def sc_root(tmp_path: Path) -> Path:
    return write_speech_commands(tmp_path / "speech_commands")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
