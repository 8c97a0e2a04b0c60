"""``python train.py`` end to end on CPU: steps, resume, SIGTERM, ``-m`` sweeps, error paths (subprocess)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.audio.test_audio_train import TINY_AUDIO
from tests.conftest import REPO, TINY_TRANSLATION, TINY_VISION, run_train, train_command
from tests.recommendation.conftest import TINY_RECOMMENDATION
from tests.timeseries.conftest import TINY_TIMESERIES


def _global_step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def _best_state(ckpt: Path) -> dict:
    """The ModelCheckpoint state saved in ``ckpt``."""
    callbacks = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    return next(v for k, v in callbacks.items() if "ModelCheckpoint" in k)


def test_train_few_steps_then_resume(tmp_path: Path):
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    proc = run_train(
        [*TINY_VISION, "trainer.max_steps=3", f"hydra.run.dir={run1}", f"paths.cache_dir={tmp_path}"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Results on the test split" in proc.stdout
    assert "vision (ours)" in proc.stdout and "majority class" in proc.stdout
    console = proc.stdout + proc.stderr
    for noise in ("litlogger", "does not have many workers", "not supported by the model summary"):
        assert noise not in console, f"the console shows Lightning's {noise!r} line"
    lines = console.splitlines()
    messages = [
        line.split("[INFO] - ", 1)[1] for line in lines if "[lightning" in line and "[INFO] - " in line
    ]
    assert "Seed set to 0" in messages
    for message in messages:
        assert sum(message in line for line in lines) == 1, f"printed more than once: {message!r}"
    for name in (
        "metrics.csv",
        "results.csv",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "plots/loss.png",
        "plots/attention_maps.png",
        ".hydra/config.yaml",
    ):
        assert (run1 / name).is_file(), f"{name} missing from the run folder"
    assert _global_step(run1 / "checkpoints/last.ckpt") == 3
    header = (run1 / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "val/acc" in header and "test/acc" in header
    assert not list((run1 / "checkpoints").glob("*.tmp")), "temporary checkpoint files left behind"

    proc = run_train(
        [
            *TINY_VISION,
            "trainer.max_steps=5",
            f"ckpt_path={run1 / 'checkpoints/last.ckpt'}",
            f"hydra.run.dir={run2}",
            f"paths.cache_dir={tmp_path}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _global_step(run2 / "checkpoints/last.ckpt") == 5, "resuming must continue the step count"
    steps = [
        int(r.split(",")[1]) for r in (run2 / "metrics.csv").read_text().splitlines()[1:] if r.split(",")[1]
    ]
    assert min(steps) >= 3, f"the resumed run logged steps {steps}: it restarted from 0"
    best1, best2 = _best_state(run1 / "checkpoints/last.ckpt"), _best_state(run2 / "checkpoints/last.ckpt")
    assert best2["best_model_path"] == str(run2 / "checkpoints/best.ckpt"), "best.ckpt left in the old folder"
    assert float(best2["best_model_score"]) >= float(best1["best_model_score"]), "the old best was forgotten"

    # resumed with no validation after the resume: "best" is still run1's best, copied into run3's folder
    run3 = tmp_path / "run3"
    args = [*TINY_VISION, "trainer.max_steps=4", "trainer.limit_val_batches=0", f"hydra.run.dir={run3}"]
    proc = run_train([*args, f"ckpt_path={run1 / 'checkpoints/last.ckpt'}", f"paths.cache_dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    best3 = _best_state(run3 / "checkpoints/last.ckpt")
    assert best3["best_model_path"] == str(run3 / "checkpoints/best.ckpt")
    assert float(best3["best_model_score"]) == float(best1["best_model_score"])
    assert (run3 / "checkpoints/best.ckpt").read_bytes() == (run1 / "checkpoints/best.ckpt").read_bytes()
    assert (
        f"Loaded model weights from the checkpoint at {run3 / 'checkpoints/best.ckpt'}"
        in proc.stdout + proc.stderr
    )

    # resumed into its own folder: the earlier rows of metrics.csv stay, the new ones are appended
    before = (run1 / "metrics.csv").read_text().splitlines()
    args = [*TINY_VISION, "trainer.max_steps=5", f"hydra.run.dir={run1}", f"paths.cache_dir={tmp_path}"]
    proc = run_train([*args, f"ckpt_path={run1 / 'checkpoints/last.ckpt'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = (run1 / "metrics.csv").read_text().splitlines()
    assert after[: len(before)] == before and len(after) > len(before), "earlier metrics rows were lost"
    assert "exists and is not empty" not in proc.stderr


def test_multirun_sweep_runs_two_jobs(tmp_path: Path):
    """The README's sweep, as a user types it (the default sweep folder, no hydra.sweep.dir)."""
    args = ["-m", *TINY_VISION, "trainer.max_steps=1,2", "run_test=false", "save_artifacts=false"]
    proc = run_train(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "vision").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    assert [_global_step(j / "checkpoints/last.ckpt") for j in jobs] == [1, 2]


