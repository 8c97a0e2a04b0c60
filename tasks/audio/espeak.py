"""Speech synthesis with the eSpeak NG engine of the ``espeakng-loader`` wheel, driven through ctypes.

``libespeak-ng`` keeps state between utterances (its random generator, pitch flutter, echo buffers), so one
clip depends on the clips synthesised before it in the same process. To make a job list give the same
samples every time, :func:`synthesize` runs it in fresh processes (this file run as a script), in
chunks of a fixed size whatever the number of cores; each chunk seeds the engine's generator. This module
imports no torch (a worker starts in a fraction of a second) and imports ``espeakng_loader`` only inside
the worker.

A job is ``(text, voice, rate, pitch, pitch_range)``: ``voice`` is ``"<language>+<variant>"`` (e.g.
``"en-gb-scotland+m3"``), ``rate`` in words per minute (80-450), ``pitch`` and ``pitch_range`` 0-100.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: English accents of eSpeak NG (language names as its voice files spell them)
ACCENTS = (
    "en",
    "en-us",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-us-nyc",
)
#: clips per worker process (fixed, so a job list gives the same samples on any machine)
CHUNK = 512
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT
_POS_CHARACTER = 1
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER

Job = tuple[str, str, int, int, int]


def variants() -> list[str]:
    """Names of the voice variants in the wheel's ``espeak-ng-data/voices/!v`` (sorted; names with spaces,
    which ``SetVoiceByName`` cannot address, left out)."""
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file() and " " not in p.name)


def sample_rate() -> int:
    """eSpeak NG's output rate in Hz (22,050)."""
    return 22050


def _synthesize_here(jobs: list[Job], seed: int) -> list[np.ndarray]:
    """Synthesise ``jobs`` in this process: one int16 array (samples,) per job at :func:`sample_rate`."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate != sample_rate():
        raise RuntimeError(f"libespeak-ng initialised at {rate} Hz, expected {sample_rate()}")
    chunks: list[np.ndarray] = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    def collect(wav, num_samples, events):  # called with each synthesised block of int16 samples
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    lib.espeak_SetSynthCallback(collect)
    lib.espeak_ng_SetRandSeed(seed)
    out = []
    for text, voice, words_per_minute, pitch, pitch_range in jobs:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}; pick an accent of ACCENTS and a variant")
        for param, value in ((_RATE, words_per_minute), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(param, int(value), 0)
        chunks.clear()
        data = text.encode() + b"\0"
        lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, 0, None, None)
        out.append(np.concatenate(chunks) if chunks else np.zeros(0, np.int16))
    lib.espeak_Terminate()
    return out


def _run_chunk(jobs: list[Job], seed: int) -> list[np.ndarray]:
    """One chunk in a fresh process running this file (its own library state; the script imports neither
    ``tasks`` nor torch)."""
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        out = Path(tmp) / "clips.npz"
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(out), str(seed)],
            input=json.dumps(jobs),
            text=True,
            capture_output=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"eSpeak NG synthesis failed: {tail}")
        with np.load(out) as clips:
            return [clips[f"c{i}"] for i in range(len(jobs))]


def synthesize(jobs: list[Job], seed: int = 0, workers: int | None = None) -> list[np.ndarray]:
    """Synthesise ``jobs`` (see the module docstring) deterministically: int16 arrays at 22,050 Hz.

    Chunks of :data:`CHUNK` jobs run in fresh processes, ``workers`` at a time (default: every core); chunk
    ``i`` seeds the engine with ``seed + i``.
    """
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks) or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda ic: _run_chunk(ic[1], seed + ic[0]), enumerate(chunks))
        return [clip for chunk in results for clip in chunk]


def _main(argv: list[str]) -> None:
    """Worker: jobs as JSON on standard input -> ``argv[0]`` (.npz of arrays ``c0``, ``c1``, ...)."""
    path, seed = Path(argv[0]), int(argv[1])
    jobs = [tuple(job) for job in json.loads(sys.stdin.read())]
    clips = _synthesize_here(jobs, seed)
    np.savez(path, **{f"c{i}": clip for i, clip in enumerate(clips)})


if __name__ == "__main__":
    _main(sys.argv[1:])
