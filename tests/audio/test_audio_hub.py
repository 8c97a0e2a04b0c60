"""Speech Commands from the Hugging Face hub (``task.data.speech_commands.hub``): ``datasets.load_dataset``
replaced by a tiny in-memory ``DatasetDict`` with google/speech_commands v0.02's features, so the mapping onto
the 12-label task, the splits, the cache and the failures run offline (fast, CPU); one test reads a local
parquet copy through the real ``load_dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.audio.data import SILENCE, UNKNOWN, AudioDataModule, load_source, resample
from tests.app.test_bad_inputs import expect_error
from tests.audio.conftest import (
    fake_load_dataset,
    hub_dataset,
    hub_from_folder,
    hub_row,
    tone,
    write_speech_commands,
)

HUB = "google/speech_commands"
SETTINGS = {"words": ["yes", "no"], "unknown_percentage": 50.0, "silence_percentage": 25.0, "hub": HUB}
SCRIPT_ERROR = RuntimeError("Dataset scripts are no longer supported, but found speech_commands.py")


def _module(cache: Path | None, sample_rate: int = 16000, **settings) -> AudioDataModule:
    return AudioDataModule(
        source="speech_commands",
        sample_rate=sample_rate,
        batch_size=4,
        cache_dir=str(cache) if cache else None,
        speech_commands={**SETTINGS, **settings},
    )


def _noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


def _splits() -> dict[str, list[dict]]:
    """Train and validation as the hub holds them (word folders, long background-noise rows labelled
    _silence_); test as Google's test archive: keywords, ``_unknown_/<word>_...`` and 1 s
    ``_silence_/<n>.wav`` clips, drawn already."""
    words = ["yes", "no", "cat", "dog", "backward"]
    train = [
        hub_row(f"{w}/s{s}_nohash_{k}.wav", tone(i, 16000, 1.0, seed=10 * s + k))
        for i, w in enumerate(words)
        for s in range(2)
        for k in range(2)
    ]
    train.append(hub_row("_background_noise_/white.wav", _noise(3.0, 0)))
    val = [
        hub_row(f"{w}/s2_nohash_{k}.wav", tone(i, 16000, 0.8, seed=k))
        for i, w in enumerate(words[:4])
        for k in range(2)
    ]
    val.append(hub_row("_background_noise_/running_tap.wav", _noise(2.5, 1)))
    test = [
        hub_row(f"{w}/s3_nohash_{k}.wav", tone(i, 16000, 1.0, seed=k))
        for i, w in enumerate(words[:2])
        for k in range(2)
    ]
    test += [
        hub_row(f"_unknown_/{w}_s3_nohash_0.wav", tone(5, 16000, 1.0, seed=7)) for w in ("cat", "visual")
    ]
    test += [hub_row(f"_silence_/{n}.wav", 0.1 * _noise(1.0, 2 + n)) for n in range(3)]
    return {"train": train, "validation": val, "test": test}


def test_hub_rows_give_the_folder_loaders_clips(tmp_path: Path, monkeypatch):
    """The same recordings as a folder and as hub rows (same split, same noise) give the same 12-label clips,
    labels, speakers and noise bank, bit for bit, at 16 and 8 kHz: one mapping, one draw, one resampling."""
    root = write_speech_commands(tmp_path / "speech_commands")
    calls = fake_load_dataset(monkeypatch, hub_dataset(hub_from_folder(root)))
    folder_settings = {k: v for k, v in SETTINGS.items() if k != "hub"}
    for rate in (16000, 8000):
        folder = load_source("speech_commands", str(root), rate, rate, 0, folder_settings, None)
        hub = load_source("speech_commands", None, rate, rate, 0, SETTINGS, None)
        assert hub["classes"] == folder["classes"] == ["yes", "no", UNKNOWN, SILENCE]
        for split in ("train", "val", "test"):
            a, b = hub["splits"][split], folder["splits"][split]
            assert torch.equal(a.waves, b.waves) and torch.equal(a.labels, b.labels), split
            assert a.groups == b.groups, split
        assert torch.equal(hub["noise"], folder["noise"])
    assert calls == [((HUB, "v0.02"), {"revision": None})] * 2


def test_hub_twelve_labels_test_archive_and_cache(cache_dir: Path, monkeypatch):
    """Train / validation: keywords, unknown words drawn (cat, dog, backward: all _unknown_), _silence_ from
    windows of the long noise rows of both splits (the noise bank); the test archive is kept whole. Clips are
    resampled to 8 kHz as a folder's are; the result is cached once and read back without the hub."""
    calls = fake_load_dataset(monkeypatch, hub_dataset(_splits()))
    cache_dir.mkdir()
    dm = _module(cache_dir, sample_rate=8000)
    dm.setup()
    assert calls == [((HUB, "v0.02"), {"revision": None})]
    assert dm.classes == ["yes", "no", UNKNOWN, SILENCE] and dm.num_classes == 4
    count = {s: torch.bincount(dm.splits[s].labels, minlength=4).tolist() for s in ("train", "val", "test")}
    # train: 8 keyword clips, 50% of 8 -> 4 of the 12 other-word clips, 25% -> 2 silence windows
    assert count == {"train": [4, 4, 4, 2], "val": [2, 2, 2, 1], "test": [2, 2, 2, 3]}
    assert dm.splits["train"].waves.shape == (14, 8000) and dm.splits["train"].waves.dtype == torch.int16
    assert dm.noise.shape == (5, 8000)  # 3 s (train) + 2.5 s (validation) of noise in whole 1 s windows
    assert set(dm.splits["train"].groups) == {"s0", "s1", SILENCE}
    assert set(dm.splits["test"].groups) == {"s3", SILENCE}
    yes = dm.splits["train"].waves[dm.splits["train"].labels == 0][0].float() / 32767  # yes/s0_nohash_0.wav
    expected = resample(torch.from_numpy(tone(0, 16000, 1.0, seed=0)), 16000, 8000)
    torch.testing.assert_close(yes, expected, atol=2e-4, rtol=0)
    silence = dm.splits["val"].waves[dm.splits["val"].labels == 3].float()
    assert 0 < silence.abs().max() < 0.7 * 32767  # a noise window at a random volume, not speech or zeros
    (cached,) = [p.name for p in cache_dir.iterdir()]  # one file, no temporary one left
    assert cached.startswith("audio-speech_commands-") and cached.endswith(".pt")

    fake_load_dataset(monkeypatch, RuntimeError("the hub was asked again"))
    again = _module(cache_dir, sample_rate=8000)
    again.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(again.splits[split].waves, dm.splits[split].waves)
        assert torch.equal(again.splits[split].labels, dm.splits[split].labels)
    with pytest.raises(ValueError, match="RuntimeError: the hub was asked again"):
        _module(cache_dir, sample_rate=8000, hub_config="v0.01").setup()  # another config: another entry


