"""Synthesis, loaders, splits, clip fitting, cache and bad input of the audio task (fast, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tasks.audio import espeak
from tasks.audio.data import (
    SILENCE,
    UNKNOWN,
    AudioDataModule,
    fit_clip,
    load_source,
    read_wav,
)
from tests.audio.conftest import snapshot, tone, write_fsdd

TINY_ESPEAK = {"words": ["yes", "no"], "clips_per_variant": 1}


def test_synthesis_is_deterministic_for_a_seed():
    jobs = [("yes", "en-us+m3", 175, 50, 50), ("stop", "en-gb-scotland+whisper", 140, 30, 60)] * 3
    a, b = espeak.synthesize(jobs, seed=1), espeak.synthesize(jobs, seed=1)
    assert [len(x) for x in a] == [len(x) for x in b]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.dtype == np.int16 and 0.2 * 22050 < len(x) < 1.5 * 22050 for x in a)  # one word, 22 kHz
    assert np.abs(a[0].astype(np.int32)).max() > 3000  # audible speech, not silence
    c = espeak.synthesize(jobs, seed=2)
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    with pytest.raises(RuntimeError, match="no voice 'xx-nowhere\\+m3'"):
        espeak.synthesize([("yes", "xx-nowhere+m3", 175, 50, 50)])


def test_embedded_keywords_count_rate_and_voice_disjoint_split(cache_dir):
    data = load_source("espeak", None, 8000, 8000, 0, TINY_ESPEAK, str(cache_dir))
    variants = espeak.variants()
    assert len(variants) == 103 and "m3" in variants and "Mr serious" not in variants
    splits = data["splits"]
    assert data["classes"] == ["yes", "no"]
    assert sum(len(s) for s in splits.values()) == 2 * len(variants)  # words x variants x clips_per_variant
    assert (len(splits["test"]), len(splits["val"])) == (2 * 21, 2 * 10)  # 20% / 10% of 103 variants
    for s in splits.values():
        assert s.waves.shape[1] == 8000 and s.waves.dtype == torch.int16  # 1 s at 8 kHz
        assert torch.bincount(s.labels).tolist() == [len(s) // 2] * 2  # every voice says every word
    train, val, test = (set(splits[k].groups) for k in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)  # no test voice heard in training
    again = load_source("espeak", None, 8000, 8000, 0, TINY_ESPEAK, str(cache_dir))  # from the cache
    assert torch.equal(again["splits"]["test"].waves, splits["test"].waves)
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_fit_clip_takes_the_loudest_window_or_pads_in_the_middle():
    wave = torch.zeros(10)
    wave[6:8] = 1.0
    assert fit_clip(wave, 4).tolist() == [0.0, 1.0, 1.0, 0.0]  # the first window with both loud samples
    assert fit_clip(torch.ones(3), 6).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_read_wav_mixes_to_mono(tmp_path):
    stereo = np.stack([np.full(80, 0.5), np.full(80, -0.25)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 8000)
    wave, rate = read_wav(tmp_path / "s.wav", 8000)
    assert rate == 8000 and wave.shape == (80,) and np.allclose(wave, 0.125, atol=1e-4)


def test_fsdd_official_and_speaker_protocols(fsdd_root, cache_dir):
    data = load_source("fsdd", str(fsdd_root), 8000, 4000, 0, {"protocol": "official"}, str(cache_dir))
    s = data["splits"]
    # 2 speakers x 3 digits: index 0-4 test, 5-9 val, 10-11 train
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (12, 30, 30)
    assert data["classes"] == [str(d) for d in range(10)]
    assert sorted(set(s["test"].labels.tolist())) == [0, 1, 2]
    assert s["train"].waves.shape == (12, 4000)
    spk = load_source(
        "fsdd",
        str(fsdd_root),
        8000,
        4000,
        0,
        {"protocol": "speaker", "test_speakers": ["bob"]},
        str(cache_dir),
    )["splits"]
    assert set(spk["test"].groups) == {"bob"} and len(spk["test"]) == 36
    assert set(spk["train"].groups) == set(spk["val"].groups) == {"ann"} and len(spk["val"]) == 15
    with pytest.raises(
        ValueError, match=r"test_speakers=\['carol'\]: pick some but not all of \['ann', 'bob'\]"
    ):
        load_source(
            "fsdd", str(fsdd_root), 8000, 4000, 0, {"protocol": "speaker", "test_speakers": ["carol"]}, None
        )


def test_fsdd_clip_values_survive_the_round_trip(fsdd_root):
    data = load_source("fsdd", str(fsdd_root), 8000, 4000, 0, {}, None)
    clip = data["splits"]["test"].waves[0].float() / 32767  # 0_ann_0.wav: 0.3 s, centred in 0.5 s
    expected = torch.from_numpy(tone(0, 8000, 0.3, seed=0))
    torch.testing.assert_close(clip[800:3200], expected, atol=1e-4, rtol=0)
    assert clip[:800].abs().max() == 0 and clip[3200:].abs().max() == 0


def test_speech_commands_twelve_labels(sc_root, cache_dir):
    settings = {"words": ["yes", "no"], "unknown_percentage": 50.0, "silence_percentage": 25.0}
    data = load_source("speech_commands", str(sc_root), 16000, 16000, 0, settings, str(cache_dir))
    assert data["classes"] == ["yes", "no", UNKNOWN, SILENCE]
    s = data["splits"]
    # train: speakers s0, s1 -> 8 keyword clips, 50% unknown = 4, 25% silence = 2
    assert torch.bincount(s["train"].labels, minlength=4).tolist() == [4, 4, 4, 2]
    assert torch.bincount(s["test"].labels, minlength=4).tolist() == [2, 2, 2, 1]
    assert set(s["test"].groups) == {"s3", SILENCE} and set(s["val"].groups) == {"s2", SILENCE}
    assert data["noise"].shape == (3, 16000)  # the 3 s noise file as three 1 s windows
    silence = s["train"].waves[s["train"].labels == 3].float()
    assert 0 < silence.abs().max() < 0.1 * 32767 * 5  # scaled noise, not zeros or speech


def test_datamodule_batches_are_int16_waves(fsdd_root, cache_dir):
    dm = AudioDataModule(source="fsdd", root=str(fsdd_root), sample_rate=8000, batch_size=4, cache_dir=None)
    waves, labels = next(iter(dm.train_dataloader()))
    assert waves.shape == (4, 8000) and waves.dtype == torch.int16 and labels.dtype == torch.int64


# ------------------------------------------------------------------------------------------------ bad input
def _bad_wav(kind: str, folder: Path) -> Path:
    path = folder / "1_ann_3.wav"
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    elif kind == "empty":
        sf.write(path, np.zeros(0, np.float32), 8000)
    elif kind == "not audio":
        path.write_text("this is a text file, not a recording\n")
    elif kind == "wrong rate":
        sf.write(path, tone(1, 16000, 0.3, seed=0), 16000)
    return path


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("corrupt", "not a readable audio file"),
        ("empty", "holds no samples"),
        ("not audio", "not a readable audio file"),
        ("wrong rate", "sample rate 16000 Hz, but this dataset is 8000 Hz; resample the file to 8000 Hz"),
    ],
)
def test_bad_wav_names_the_file_and_writes_no_cache(fsdd_root, cache_dir, kind, match):
    cache_dir.mkdir()
    (cache_dir / "keep.txt").write_text("unrelated")
    path = _bad_wav(kind, fsdd_root)
    before = snapshot(cache_dir)
    with pytest.raises(ValueError, match=match) as err:
        load_source("fsdd", str(fsdd_root), 8000, 8000, 0, {}, str(cache_dir))
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1
    assert snapshot(cache_dir) == before  # nothing half-written, nothing removed


def test_folder_without_clips_missing_path_and_bad_names(tmp_path, cache_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("no clips here")
    with pytest.raises(FileNotFoundError, match=r"task.data.root=.*empty holds no .wav files"):
        load_source("fsdd", str(tmp_path / "empty"), 8000, 8000, 0, {}, str(cache_dir))
    with pytest.raises(FileNotFoundError, match=r"task.data.root=.*nowhere is not a folder"):
        AudioDataModule(source="fsdd", root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs task.data.root"):
        load_source("fsdd", None, 8000, 8000, 0, {}, None)
    write_fsdd(tmp_path / "named", digits=[0], indices=[0])
    sf.write(tmp_path / "named" / "zero_ann_1.wav", tone(0, 8000, 0.3, seed=0), 8000)
    with pytest.raises(
        ValueError, match=r"zero_ann_1.wav: the name is not \{digit\}_\{speaker\}_\{index\}.wav"
    ):
        load_source("fsdd", str(tmp_path / "named"), 8000, 8000, 0, {}, None)
    assert not cache_dir.exists()


def test_speech_commands_unknown_word_folder_and_bad_list_line(sc_root, cache_dir):
    with pytest.raises(ValueError, match=r"speech_commands.words: no folder \['stop'\] under"):
        load_source(
            "speech_commands", str(sc_root), 16000, 16000, 0, {"words": ["yes", "stop"]}, str(cache_dir)
        )
    lines = (sc_root / "testing_list.txt").read_text()
    (sc_root / "testing_list.txt").write_text(lines + "yes/ghost_nohash_0.wav\n")
    with pytest.raises(
        FileNotFoundError, match=r"testing_list.txt: line 9: yes/ghost_nohash_0.wav does not exist"
    ):
        load_source("speech_commands", str(sc_root), 16000, 16000, 0, {"words": ["yes"]}, str(cache_dir))
    (sc_root / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt is missing"):
        load_source("speech_commands", str(sc_root), 16000, 16000, 0, {"words": ["yes"]}, None)
    assert not cache_dir.exists()


def test_unknown_settings_and_unquoted_yaml_words():
    with pytest.raises(ValueError, match=r"unknown task.data.fsdd keys \['protocoll'\]"):
        AudioDataModule(source="fsdd", root=".", fsdd={"protocoll": "speaker"})
    with pytest.raises(ValueError, match="task.data.source='librispeech'"):
        AudioDataModule(source="librispeech")
    with pytest.raises(ValueError, match=r"words holds \[True, False\], not words; quote them"):
        AudioDataModule(espeak={"words": [True, False, "up"]})


def test_task_model_keys_that_clash_with_the_data(fsdd_root):
    from tasks.audio.task import AudioTask

    data = {"source": "fsdd", "root": str(fsdd_root), "sample_rate": 8000, "cache_dir": None}
    task = AudioTask(data=data, model={"num_classes": 3})
    with pytest.raises(
        ValueError, match=r"task.model \{'num_classes': 3\} disagrees with the features / data"
    ):
        task.build_model(task.build_datamodule())
    with pytest.raises(ValueError, match=r"task.label_smoothing must be in \[0, 1\), got 1.5"):
        AudioTask(label_smoothing=1.5)
