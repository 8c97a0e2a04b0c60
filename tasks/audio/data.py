"""Spoken-word clips for ``task=audio``, decoded once into int16 tensors kept in memory.

Sources (``source=``):

* ``espeak`` (embedded default, offline): the ten Speech Commands keywords synthesised with the eSpeak NG
  engine of the ``espeakng-loader`` wheel (:mod:`tasks.audio.espeak`) over its ~100 voice variants, 8
  English accents, random speaking rates, pitches and pitch ranges. The split is by voice variant: no test
  (or validation) variant is heard in training, in any accent.
* ``fsdd``: the Free Spoken Digit Dataset, a folder of ``{digit}_{speaker}_{index}.wav`` (8 kHz). Protocol
  ``official``: index 0-4 of each speaker and digit is test, 5-9 validation, the rest train; ``speaker``:
  whole speakers (``test_speakers``) are test, index 0-4 of the others validation.
* ``speech_commands``: Google Speech Commands (v2) in its folder layout (``<word>/<file>.wav``,
  ``validation_list.txt``, ``testing_list.txt``, ``_background_noise_/``): the 12-label task of KWT and
  Google's recipe: the ten keywords, ``_unknown_`` (the other words, as many as ``unknown_percentage`` % of
  the keyword clips, per split) and ``_silence_`` (1 s windows of the background-noise files at a random
  volume, ``silence_percentage`` %).
* ``speech_commands`` with ``speech_commands.hub`` (``root`` null): the same 12-label task from a Hugging Face
  hub dataset through ``datasets``, written for ``google/speech_commands`` with ``hub_config=v0.02`` (columns
  ``file``, ``audio``, ``label``: a ClassLabel of 35 words and ``_silence_``, ``is_unknown``,
  ``speaker_id``). Its main revision is a loading script, which ``datasets`` >= 4 no longer runs: the hub's
  parquet export of the config (revision ``refs/convert/parquet``, folder ``v0.02``) is loaded instead
  (``hub_revision`` pins another revision and turns that fallback off). Rows map by label name: a keyword,
  ``_unknown_`` (any other word), ``_silence_``. Train and validation are built as from the folder (their
  ``_silence_`` rows are the long background-noise recordings: the noise bank); the hub's test split is
  Google's separate test archive ``speech_commands_test_set_v0.02`` (4,890 clips with its own 1 s
  ``_silence_`` and ``_unknown_`` clips), kept whole (no draws), so its numbers are not those of the
  folder's ``testing_list.txt``. Audio is decoded from the rows' bytes with ``soundfile`` (no
  ``torchcodec``). Online, or offline from a datasets cache that holds it; the decoded clips are cached as
  for a folder, so a second run reads neither.

Every clip is read with ``soundfile``, mixed to mono, resampled to ``sample_rate`` and cut to
``clip_seconds`` (the loudest window of a longer clip, centred zero-padding of a shorter one: the same rule
:mod:`tasks.audio.predict` applies). Decoded data is cached as one ``.pt`` file under ``cache_dir``, keyed by
the source (a folder's files' count / size / modification times; a hub set's name, config and revision) and
the settings, and written atomically (a temporary file, then ``os.replace``). Batches leave the loader as
``(waves int16 (B, samples), labels int64 (B,))``; features and augmentation are computed on the device
(:meth:`tasks.audio.task.AudioTask.on_device_batch`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.distributed import ShardedLoaders
from tasks.common.hub import HUB_NAME, error_summary, hub_failure

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
FSDD_RATE, SPEECH_COMMANDS_RATE = 8000, 16000
FSDD_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")
SOURCES = ("espeak", "fsdd", "speech_commands")

ESPEAK_DEFAULTS: dict[str, Any] = {
    "words": list(KEYWORDS),  # texts to synthesise (the class names)
    "clips_per_variant": 4,  # clips of each word per voice variant, each in a random accent
    "accents": None,  # eSpeak NG English accents to draw from (None: all of espeak.ACCENTS)
    "rate": [120, 260],  # speaking rate range, words per minute
    "pitch": [15, 85],  # base pitch range (0-100)
    "pitch_range": [10, 90],  # intonation range (0-100)
    "val_fraction": 0.1,  # share of the voice variants held out for validation
    "test_fraction": 0.2,  # share of the voice variants held out for test
}
FSDD_DEFAULTS: dict[str, Any] = {
    "protocol": "official",  # official (index 0-4 test) or speaker (whole speakers test)
    "test_speakers": ["theo"],  # protocol=speaker: the held-out speakers
}
SPEECH_COMMANDS_DEFAULTS: dict[str, Any] = {
    "words": list(KEYWORDS),  # the keywords (folder names); other words become _unknown_
    "unknown_percentage": 10.0,  # _unknown_ clips per split, as a percentage of its keyword clips
    "silence_percentage": 10.0,  # _silence_ clips per split, as a percentage of its keyword clips
    "hub": None,  # a Hugging Face hub dataset instead of root, e.g. google/speech_commands
    "hub_config": "v0.02",  # its config (null: the default one)
    "hub_revision": None,  # its revision (null: main, or the parquet export when main is a loading script)
}
#: the settings that choose a hub dataset (not part of a folder's cache key)
HUB_SETTINGS = ("hub", "hub_config", "hub_revision")
SPEECH_COMMANDS_HUB = "google/speech_commands"  # the hub dataset the hub loader is written for (config v0.02)
PARQUET_EXPORT = "refs/convert/parquet"  # the hub's automatic parquet conversion of a repository
HUB_KEY = "task.data.speech_commands.hub"
#: the local alternative that a failed hub load names
HUB_LOCAL = (
    "experiment=audio_speech_commands paths.data_dir=/path/to/data (reads speech_commands/ there: "
    "<word>/*.wav, validation_list.txt, testing_list.txt), or task.data.root=/path/to/speech_commands"
)
HUB_SPLITS = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


@dataclass
class Clips:
    """One split: ``waves`` int16 (N, samples), ``labels`` int64 (N,), ``groups`` (N,): the voice or
    speaker of each clip."""

    waves: torch.Tensor
    labels: torch.Tensor
    groups: list[str]

    def __len__(self) -> int:
        return self.labels.shape[0]


class TensorClips(Dataset):
    """In-memory clips; ``__getitems__`` fetches a whole batch with one index op (no per-item collate)."""

    def __init__(self, clips: Clips) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clips.waves[i], self.clips.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.clips.waves[idx], self.clips.labels[idx]


# --------------------------------------------------------------------------------------------- clip helpers
def read_wav(path: Path, expected_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file with ``soundfile``: (float32 mono samples (n,) in [-1, 1], sample rate in Hz).

    Raises ``ValueError`` naming the file for an unreadable or empty file, or a rate other than
    ``expected_rate`` (the dataset's own rate).
    """
    return read_audio(path, str(path), expected_rate)