def test_hub_raw_array_column(tmp_path: Path, monkeypatch):
    """A copy whose audio column holds decoded arrays (``{"array", "sampling_rate"}``) maps the same way."""
    rows = hub_from_folder(write_speech_commands(tmp_path / "speech_commands"))
    out = []
    for raw in (False, True):
        fake_load_dataset(monkeypatch, hub_dataset(rows, raw=raw))
        out.append(load_source("speech_commands", None, 8000, 8000, 0, SETTINGS, None))
    for split in ("train", "val", "test"):
        a, b = out[0]["splits"][split], out[1]["splits"][split]
        assert torch.equal(a.labels, b.labels) and a.groups == b.groups
        torch.testing.assert_close(a.waves.float(), b.waves.float(), atol=1, rtol=0)


def test_a_loading_script_falls_back_to_the_parquet_export(monkeypatch):
    """google/speech_commands' main revision is a loading script (datasets >= 4 refuses it): its config is
    read from the hub's parquet export; a pinned revision gets no fallback; both failing is one line."""
    data = hub_dataset(_splits())

    def hub(name, config=None, **kwargs):
        if kwargs.get("revision") is None:
            raise SCRIPT_ERROR
        return data

    calls = fake_load_dataset(monkeypatch, hub)
    assert len(load_source("speech_commands", None, 8000, 8000, 0, SETTINGS, None)["splits"]["test"]) == 9
    assert calls == [
        ((HUB, "v0.02"), {"revision": None}),
        ((HUB,), {"data_dir": "v0.02", "revision": "refs/convert/parquet"}),
    ]

    calls = fake_load_dataset(monkeypatch, SCRIPT_ERROR)
    pinned = {**SETTINGS, "hub_revision": "main"}
    expect_error(
        lambda: load_source("speech_commands", None, 8000, 8000, 0, pinned, None),
        ValueError,
        f"task.data.speech_commands.hub={HUB} could not be loaded",
        "Dataset scripts are no longer supported",
    )
    assert calls == [((HUB, "v0.02"), {"revision": "main"})]

    fake_load_dataset(monkeypatch, SCRIPT_ERROR)
    expect_error(
        lambda: load_source("speech_commands", None, 8000, 8000, 0, SETTINGS, None),
        ValueError,
        f"task.data.speech_commands.hub={HUB} could not be loaded: its main revision is a loading script",
        "parquet export (revision refs/convert/parquet, folder v0.02) failed too",
        "set task.data.speech_commands.hub_revision",
        "task.data.root=/path/to/speech_commands",
    )


