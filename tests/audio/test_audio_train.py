"""End to end: train.py task=audio on tiny settings, the README's recipes on tiny fixtures, the predict
command on the trained checkpoint."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from tasks.audio.predict import Recognizer, main
from tests.audio.conftest import tone, write_fsdd, write_speech_commands
from tests.conftest import REPO, run_train

TINY_MODEL = [
    "task.model.embed_dim=16",
    "task.model.depth=1",
    "task.model.num_heads=2",
    "task.model.patch_time=4",
    "task.num_plot_clips=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]
#: the embedded default cut to two words, one clip per voice variant (206 clips), a few steps
TINY_AUDIO = [
    "task=audio",
    'task.data.espeak.words=["yes","no"]',
    "task.data.espeak.clips_per_variant=1",
    "task.data.sample_rate=8000",
    "task.data.batch_size=32",
    "trainer.max_steps=6",
    *TINY_MODEL,
]


def _results(run_dir: Path) -> dict[str, dict[str, str]]:
    with open(run_dir / "results.csv") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("audio")
    run_dir = tmp / "run"
    proc = run_train([*TINY_AUDIO, f"paths.cache_dir={tmp / 'cache'}", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_train_prints_the_model_beside_the_baselines(trained_run):
    rows = _results(trained_run)
    assert set(rows) == {"audio (ours)", "majority class", "logistic regression (MFCC stats)"}
    assert float(rows["majority class"]["acc"]) == pytest.approx(0.5)  # every test voice says both words
    for row in rows.values():
        assert 0.0 <= float(row["acc"]) <= 1.0  # fractions, not percent
    card = json.loads((trained_run / "audio.json").read_text())
    assert card["classes"] == ["yes", "no"] and card["clip_samples"] == 8000
    assert card["model"]["num_frames"] == 1 + 8000 // 128 and len(card["features"]["mean"]) == 40
    assert (trained_run / "plots" / "attention.png").stat().st_size > 10_000
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()


def test_predict_prints_top3_words(trained_run, tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1, 22050, 0.6, seed=0), 22050)  # another rate: resampled
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    assert main([f"ckpt={ckpt}", str(clip), str(clip), "top=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"{clip}: ")
    words = lines[0].split(": ", 1)[1].split()
    assert sorted(words[0::2]) == ["no", "yes"]  # two classes: top-3 shows both
    assert sum(float(p) for p in words[1::2]) == pytest.approx(1.0, abs=2e-3)
    probs = Recognizer(ckpt).probabilities([clip])
    assert probs.shape == (1, 2)


def test_predict_errors_name_the_file(trained_run, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    with pytest.raises(SystemExit, match=r"error: .*bad.wav: not a readable audio file"):
        main([f"ckpt={ckpt}", str(bad)])
    with pytest.raises(SystemExit, match=r"error: .*nowhere.wav: no such file"):
        main([f"ckpt={ckpt}", str(tmp_path / "nowhere.wav")])
    with pytest.raises(SystemExit, match="error: checkpoint .*missing.ckpt does not exist"):
        main([f"ckpt={tmp_path / 'missing.ckpt'}", str(bad)])
    with pytest.raises(SystemExit, match="give the checkpoint"):
        main([str(bad)])


def test_predict_runs_as_a_module(trained_run, tmp_path):
    clip = tmp_path / "c.wav"
    sf.write(clip, tone(0, 8000, 0.4, seed=1), 8000)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.audio.predict",
            f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}",
            str(clip),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"{clip}: ") and len(proc.stdout.split()) == 5


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["experiment=audio_fsdd"],
        ["experiment=audio_fsdd", "task.data.fsdd.protocol=speaker", "task.data.fsdd.test_speakers=[bob]"],
        ["experiment=audio_speech_commands"],
    ],
)
def test_readme_recipes_on_tiny_fixtures(tmp_path, args):
    """The README's experiment commands, on tiny folders of the same layouts, steps cut, on CPU."""
    data_dir = tmp_path / "data"
    write_fsdd(data_dir / "fsdd" / "recordings")
    write_speech_commands(data_dir / "speech_commands")
    overrides = [
        *args,
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_epochs=1",
        "trainer.max_steps=2",
        "trainer.max_time=null",
        "compile=false",
        "task.data.batch_size=4",
        "task.data.num_workers=0",
        *TINY_MODEL,
    ]
    if "experiment=audio_speech_commands" in args:
        overrides.append('task.data.speech_commands.words=["yes","no"]')
    proc = run_train(overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "audio (ours)" in _results(tmp_path / "run")
