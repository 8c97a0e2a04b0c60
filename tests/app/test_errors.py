"""Bad input to ``train.py`` fails before any work, in one line naming the key or file and the fix, runs no
code from a checkpoint, and leaves what is on disk as it was (subprocess runs)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_VISION, run_train, train_command


def _one_line_error(proc, *fragments: str) -> str:
    """The run failed with status 2 and one error line (no traceback) holding every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


class _Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_runs_no_code(tmp_path: Path):
    marker, ckpt, run = tmp_path / "pwned", tmp_path / "crafted.ckpt", tmp_path / "run"
    torch.save({"state_dict": {}, "global_step": 1, "payload": _Payload(marker)}, ckpt)
    stamp = ckpt.read_bytes()
    proc = run_train([*TINY_VISION, f"ckpt_path={ckpt}", f"hydra.run.dir={run}"])
    _one_line_error(proc, f"checkpoint {ckpt} cannot be read safely", "no code is run")
    assert not marker.exists(), "the checkpoint's payload ran"
    assert ckpt.read_bytes() == stamp, "the checkpoint was changed"
    assert "cannot be read safely" in (run / "train.log").read_text().splitlines()[-1], "train.log lacks it"
    assert not (run / "checkpoints").exists(), "the failed run wrote checkpoints"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"task": "translation", "model": {}},
            ["was written by task=translation, not task=vision"],
        ),
        (
            {"task": "vision", "model": {"depth": 3}},
            ["other model settings", "task.model.depth=3 (this run: 1)", "same task.model overrides"],
        ),
    ],
    ids=["other-task", "other-model"],
)
def test_a_checkpoint_of_another_task_or_model_is_named(tmp_path: Path, record: dict, expected: list[str]):
    from omegaconf import OmegaConf

    from tests.app.test_config import _compose

    model = OmegaConf.to_container(_compose(TINY_VISION).task.model, resolve=True)
    if record["task"] == "vision":
        record = {"task": "vision", "model": {**model, **record["model"]}}
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "mha_suite": record}, ckpt)
    proc = run_train([*TINY_VISION, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"])
    _one_line_error(proc, str(ckpt), *expected)


def test_an_unknown_experiment_fails(tmp_path: Path):
    proc = run_train(["experiment=vision_cifar1", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode != 0 and "Could not find 'experiment/vision_cifar1'" in proc.stderr
    assert "vision_cifar10" in proc.stderr, "the known recipes are listed"
    assert not (tmp_path / "run").exists()


def test_our_errors_show_their_traceback_with_hydra_full_error(tmp_path: Path):
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_text("not a checkpoint")
    cmd, env = train_command([*TINY_VISION, f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'run'}"])
    proc = subprocess.run(
        cmd, env={**env, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "cannot be read safely" in proc.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "optim.lr=-1 is out of range: it must be > 0"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 trains forever"),
        ("task.model.num_heads=3", "task.model.num_heads=3 does not divide task.model.embed_dim=64"),
    ],
)
def test_a_bad_setting_fails_before_any_import_of_torch(tmp_path: Path, override: str, message: str):
    """Checked before torch and Lightning are imported: one line in well under the seconds they take (the
    whole catalogue of bad settings is checked in-process in tests/app/test_bad_inputs.py)."""
    started = time.perf_counter()
    proc = run_train([override, f"hydra.run.dir={tmp_path / 'run'}"])
    elapsed = time.perf_counter() - started
    _one_line_error(proc, message)
    assert elapsed < 5, f"{override} took {elapsed:.1f} s to be refused"