def test_an_unreachable_hub_dataset_is_one_line(tmp_path: Path, monkeypatch):
    """Offline (the real ``load_dataset``, ``HF_HUB_OFFLINE=1``), a hub dataset missing from the datasets
    cache fails in one line that names the hub id, what loading it needs and the local alternative; train.py
    shows it without a traceback; no clip cache is written."""
    from tasks.common import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    name = "mha-suite-tests/no-such-dataset"  # never in any cache
    cache = tmp_path / "cache"
    dm = _module(cache, hub=name)
    message = expect_error(
        dm.setup,
        ValueError,
        f"task.data.speech_commands.hub={name} could not be loaded (",
        "HF_HUB_OFFLINE and HF_DATASETS_OFFLINE set;",
        "needs network access",
        f"a datasets cache that already holds {name}",
        "drop task.data.speech_commands.hub",
        "experiment=audio_speech_commands paths.data_dir=/path/to/data",
        "task.data.root=/path/to/speech_commands",
        watch=[tmp_path],
    )
    assert not cache.exists() and len(message) < 700
    with pytest.raises(ValueError) as info:
        dm.setup()
    assert cli.is_user_error(info.value), "train.py would show a traceback"


def test_root_and_hub_together_or_a_bad_name(tmp_path: Path):
    root = write_speech_commands(tmp_path / "speech_commands")
    expect_error(
        lambda: AudioDataModule(source="speech_commands", root=str(root), speech_commands={"hub": HUB}),
        ValueError,
        f"task.data.root={root} and task.data.speech_commands.hub={HUB} are both set",
        "task.data.root=null",
    )
    expect_error(
        lambda: AudioDataModule(source="speech_commands", speech_commands={"hub": "not a name"}),
        ValueError,
        "task.data.speech_commands.hub='not a name' is not a hub dataset name",
        HUB,
    )
    expect_error(
        lambda: load_source("speech_commands", None, 8000, 8000, 0, {}, None),
        ValueError,
        "needs task.data.root=/path/to/the/folder or task.data.speech_commands.hub=google/speech_commands",
    )


