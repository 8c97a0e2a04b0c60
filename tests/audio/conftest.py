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


# -------------------------------------------------------------------------- a stand-in for the hub dataset
#: the label names of google/speech_commands, config v0.02 (its ClassLabel: 35 words, then _silence_)
V02_LABELS = [
    *("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"),
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"),
    *("backward", "forward", "follow", "learn", "visual"),
    "_silence_",
]


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """``wave`` as the bytes of a 16-bit PCM WAV file (what the hub's parquet files hold)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def hub_row(file: str, wave: np.ndarray, rate: int = 16000, speaker: str | None = None) -> dict:
    """One row of google/speech_commands: ``file`` is ``<word>/<speaker>_nohash_<n>.wav`` (the test archive:
    ``_unknown_/<word>_<speaker>_nohash_<n>.wav``, ``_silence_/<n>.wav``), or ``_background_noise_/*.wav``."""
    folder, name = file.split("/")
    word = name.split("_")[0] if folder == "_unknown_" else folder
    word = "_silence_" if word in ("_background_noise_", "_silence_") else word
    if speaker is None and word != "_silence_":
        speaker = name.split("_nohash_")[0].split("_")[-1]
    return {
        "file": file,
        "audio": {"bytes": wav_bytes(wave, rate), "path": file},
        "label": V02_LABELS.index(word),
        "is_unknown": word not in V02_LABELS[:10] and word != "_silence_",
        "speaker_id": speaker,
        "utterance_id": int(name.split("_nohash_")[1][:-4]) if "_nohash_" in name else 0,
    }


def hub_dataset(splits: dict[str, list[dict]], raw: bool = False):
    """A ``datasets.DatasetDict`` of ``splits`` (rows of :func:`hub_row`) with the features of
    google/speech_commands v0.02: ``audio`` an ``Audio(sampling_rate=16000)`` column holding WAV bytes (cast
    from its storage: building it from rows would need torchcodec), or with ``raw`` a column of
    ``{"array", "sampling_rate"}``."""
    import datasets
    from datasets import ClassLabel, Features, Value

    audio = (
        {"array": datasets.List(Value("float32")), "sampling_rate": Value("int64")}
        if raw
        else {"bytes": Value("binary"), "path": Value("string")}
    )
    features = Features(
        {
            "file": Value("string"),
            "audio": audio,
            "label": ClassLabel(names=V02_LABELS),
            "is_unknown": Value("bool"),
            "speaker_id": Value("string"),
            "utterance_id": Value("int8"),
        }
    )
    out = {}
    for split, rows in splits.items():
        if raw:
            rows = [{**r, "audio": _decoded(r["audio"]["bytes"])} for r in rows]
        columns = {k: [r[k] for r in rows] for k in features}
        ds = datasets.Dataset.from_dict(columns, features=features)
        out[split] = ds if raw else ds.cast_column("audio", datasets.Audio(sampling_rate=16000))
    return datasets.DatasetDict(out)


def _decoded(data: bytes) -> dict:
    import io

    wave, rate = sf.read(io.BytesIO(data), dtype="float32")
    return {"array": wave.tolist(), "sampling_rate": rate}


def hub_from_folder(root: Path) -> dict[str, list[dict]]:
    """The rows of a :func:`write_speech_commands` folder as the hub holds them: split by its lists, the
    background noise in train (hub v0.02 puts its recordings in train and validation)."""
    val = set((root / "validation_list.txt").read_text().split())
    test = set((root / "testing_list.txt").read_text().split())
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for path in sorted(root.rglob("*.wav")):
        rel = path.relative_to(root).as_posix()
        wave, rate = sf.read(path, dtype="float32")
        split = "test" if rel in test else "validation" if rel in val else "train"
        splits[split].append(hub_row(rel, wave, rate))
    return splits


def fake_load_dataset(monkeypatch: pytest.MonkeyPatch, result) -> list[tuple]:
    """Replace ``datasets.load_dataset`` with one that returns ``result`` (or raises it, an exception; or
    calls it, a function of the arguments); returns the list of its calls' ``(args, kwargs)``."""
    import datasets

    calls: list[tuple] = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        if isinstance(result, BaseException):
            raise result
        return result(*args, **kwargs) if callable(result) else result

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls
