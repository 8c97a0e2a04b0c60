"""Bad audio data for ``task=audio``: each case fails with one line naming the file (or
``task.data.root``) and what was expected, writes no clip cache, and changes nothing on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.audio.data import AudioDataModule
from tests.app.test_bad_inputs import expect_error
from tests.audio.conftest import write_fsdd, write_speech_commands


def _fsdd(d: Path) -> Path:
    return write_fsdd(d / "recordings", speakers=("ann", "bob"), digits=range(2), indices=range(12))


def text_as_wav(d: Path) -> tuple[str, Path]:
    root = _fsdd(d)
    (root / "1_bob_3.wav").write_text("a voice memo, in words")
    return "fsdd", root


def truncated_wav(d: Path) -> tuple[str, Path]:
    root = _fsdd(d)
    path = root / "0_ann_7.wav"
    path.write_bytes(path.read_bytes()[:30])
    return "fsdd", root


def header_only_wav(d: Path) -> tuple[str, Path]:
    root = _fsdd(d)
    sf.write(root / "0_bob_2.wav", np.zeros(0, dtype=np.float32), 8000)
    return "fsdd", root


def wrong_rate(d: Path) -> tuple[str, Path]:
    root = _fsdd(d)
    sf.write(root / "1_ann_4.wav", np.zeros(4000, dtype=np.float32), 16000)
    return "fsdd", root


def bad_name(d: Path) -> tuple[str, Path]:
    root = _fsdd(d)
    sf.write(root / "one_ann_4.wav", np.zeros(4000, dtype=np.float32), 8000)
    return "fsdd", root


def no_wavs(d: Path) -> tuple[str, Path]:
    (d / "recordings").mkdir()
    (d / "recordings" / "README.md").write_text("recordings go here")
    return "fsdd", d / "recordings"


def list_latin1(d: Path) -> tuple[str, Path]:
    root = write_speech_commands(d / "speech_commands")
    (root / "testing_list.txt").write_bytes("yes/s3_nohash_0.wav\nno/se\xf1or.wav\n".encode("latin-1"))
    return "speech_commands", root


def list_names_a_missing_clip(d: Path) -> tuple[str, Path]:
    root = write_speech_commands(d / "speech_commands")
    with open(root / "validation_list.txt", "a") as f:
        f.write("yes/ghost_nohash_0.wav\n")
    return "speech_commands", root


def noise_not_audio(d: Path) -> tuple[str, Path]:
    root = write_speech_commands(d / "speech_commands")
    (root / "_background_noise_" / "white.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    return "speech_commands", root


CASES = [
    pytest.param(
        text_as_wav,
        ValueError,
        ["1_bob_3.wav: not a readable audio file", "replace or delete it"],
        id="text-as-wav",
    ),
    pytest.param(truncated_wav, ValueError, ["0_ann_7.wav: not a readable audio file"], id="truncated-wav"),
    pytest.param(
        header_only_wav, ValueError, ["0_bob_2.wav: the file holds no samples"], id="header-only-wav"
    ),
    pytest.param(
        wrong_rate,
        ValueError,
        ["1_ann_4.wav: sample rate 16000 Hz, but this dataset is 8000 Hz"],
        id="wrong-sample-rate",
    ),
    pytest.param(
        bad_name,
        ValueError,
        ["one_ann_4.wav: the name is not {digit}_{speaker}_{index}.wav"],
        id="bad-file-name",
    ),
    pytest.param(
        no_wavs, FileNotFoundError, ["task.data.root=", "recordings holds no .wav files"], id="no-wav-files"
    ),
    pytest.param(list_latin1, ValueError, ["testing_list.txt: line 2 is not UTF-8 text"], id="latin1-list"),
    pytest.param(
        list_names_a_missing_clip,
        FileNotFoundError,
        ["validation_list.txt: line 9: yes/ghost_nohash_0.wav does not exist"],
        id="list-names-missing-clip",
    ),
    pytest.param(
        noise_not_audio,
        ValueError,
        ["_background_noise_/white.wav: not a readable audio file"],
        id="noise-not-audio",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CASES)
def test_bad_audio_data_is_named(tmp_path: Path, make, error, fragments):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    source, root = make(data)
    rate = 8000 if source == "fsdd" else 16000
    words = {"speech_commands": {"words": ["yes", "no"]}} if source == "speech_commands" else {}
    dm = AudioDataModule(
        source=source, root=str(root), sample_rate=rate, batch_size=4, cache_dir=str(cache), **words
    )
    expect_error(dm.setup, error, *fragments, watch=[data, cache])
    assert not cache.exists(), "a failed read wrote a cache"


def test_a_root_that_is_a_file_is_named(tmp_path: Path):
    (tmp_path / "fsdd.zip").write_bytes(b"PK")
    expect_error(
        lambda: AudioDataModule(source="fsdd", root=str(tmp_path / "fsdd.zip"), sample_rate=8000),
        FileNotFoundError,
        "task.data.root=",
        "fsdd.zip is not a folder",
        watch=[tmp_path],
    )
