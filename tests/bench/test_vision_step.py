"""bench/vision_step.py's trainer timing: the overrides name the variant, the epochs are read right."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.vision_step import VARIANTS, trainer_overrides, trainer_step  # noqa: E402


def test_trainer_overrides_run_the_variant() -> None:
    for name in ("current", "current_b256_ro", "stem64_256_ro"):
        over, batch, _, mode = VARIANTS[name]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=trainer_overrides("vision_cifar10", name, "/data", 7))
        assert cfg.trainer.max_epochs == 7 and cfg.task.data.batch_size == batch
        assert cfg.compile_mode == mode and cfg.task.data.root == "/data/cifar10-jpg.tar.gz"
        for key, value in over.items():
            assert cfg.task.model[key] == value


def test_trainer_step_reads_the_run() -> None:
    res = trainer_step(["task=vision", "trainer.max_epochs=3", "task.data.batch_size=100"])
    assert res["steps_per_epoch"] == 4000 // 100  # the embedded digits' training split, full batches
    assert res["trainer_ms_step"] > 0
    assert abs(res["trainer_s_epoch"] - res["trainer_ms_step"] * 40 / 1e3) < 1e-9
