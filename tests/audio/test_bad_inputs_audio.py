"""Bad audio data for ``task=audio``: each case fails with one line naming the file (or
``task.data.root``, or the hub dataset and its row) and what was expected, writes no clip cache, and changes
nothing on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.audio.data import AudioDataModule
from tests.app.test_bad_inputs import expect_error
from tests.audio.conftest import (
    fake_load_dataset,
    hub_dataset,
    hub_from_folder,
    write_fsdd,
    write_speech_commands,
)


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


# ------------------------------------------------------------------------------------- a bad hub dataset
def _hub_rows(d: Path) -> dict[str, list[dict]]:
    return hub_from_folder(write_speech_commands(d / "speech_commands"))


def hub_damaged_row(d: Path):
    rows = _hub_rows(d)
    rows["validation"][5]["audio"]["bytes"] = b"RIFF....WAVEfmt garbage"  # no/s2_nohash_1.wav
    return hub_dataset(rows), {}


def hub_empty_clip(d: Path):
    rows = _hub_rows(d)
    rows["train"][-1]["audio"] = {"bytes": None, "path": "yes/s1_nohash_1.wav"}  # neither bytes nor a file
    return hub_dataset(rows), {}


def hub_no_test_split(d: Path):
    rows = _hub_rows(d)
    del rows["test"]
    return hub_dataset(rows), {}


def hub_word_not_a_class(d: Path):
    return hub_dataset(_hub_rows(d)), {"words": ["yes", "sheila", "alexa"]}


def hub_no_noise(d: Path):
    rows = _hub_rows(d)
    rows["train"] = [r for r in rows["train"] if not r["file"].startswith("_background_noise_")]
    return hub_dataset(rows), {}


def hub_no_label_column(d: Path):
    return hub_dataset(_hub_rows(d)).remove_columns("label"), {}


def hub_unlabelled_row(d: Path):
    rows = _hub_rows(d)
    rows["test"][2]["label"] = -1
    return hub_dataset(rows), {}


HUB_CASES = [
    pytest.param(
        hub_damaged_row,
        [
            "hub dataset google/speech_commands (v0.02) (validation) no/s2_nohash_1.wav: not a readable",
            "delete it from the datasets cache",
        ],
        id="hub-damaged-row",
    ),
    pytest.param(
        hub_empty_clip,
        ["(train) yes/s1_nohash_1.wav: the row holds no audio bytes"],
        id="hub-row-without-audio",
    ),
    pytest.param(
        hub_no_test_split,
        ["hub dataset google/speech_commands (v0.02) has no test split (found ['train', 'validation'])"],
        id="hub-no-test-split",
    ),
    pytest.param(
        hub_word_not_a_class,
        ["task.data.speech_commands.words: no class ['alexa'] in hub dataset google/speech_commands (v0.02)"],
        id="hub-word-not-a-class",
    ),
    pytest.param(
        hub_no_noise,
        ["has no background-noise recordings", "task.data.speech_commands.silence_percentage=0"],
        id="hub-no-noise",
    ),
    pytest.param(
        hub_no_label_column,
        ["has no audio + ClassLabel columns (file, audio, is_unknown, speaker_id, utterance_id)"],
        id="hub-no-label-column",
    ),
    pytest.param(
        hub_unlabelled_row,
        ["(test) dog/s3_nohash_0.wav has no label; fix or drop the row"],
        id="hub-unlabelled-row",
    ),
]


@pytest.mark.parametrize(("make", "fragments"), HUB_CASES)
def test_a_bad_hub_dataset_is_named(tmp_path: Path, monkeypatch, make, fragments):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    hub, words = make(data)
    fake_load_dataset(monkeypatch, hub)
    dm = AudioDataModule(
        source="speech_commands",
        sample_rate=16000,
        batch_size=4,
        cache_dir=str(cache),
        speech_commands={"words": words.get("words", ["yes", "no"]), "hub": "google/speech_commands"},
    )
    expect_error(dm.setup, ValueError, *fragments, watch=[data])
    assert not cache.exists(), "a failed read wrote a cache"