def test_missing_data_root_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "no-such-folder"
    proc = run_train([*TINY_VISION, f"task.data.root={missing}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode != 0
    assert f"task.data.root={missing} does not exist" in proc.stderr
    assert "ImageFolder" in proc.stderr  # says what to point it at


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path):
    proc = run_train(
        [*TINY_VISION, f"ckpt_path={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 'run'}"]
    )
    assert proc.returncode != 0
    assert "nope.ckpt does not exist" in proc.stderr


def test_sigterm_saves_the_current_step_and_exits_143(tmp_path: Path):
    """SIGTERM (a scheduler's preemption, ``timeout``) mid-fit: ``last.ckpt`` holds the step where it stopped,
    the exit status says it did not finish (Lightning alone exits 0), and the run resumes from there."""
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    args = [*TINY_VISION, "trainer.max_steps=100000", f"paths.cache_dir={tmp_path}"]
    cmd, env = train_command([*args, f"hydra.run.dir={run1}"])
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while not (run1 / "checkpoints/last.ckpt").is_file():  # training has begun
            assert proc.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, out[-3000:]
    step = _global_step(run1 / "checkpoints/last.ckpt")
    assert f"SIGTERM: stopped at step {step}; resume with ckpt_path={run1 / 'checkpoints/last.ckpt'}" in out
    assert 2 <= step < 100000 and "Results on the test split" not in out
    assert not list((run1 / "checkpoints").glob("*.tmp")), "temporary checkpoint files left behind"

    resumed = run_train(
        [
            *TINY_VISION,
            f"trainer.max_steps={step + 2}",
            f"ckpt_path={run1 / 'checkpoints/last.ckpt'}",
            f"hydra.run.dir={run2}",
            f"paths.cache_dir={tmp_path}",
        ]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _global_step(run2 / "checkpoints/last.ckpt") == step + 2


_RESUME_RUNS = {
    "vision": [
        *TINY_VISION,
        "trainer.val_check_interval=null",  # validate (and write last.ckpt) at each epoch's end
        "task.model.dropout=0.1",  # dropout and MixUp draw random numbers in every step
        "task.augment.mixup_alpha=0.2",
    ],
    "translation": [
        *TINY_TRANSLATION,
        "task.data.numbers.train_size=512",  # 4 steps an epoch
        "task.data.numbers.val_size=16",
        "task.data.numbers.test_size=32",
        "task.decode.val_sentences=16",
        "task.model.dropout=0.1",
    ],
    "timeseries": [
        *(a for a in TINY_TIMESERIES if not a.startswith(("trainer.max_steps", "trainer.val_check"))),
        "trainer.limit_train_batches=4",  # 4 steps an epoch
        "task.model.dropout=0.1",
    ],
    "recommendation": [
        "task=recommendation",
        *(a for a in TINY_RECOMMENDATION if not a.startswith(("trainer.max_", "trainer.val_check"))),
        "trainer.limit_train_batches=3",  # 3 steps an epoch
        "trainer.limit_val_batches=1",
        "task.model.dropout=0.1",
    ],
    "audio": [
        *(a for a in TINY_AUDIO if not a.startswith("trainer.max_steps")),
        "trainer.limit_train_batches=2",  # 2 steps an epoch
        "task.model.dropout=0.1",
    ],
}


@pytest.mark.parametrize("task", sorted(_RESUME_RUNS))
def test_kill_and_resume_ends_with_the_same_metrics(tmp_path: Path, task: str):
    """kill -9 after the first checkpoint, resume from it: the final test metrics equal those of a run that
    was never stopped (the checkpoint restores the random generators: data order, dropout, MixUp)."""
    args = [*_RESUME_RUNS[task], "trainer.max_epochs=3", f"paths.cache_dir={tmp_path / 'cache'}"]
    whole = run_train([*args, f"hydra.run.dir={tmp_path / 'whole'}"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    cmd, env = train_command([*args, f"hydra.run.dir={tmp_path / 'killed'}"])
    killed = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not first.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    saved = first.with_name("first.ckpt")  # beside it: translation reads its run folder's tokenizer
    saved.write_bytes(first.read_bytes())  # written atomically: complete whenever it is seen
    killed.kill()
    killed.wait()
    assert _global_step(saved) < _global_step(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    resumed = run_train([*args, f"ckpt_path={saved}", f"hydra.run.dir={tmp_path / 'resumed'}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = [
        torch.load(tmp_path / r / "checkpoints/last.ckpt", weights_only=True) for r in ("whole", "resumed")
    ]
    assert final[0]["global_step"] == final[1]["global_step"]
    for name, weight in final[0]["state_dict"].items():
        assert torch.equal(weight, final[1]["state_dict"][name]), f"{name} differs after the resume"
    results = [(tmp_path / run / "results.csv").read_text() for run in ("whole", "resumed")]
    assert results[0] == results[1]