def test_a_local_parquet_copy_through_the_real_loader(tmp_path: Path, monkeypatch):
    """The real ``datasets.load_dataset`` on a local folder laid out as a hub repository (a README declaring
    config v0.02, parquet files per split, as ``push_to_hub`` writes them): the Audio and ClassLabel features
    survive parquet and the rows map as in memory."""
    import datasets

    rows = _splits()
    repo = tmp_path / "local" / "speech_commands"
    (repo / "v0.02").mkdir(parents=True)
    for split, ds in hub_dataset(rows).items():
        ds.to_parquet(str(repo / "v0.02" / f"{split}-00000-of-00001.parquet"))
    files = "".join(f"  - split: {s}\n    path: v0.02/{s}-*.parquet\n" for s in rows)
    (repo / "README.md").write_text(f"---\nconfigs:\n- config_name: v0.02\n  data_files:\n{files}---\n")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.chdir(tmp_path)
    local = load_source(
        "speech_commands", None, 8000, 8000, 0, {**SETTINGS, "hub": "local/speech_commands"}, None
    )
    fake_load_dataset(monkeypatch, hub_dataset(rows))
    memory = load_source("speech_commands", None, 8000, 8000, 0, SETTINGS, None)
    for split in ("train", "val", "test"):
        a, b = local["splits"][split], memory["splits"][split]
        assert torch.equal(a.waves, b.waves) and torch.equal(a.labels, b.labels) and a.groups == b.groups


# --------------------------------------------------------------------------------------------- the pre-check
PRE_CHECK = [
    pytest.param(
        ["task.data.source=speech_commands", "task.data.root={d}/sc", f"task.data.speech_commands.hub={HUB}"],
        ["task.data.root='{d}/sc' and task.data.speech_commands.hub='google/speech_commands' are both set"],
        id="root-and-hub",
    ),
    pytest.param(
        ["task.data.source=speech_commands"],
        ["task.data.source='speech_commands' needs task.data.root=", "task.data.speech_commands.hub="],
        id="neither",
    ),
    pytest.param(
        ["task.data.source=speech_commands", "task.data.speech_commands.hub='a b'"],
        ["task.data.speech_commands.hub='a b' is not a hub dataset name (owner/name)"],
        id="bad-name",
    ),
    pytest.param(
        [
            "task.data.source=speech_commands",
            "task.data.root={d}/sc",
            "task.data.speech_commands.hub_config=v0.01",
        ],
        ["task.data.speech_commands.hub_config='v0.01' is not used", "task.data.speech_commands.hub is set"],
        id="config-without-hub",
    ),
    pytest.param(
        [f"task.data.speech_commands.hub={HUB}"],
        ["task.data.speech_commands.hub='google/speech_commands' is not used with task.data.source='espeak'"],
        id="hub-with-espeak",
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), PRE_CHECK)
def test_the_pre_check_names_bad_hub_settings(tmp_path: Path, overrides: list[str], fragments: list[str]):
    from tasks.common.schema import ConfigError, check_config
    from tests.app.test_bad_inputs import _compose

    (tmp_path / "sc").mkdir()
    cfg = _compose(["task=audio", *(o.format(d=tmp_path) for o in overrides)], tmp_path)
    expect_error(lambda: check_config(cfg), ConfigError, *(f.format(d=tmp_path) for f in fragments))


def test_the_documented_hub_commands_pass_the_pre_check(tmp_path: Path):
    """The hub command of the recipe's comments and of the task README composes and passes the pre-check."""
    from tasks.common.schema import check_config
    from tests.app.test_bad_inputs import _compose

    repo = Path(__file__).parents[2]
    for doc in ("conf/experiment/audio_speech_commands.yaml", "tasks/audio/README.md"):
        lines = (repo / doc).read_text().splitlines()
        (line,) = [x for x in lines if "python train.py" in x and "speech_commands.hub=" in x]
        args = line.split("train.py", 1)[1].split("  #")[0].split()
        assert args == [
            "experiment=audio_speech_commands",
            "task.data.root=null",
            f"task.data.speech_commands.hub={HUB}",
        ], doc
        check_config(_compose(args, tmp_path))