def read_audio(
    source: Path | io.BytesIO, name: str, expected_rate: int | None = None, fix: str = "replace or delete it"
) -> tuple[np.ndarray, int]:
    """:func:`read_wav` of a file or of in-memory file bytes; errors name ``name`` and end with ``fix``."""
    import soundfile as sf

    try:
        data, rate = sf.read(
            str(source) if isinstance(source, Path) else source, dtype="float32", always_2d=True
        )
    except Exception as err:  # soundfile.LibsndfileError, RuntimeError for odd headers
        why = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(f"{name}: not a readable audio file ({why}); {fix}") from None
    if data.shape[0] == 0:
        raise ValueError(f"{name}: the file holds no samples; {fix}")
    if expected_rate is not None and rate != expected_rate:
        raise ValueError(
            f"{name}: sample rate {rate} Hz, but this dataset is {expected_rate} Hz; resample the file to "
            f"{expected_rate} Hz (e.g. sox in.wav -r {expected_rate} out.wav) or delete it"
        )
    return data.mean(axis=1), int(rate)


def fit_clip(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Cut a float clip (n,) to ``length`` samples: the window of a longer clip with the most energy (the
    middle one of equal windows), or the clip zero-padded equally on both sides."""
    n = wave.shape[0]
    if n > length:
        energy = torch.cat([torch.zeros(1, dtype=torch.float64), wave.double().square().cumsum(0)])
        window = energy[length:] - energy[:-length]  # energy of the window starting at each sample
        best = torch.nonzero(window >= window.max() * (1 - 1e-9)).flatten()
        start = int(best[len(best) // 2])  # the middle of tied windows: a short word lands in the centre
        return wave[start : start + length]
    left = (length - n) // 2
    return torch.nn.functional.pad(wave, (left, length - n - left))


def to_int16(waves: torch.Tensor) -> torch.Tensor:
    """Float samples in [-1, 1] -> int16 (clipped)."""
    return (waves * 32767.0).round_().clamp_(-32768, 32767).to(torch.int16)


def resample(wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample float samples (..., n) from ``orig`` to ``new`` Hz (torchaudio's windowed sinc)."""
    if orig == new:
        return wave
    import torchaudio.functional as AF

    return AF.resample(wave, orig, new)


def load_clip(path: Path, sample_rate: int, length: int, expected_rate: int | None) -> torch.Tensor:
    """One WAV file as float (length,) at ``sample_rate`` (see :func:`fit_clip`)."""
    wave, rate = read_wav(path, expected_rate)
    return fit_clip(resample(torch.from_numpy(wave), rate, sample_rate), length)


def _read_many(paths: list[Path], sample_rate: int, length: int, expected_rate: int | None) -> torch.Tensor:
    """Read ``paths`` (threads: soundfile releases the GIL) -> int16 (N, length)."""
    if not paths:
        return torch.zeros(0, length, dtype=torch.int16)
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        waves = list(pool.map(lambda p: load_clip(p, sample_rate, length, expected_rate), paths))
    return to_int16(torch.stack(waves))


def _stamp(paths: list[Path]) -> str:
    """Count, total size and latest modification time of ``paths`` (a cache key that notices edits)."""
    stats = [p.stat() for p in paths]
    return f"{len(stats)}|{sum(s.st_size for s in stats)}|{max((s.st_mtime_ns for s in stats), default=0)}"


def _section(name: str, given: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``given`` (unknown keys, or words that are not strings, raise)."""
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise ValueError(f"unknown task.data.{name} keys {unknown}; known: {sorted(defaults)}")
    cfg = {**defaults, **(given or {})}
    bad = [w for w in cfg.get("words", []) if not isinstance(w, str) or not w]
    if bad:
        raise ValueError(
            f"task.data.{name}.words holds {bad}, not words; quote them in YAML (yes, no, on, off are "
            'booleans there): words: ["yes", "no", ...]'
        )
    return cfg


# --------------------------------------------------------------------------------------------- sources
def espeak_keywords(sample_rate: int, length: int, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Synthesise the keywords over eSpeak NG's voice variants, split by variant (module docstring)."""
    from tasks.audio import espeak

    cfg = _section("espeak", settings, ESPEAK_DEFAULTS)
    accents = list(cfg["accents"] or espeak.ACCENTS)
    unknown = sorted(set(accents) - set(espeak.ACCENTS))
    if unknown:
        raise ValueError(f"task.data.espeak.accents: unknown {unknown}; pick from {list(espeak.ACCENTS)}")
    words, variants = list(cfg["words"]), espeak.variants()
    if not words or int(cfg["clips_per_variant"]) < 1:
        raise ValueError("task.data.espeak needs words and clips_per_variant >= 1")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(variants), generator=gen).tolist()
    n_test = max(1, round(cfg["test_fraction"] * len(variants)))
    n_val = max(1, round(cfg["val_fraction"] * len(variants)))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[variants[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    jobs, labels, groups = [], [], []
    for variant in variants:
        for label, word in enumerate(words):
            for _ in range(int(cfg["clips_per_variant"])):
                accent = accents[int(torch.randint(len(accents), (1,), generator=gen))]
                rate, pitch, prange = (
                    int(torch.randint(lo, hi + 1, (1,), generator=gen))
                    for lo, hi in (cfg["rate"], cfg["pitch"], cfg["pitch_range"])
                )
                jobs.append((word, f"{accent}+{variant}", rate, pitch, prange))
                labels.append(label)
                groups.append(variant)
    raw = espeak.synthesize(jobs, seed=seed)
    waves = torch.stack([_trim_fit(clip, espeak.sample_rate(), sample_rate, length) for clip in raw])
    waves, labels_t = to_int16(waves), torch.tensor(labels)
    splits = {}
    for split in ("train", "val", "test"):
        idx = [i for i, g in enumerate(groups) if split_of[g] == split]
        splits[split] = Clips(waves[idx], labels_t[idx], [groups[i] for i in idx])
    return {"splits": splits, "classes": words, "noise": None}


def _trim_fit(clip: np.ndarray, rate: int, sample_rate: int, length: int) -> torch.Tensor:
    """int16 synthesis output -> float (length,) at ``sample_rate``, leading / trailing silence removed."""
    wave = torch.from_numpy(clip.astype(np.float32) / 32768.0)
    loud = torch.nonzero(wave.abs() > 0.02 * wave.abs().max().clamp_min(1e-6)).flatten()
    if len(loud):
        wave = wave[int(loud[0]) : int(loud[-1]) + 1]
    return fit_clip(resample(wave, rate, sample_rate), length)


def fsdd(root: Path, sample_rate: int, length: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The Free Spoken Digit Dataset folder, split by ``settings['protocol']`` (module docstring)."""
    cfg = _section("fsdd", settings, FSDD_DEFAULTS)
    if cfg["protocol"] not in ("official", "speaker"):
        raise ValueError(f"task.data.fsdd.protocol={cfg['protocol']!r}; pick official or speaker")
    files = sorted(root.glob("*.wav"))
    if not files:
        raise FileNotFoundError(
            f"task.data.root={root} holds no .wav files; point it at the FSDD recordings folder "
            "({digit}_{speaker}_{index}.wav, e.g. paths.data_dir=/path/to/data with .../fsdd/recordings)"
        )
    parsed = []
    for path in files:
        match = FSDD_NAME.match(path.name)
        if match is None:
            raise ValueError(
                f"{path}: the name is not {{digit}}_{{speaker}}_{{index}}.wav; rename or remove the file"
            )
        parsed.append((int(match[1]), match[2], int(match[3])))
    speakers = sorted({s for _, s, _ in parsed})
    test_speakers = list(cfg["test_speakers"])
    if cfg["protocol"] == "speaker":
        missing = sorted(set(test_speakers) - set(speakers))
        if missing or len(set(test_speakers)) >= len(speakers):
            raise ValueError(
                f"task.data.fsdd.test_speakers={test_speakers}: pick some but not all of {speakers}"
            )

    def split_of(speaker: str, index: int) -> str:
        if cfg["protocol"] == "official":
            return "test" if index < 5 else "val" if index < 10 else "train"
        return "test" if speaker in test_speakers else "val" if index < 5 else "train"

    waves = _read_many(files, sample_rate, length, FSDD_RATE)
    labels = torch.tensor([d for d, _, _ in parsed])
    splits = {}
    for split in ("train", "val", "test"):
        idx = [i for i, (_, s, k) in enumerate(parsed) if split_of(s, k) == split]
        splits[split] = Clips(waves[idx], labels[idx], [parsed[i][1] for i in idx])
    return {"splits": splits, "classes": [str(d) for d in range(10)], "noise": None}


def _read_list(path: Path, root: Path) -> set[str]:
    """Relative clip paths listed in ``validation_list.txt`` / ``testing_list.txt`` (each must exist)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; task.data.root must be a Speech Commands folder with validation_list.txt "
            "and testing_list.txt beside the word folders"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: line {line} is not UTF-8 text ({err.reason}); the lists "
            "hold <word>/<file>.wav paths: save the file as UTF-8"
        ) from None
    out = set()
    for n, line in enumerate(text.splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        if not (root / rel).is_file():
            raise FileNotFoundError(
                f"{path}: line {n}: {rel} does not exist under {root}; fix or drop the line"
            )
        out.add(rel)
    return out


def speech_commands(
    root: Path, sample_rate: int, length: int, seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """Speech Commands v2 from its folder layout, as the 12-label task (module docstring)."""
    cfg = _section("speech_commands", settings, SPEECH_COMMANDS_DEFAULTS)
    words = list(cfg["words"])
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if not folders:
        raise FileNotFoundError(
            f"task.data.root={root} has no word folders (<word>/<file>.wav); point it at the unpacked "
            "Speech Commands folder"
        )
    missing = [w for w in words if w not in folders]
    if missing:
        raise ValueError(
            f"task.data.speech_commands.words: no folder {missing} under {root} (found {folders[:12]}...); "
            "fix the word list or the root"
        )
    val_list = _read_list(root / "validation_list.txt", root)
    test_list = _read_list(root / "testing_list.txt", root)
    gen = torch.Generator().manual_seed(seed)
    by_split: dict[str, dict[str, list[str]]] = {
        s: {"known": [], "unknown": []} for s in ("train", "val", "test")
    }
    for folder in folders:
        for path in sorted((root / folder).glob("*.wav")):
            rel = f"{folder}/{path.name}"
            split = "test" if rel in test_list else "val" if rel in val_list else "train"
            by_split[split]["known" if folder in words else "unknown"].append(rel)
    if not any(by_split[s]["known"] for s in by_split):
        raise FileNotFoundError(f"task.data.root={root}: the keyword folders hold no .wav files")
    noise_files = sorted((root / "_background_noise_").glob("*.wav"))
    if cfg["silence_percentage"] > 0 and not noise_files:
        raise FileNotFoundError(
            f"{root / '_background_noise_'} has no .wav files for the _silence_ class; add them or set "
            "task.data.speech_commands.silence_percentage=0"
        )
    noise = [
        resample(torch.from_numpy(read_wav(p, SPEECH_COMMANDS_RATE)[0]), SPEECH_COMMANDS_RATE, sample_rate)
        for p in noise_files
    ]
    classes = [*words, UNKNOWN, SILENCE]
    splits = {}
    for split, parts in by_split.items():
        known = parts["known"]
        pick = _draw_unknown(len(parts["unknown"]), len(known), cfg["unknown_percentage"], gen)
        rels = known + [parts["unknown"][i] for i in pick]
        waves = _read_many([root / r for r in rels], sample_rate, length, SPEECH_COMMANDS_RATE)
        labels = [words.index(r.split("/")[0]) if r.split("/")[0] in words else len(words) for r in rels]
        groups = [r.split("/")[1].split("_nohash_")[0] for r in rels]
        n_silence = round(cfg["silence_percentage"] / 100 * len(known)) if noise else 0
        silence = _noise_windows(noise, n_silence, length, gen, random_volume=True)
        splits[split] = Clips(
            torch.cat([waves, to_int16(silence)]),
            torch.tensor(labels + [len(words) + 1] * n_silence, dtype=torch.long),
            groups + [SILENCE] * n_silence,
        )
    return {"splits": splits, "classes": classes, "noise": _noise_bank(noise, length)}


def _draw_unknown(available: int, known: int, percentage: float, gen: torch.Generator) -> list[int]:
    """Indices (sorted) of the ``_unknown_`` clips drawn from ``available``: ``percentage`` % of ``known``."""
    count = min(available, round(percentage / 100 * known))
    return torch.randperm(available, generator=gen)[:count].sort().values.tolist()


def _noise_bank(noise: list[torch.Tensor], length: int) -> torch.Tensor | None:
    """The background-noise recordings cut into int16 windows (M, length) for augmentation (None: none)."""
    if not noise:
        return None
    return to_int16(torch.cat([w[: len(w) // length * length].view(-1, length) for w in noise]))


def _noise_windows(
    noise: list[torch.Tensor], count: int, length: int, gen: torch.Generator, random_volume: bool
) -> torch.Tensor:
    """``count`` random windows (count, length) of the noise recordings, scaled by a volume in [0, 1]."""
    out = torch.zeros(count, length)
    usable = [w for w in noise if len(w) >= length]
    for i in range(count if usable else 0):
        w = usable[int(torch.randint(len(usable), (1,), generator=gen))]
        start = int(torch.randint(len(w) - length + 1, (1,), generator=gen))
        volume = float(torch.rand(1, generator=gen)) if random_volume else 1.0
        out[i] = w[start : start + length] * volume
    return out


# --------------------------------------------------------------------------------------------- the hub
def _load_hub(name: str, config: str | None, revision: str | None) -> Any:
    """``datasets.load_dataset(name, config, revision=revision)``. A main revision that is a loading script
    (``google/speech_commands``; ``datasets`` >= 4 runs none) is read from the hub's parquet export of the
    config instead. Failures are one line (:func:`tasks.common.hub.hub_failure`)."""
    try:
        import datasets

        return datasets.load_dataset(name, config, revision=revision)
    except Exception as err:  # offline, unreachable, an unknown name or config: one line saying what to do
        if (
            revision is not None
            or config is None
            or "Dataset scripts are no longer supported" not in str(err)
        ):
            raise ValueError(hub_failure(HUB_KEY, name, err, HUB_LOCAL)) from err
        script = err
    try:
        return datasets.load_dataset(name, data_dir=config, revision=PARQUET_EXPORT)
    except Exception as err:
        raise ValueError(
            f"{HUB_KEY}={name} could not be loaded: its main revision is a loading script "
            f"({error_summary(script)}), and its parquet export (revision {PARQUET_EXPORT}, folder {config}) "
            f"failed too ({error_summary(err)}); set task.data.speech_commands.hub_revision to a revision "
            f"that holds data files, or use a local copy: {HUB_LOCAL}"
        ) from err


def _hub_columns(features: Any, where: str) -> tuple[str, str, bool]:
    """(audio column, label column, whether the audio is raw arrays) of a hub split's ``features``: an
    ``Audio`` column (or ``{"array", "sampling_rate"}``) and a ``ClassLabel`` (``label`` if there is one)."""
    audio = next((c for c, f in features.items() if type(f).__name__ == "Audio"), None)
    raw = False
    if audio is None:
        audio = next(
            (c for c, f in features.items() if isinstance(f, dict) and {"array", "sampling_rate"} <= set(f)),
            None,
        )
        raw = audio is not None
    labels = [c for c, f in features.items() if type(f).__name__ == "ClassLabel"]
    label = "label" if "label" in labels else (labels[0] if labels else None)
    if audio is None or label is None:
        raise ValueError(
            f"{where} has no audio + ClassLabel columns ({', '.join(features)}); expected those of "
            f"{SPEECH_COMMANDS_HUB} (file, audio, label, is_unknown, speaker_id)"
        )
    return audio, label, raw


def _hub_wave(item: dict[str, Any], raw: bool, name: str) -> tuple[np.ndarray, int]:
    """One row's audio -> (float32 mono samples, rate): encoded file bytes (or a local path) read with
    ``soundfile``, or a raw ``array`` with its ``sampling_rate``."""
    fix = "the hub copy is damaged: delete it from the datasets cache and load it again, or use a local copy"
    if raw:
        wave = np.asarray(item["array"], dtype=np.float32)
        wave = wave.mean(axis=0) if wave.ndim == 2 else wave  # (channels, n), as datasets decodes it
        if wave.size == 0:
            raise ValueError(f"{name}: the clip holds no samples; {fix}")
        return wave, int(item["sampling_rate"])
    if item.get("bytes"):
        return read_audio(io.BytesIO(item["bytes"]), name, None, fix)
    if item.get("path") and Path(item["path"]).is_file():
        return read_audio(Path(item["path"]), name, None, fix)
    raise ValueError(f"{name}: the row holds no audio bytes (path {item.get('path')!r}); {fix}")


def _hub_waves(
    split: Any, rows: list[int], column: str, raw: bool, names: list[str]
) -> Iterator[list[tuple[np.ndarray, int]]]:
    """The audio of ``rows`` of ``split``, 1,024 rows at a time, as (float32 samples, rate) pairs decoded in
    threads (soundfile releases the GIL); ``names`` (one per row) go into error messages. The rows are read
    as Arrow (the stored file bytes: ``datasets``' own decoding, which needs ``torchcodec``, is bypassed)."""
    if not rows:
        return
    part = split.select(rows).select_columns([column]).with_format("arrow")
    done = 0
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for table in part.iter(batch_size=1024):
            items = table.column(column).to_pylist()
            jobs = zip(items, names[done : done + len(items)], strict=True)
            done += len(items)
            yield list(pool.map(lambda job: _hub_wave(job[0], raw, job[1]), jobs))


def _hub_clips(
    split: Any, rows: list[int], column: str, raw: bool, names: list[str], sample_rate: int, length: int
) -> torch.Tensor:
    """The audio of ``rows`` as int16 (N, length) at ``sample_rate`` (:func:`fit_clip`), batch by batch."""
    out = [torch.zeros(0, length, dtype=torch.int16)]
    for batch in _hub_waves(split, rows, column, raw, names):
        fitted = [fit_clip(resample(torch.from_numpy(w), rate, sample_rate), length) for w, rate in batch]
        out.append(to_int16(torch.stack(fitted)))
    return torch.cat(out)


def speech_commands_hub(
    name: str, sample_rate: int, length: int, seed: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """Speech Commands from hub dataset ``name`` (``google/speech_commands``, config ``v0.02``) as the
    12-label task of the folder loader (module docstring): the same classes, draws, noise bank and clips."""
    cfg = _section("speech_commands", settings, SPEECH_COMMANDS_DEFAULTS)
    config = cfg["hub_config"]
    ds = _load_hub(name, config, cfg["hub_revision"])
    where = f"hub dataset {name}" + (f" ({config})" if config else "")
    found = {HUB_SPLITS[s]: s for s in reversed(list(ds)) if s in HUB_SPLITS}  # the first of val / validation
    missing = [s for s in ("train", "val", "test") if s not in found]
    if missing:
        raise ValueError(
            f"{where} has no {' / '.join(missing)} split (found {sorted(ds)}); it needs train, validation "
            f"and test splits, as {SPEECH_COMMANDS_HUB} (config v0.02) has"
        )
    features = ds[found["train"]].features
    audio, label, raw = _hub_columns(features, where)
    names, words = list(features[label].names), list(cfg["words"])
    absent = [w for w in words if w not in names]
    if absent:
        raise ValueError(
            f"task.data.speech_commands.words: no class {absent} in {where} (its labels: {names[:12]}...); "
            "fix the word list"
        )
    recordings: list[tuple[str, torch.Tensor]] = []  # (file, samples) of the background-noise rows
    parts: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        part = ds[found[split]]
        if part.features.get(label) != features[label]:
            raise ValueError(
                f"{where}: the {found[split]} split's {label} classes differ from the train split's"
            )
        labels, cols, n = list(part[label]), part.column_names, len(part)
        files = [f or "" for f in part["file"]] if "file" in cols else [f"row {i}" for i in range(n)]
        speakers = list(part["speaker_id"]) if "speaker_id" in cols else [None] * n
        bad = next((i for i, y in enumerate(labels) if y is None or y < 0), None)
        if bad is not None:
            raise ValueError(f"{where} ({found[split]}) {files[bad]} has no label; fix or drop the row")
        kinds: dict[str, list[int]] = {"known": [], "unknown": [], "silence": []}
        for i in sorted(range(n), key=lambda i: files[i]):  # the folder loader's order
            word = names[labels[i]]
            kinds["known" if word in words else "silence" if word == SILENCE else "unknown"].append(i)
        # _silence_ rows: the long background-noise recordings (train, validation: the noise bank), or the
        # test archive's ready 1 s silence clips
        tags = [f"{where} ({found[split]}) {files[i]}" for i in kinds["silence"]]
        ready = []
        decoded = (w for batch in _hub_waves(part, kinds["silence"], audio, raw, tags) for w in batch)
        for i, (wave, rate) in zip(kinds["silence"], decoded, strict=True):
            if len(wave) > 2 * rate:
                recordings.append((files[i], resample(torch.from_numpy(wave), rate, sample_rate)))
            else:
                ready.append(fit_clip(resample(torch.from_numpy(wave), rate, sample_rate), length))
        groups = [s or Path(f).name.split("_nohash_")[0] for s, f in zip(speakers, files, strict=True)]
        parts[split] = {"kinds": kinds, "labels": labels, "files": files, "groups": groups, "ready": ready}
    noise = [w for _, w in sorted(recordings, key=lambda r: r[0])]  # by file name, as in the folder
    drawn = [s for s, p in parts.items() if not p["ready"] and cfg["silence_percentage"] > 0]
    if drawn and not noise:
        raise ValueError(
            f"{where} has no background-noise recordings (_silence_ rows longer than 2 s) for the _silence_ "
            f"clips of {' / '.join(drawn)}; set task.data.speech_commands.silence_percentage=0"
        )
    gen = torch.Generator().manual_seed(seed)
    splits = {}
    for split, p in parts.items():
        known, unknown = p["kinds"]["known"], p["kinds"]["unknown"]
        if p["ready"]:  # the test archive: its _unknown_ and _silence_ clips are drawn already, all are kept
            pick, silence = unknown, to_int16(torch.stack(p["ready"]))
        else:
            pick = [
                unknown[i] for i in _draw_unknown(len(unknown), len(known), cfg["unknown_percentage"], gen)
            ]
            n_silence = round(cfg["silence_percentage"] / 100 * len(known)) if noise else 0
            silence = to_int16(_noise_windows(noise, n_silence, length, gen, random_volume=True))
        chosen = known + pick
        tags = [f"{where} ({found[split]}) {p['files'][i]}" for i in chosen]
        waves = _hub_clips(ds[found[split]], chosen, audio, raw, tags, sample_rate, length)
        targets = [words.index(names[p["labels"][i]]) for i in known] + [len(words)] * len(pick)
        splits[split] = Clips(
            torch.cat([waves, silence]),
            torch.tensor(targets + [len(words) + 1] * len(silence), dtype=torch.long),
            [p["groups"][i] for i in chosen] + [SILENCE] * len(silence),
        )
    return {"splits": splits, "classes": [*words, UNKNOWN, SILENCE], "noise": _noise_bank(noise, length)}


def load_source(
    source: str,
    root: str | None,
    sample_rate: int,
    length: int,
    seed: int,
    settings: dict[str, Any],
    cache_dir: str | None,
) -> dict[str, Any]:
    """Decode (or synthesise) a source once, through the on-disk tensor cache.

    Returns ``{"splits": {"train" | "val" | "test": Clips}, "classes": [...], "noise": int16 (M, length) or
    None}`` (``noise``: background-noise windows for augmentation).
    """
    core = {k: v for k, v in settings.items() if k not in HUB_SETTINGS}  # a folder's key, as before the hub
    if source == "espeak":
        import espeakng_loader

        lib = Path(espeakng_loader.get_library_path())
        stamp = f"espeak|{lib.stat().st_size}|{sorted(settings.items())}"
        path = None
    elif source == "speech_commands" and root is None and settings.get("hub") is not None:
        hub = {k: settings.get(k, SPEECH_COMMANDS_DEFAULTS[k]) for k in HUB_SETTINGS}
        stamp = f"{source}|hub:{hub['hub']}|{hub['hub_config']}|{hub['hub_revision']}|{sorted(core.items())}"
        path = None
    else:
        if root is None:
            fix = (
                " or task.data.speech_commands.hub=google/speech_commands"
                if source == "speech_commands"
                else ""
            )
            raise ValueError(f"task.data.source={source} needs task.data.root=/path/to/the/folder{fix}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"task.data.root={root} is not a folder (resolved to {path.resolve()}); point it at the "
                f"{source} folder, e.g. task.data.root=/path/to/data/fsdd/recordings"
            )
        files = sorted(path.rglob("*.wav")) if source == "speech_commands" else sorted(path.glob("*.wav"))
        lists = [path / n for n in ("validation_list.txt", "testing_list.txt") if (path / n).is_file()]
        stamp = f"{source}|{path.resolve()}|{_stamp(files + lists)}|{sorted(core.items())}"
    stamp += f"|{sample_rate}|{length}|{seed}"
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha1(stamp.encode()).hexdigest()[:16]
        cache = Path(cache_dir).expanduser() / f"audio-{source}-{digest}.pt"
        if cache.is_file():
            return _from_plain(torch.load(cache, map_location="cpu", weights_only=True))
    if source == "espeak":
        data = espeak_keywords(sample_rate, length, seed, settings)
    elif source == "fsdd":
        data = fsdd(path, sample_rate, length, settings)
    elif path is None:
        data = speech_commands_hub(settings["hub"], sample_rate, length, seed, settings)
    else:
        data = speech_commands(path, sample_rate, length, seed, settings)
    if cache is not None:
        _atomic_save(_to_plain(data), cache)
    return data


def _to_plain(data: dict[str, Any]) -> dict[str, Any]:
    """Tensors, strings and lists only (loadable with ``weights_only=True``)."""
    splits = {
        k: {"waves": c.waves, "labels": c.labels, "groups": c.groups} for k, c in data["splits"].items()
    }
    return {"splits": splits, "classes": data["classes"], "noise": data["noise"]}


def _from_plain(plain: dict[str, Any]) -> dict[str, Any]:
    splits = {k: Clips(v["waves"], v["labels"], list(v["groups"])) for k, v in plain["splits"].items()}
    return {"splits": splits, "classes": list(plain["classes"]), "noise": plain["noise"]}


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in ``path``'s folder, then ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------- data module
class AudioDataModule(ShardedLoaders, L.LightningDataModule):
    """Train / val / test loaders of in-memory int16 clips.

    Args:
        source: ``espeak`` (embedded), ``fsdd`` or ``speech_commands`` (module docstring).
        root: the dataset folder (``fsdd``, ``speech_commands``; null with ``speech_commands.hub``).
        sample_rate: every clip is resampled to this rate (Hz).
        clip_seconds: clip length in seconds.
        batch_size: training batch size (per device under DDP).
        eval_batch_size: val / test batch size (default: 2 * batch_size).
        seed: seed of the synthesis settings, the voice split and the _unknown_ / _silence_ draws.
        num_workers: DataLoader workers (0 is right: batches are one tensor index away).
        pin_memory: pin host batches (faster host-to-GPU copies).
        cache_dir: where decoded datasets are cached (None: no cache).
        train_limit: keep only this many training clips (quick experiments; None: all).
        espeak, fsdd, speech_commands: per-source settings (``ESPEAK_DEFAULTS``, ``FSDD_DEFAULTS``,
            ``SPEECH_COMMANDS_DEFAULTS``).
    """

    def __init__(
        self,
        source: str = "espeak",
        root: str | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 1.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = True,
        cache_dir: str | None = "~/.cache/mha-suite",
        train_limit: int | None = None,
        espeak: dict[str, Any] | None = None,
        fsdd: dict[str, Any] | None = None,
        speech_commands: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"task.data.source={source!r}; pick one of {', '.join(SOURCES)}")
        if batch_size < 1:
            raise ValueError(f"task.data.batch_size must be >= 1, got {batch_size}")
        if sample_rate < 1000 or clip_seconds <= 0:
            raise ValueError(
                f"task.data.sample_rate={sample_rate} / clip_seconds={clip_seconds}: "
                "need >= 1000 Hz and > 0 s"
            )
        defaults = {
            "espeak": ESPEAK_DEFAULTS,
            "fsdd": FSDD_DEFAULTS,
            "speech_commands": SPEECH_COMMANDS_DEFAULTS,
        }
        given = {"espeak": espeak, "fsdd": fsdd, "speech_commands": speech_commands}
        self.settings = _section(source, given[source], defaults[source])
        hub = self.settings.get("hub")
        if hub is not None and (not isinstance(hub, str) or not re.fullmatch(HUB_NAME, hub)):
            raise ValueError(
                f"task.data.speech_commands.hub={hub!r} is not a hub dataset name (owner/name); use e.g. "
                f"{SPEECH_COMMANDS_HUB} (hub_config: v0.02), or null for task.data.root"
            )
        if hub is not None and root is not None:
            raise ValueError(
                f"task.data.root={root} and task.data.speech_commands.hub={hub} are both set: give one "
                "source, the other null (task.data.root=null to load from the hub)"
            )
        if source != "espeak" and root is not None and not Path(root).expanduser().is_dir():
            raise FileNotFoundError(
                f"task.data.root={root} is not a folder (resolved to {Path(root).expanduser().resolve()}); "
                f"point it at the {source} folder"
            )
        self.source, self.root = source, root
        self.sample_rate, self.clip_seconds = int(sample_rate), float(clip_seconds)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.seed, self.num_workers, self.pin_memory = seed, num_workers, pin_memory
        self.cache_dir, self.train_limit = cache_dir, train_limit
        self.splits: dict[str, Clips] | None = None
        self.classes: list[str] = []
        self.noise: torch.Tensor | None = None

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    def setup(self, stage: str | None = None) -> None:
        """Load (or synthesise) and split once (idempotent)."""
        if self.splits is not None:
            return
        data = load_source(
            self.source,
            self.root,
            self.sample_rate,
            self.clip_samples,
            self.seed,
            self.settings,
            self.cache_dir,
        )
        splits = data["splits"]
        for name in ("train", "val", "test"):
            if len(splits[name]) == 0:
                where = self.root or f"hub:{self.settings['hub']}"
                raise ValueError(f"the {name} split of {self.source} ({where}) is empty; check the settings")
        if self.train_limit is not None:
            tr = splits["train"]
            n = self.train_limit
            splits["train"] = Clips(tr.waves[:n], tr.labels[:n], tr.groups[:n])
        self.splits, self.classes, self.noise = splits, data["classes"], data["noise"]

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.classes)

    def dataset(self, split: str) -> TensorClips:
        """The clips of ``split`` as a dataset that stacks its own batches."""
        self.setup()
        return TensorClips(self.splits[split])
