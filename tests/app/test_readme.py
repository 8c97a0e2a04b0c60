"""Every ``train.py`` command of README.md composes as written (known tasks, recipes and keys), the recipes
that read ``paths.data_dir`` find their files in the team's copy of the benchmarks, and the embedded-default
commands train end to end at tiny size."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import REPO, run_train

SHARED_DATA = REPO.parent / "shared" / "data"


def readme_commands() -> list[list[str]]:
    """The overrides of each ``.venv/bin/python train.py ...`` line in README.md's bash blocks (with its
    ``\\`` continuations; comments dropped)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith(".venv/bin/python train.py"):
                commands.append(shlex.split(cmd)[2:])
    return commands


COMMANDS = readme_commands()


def _compose(args: list[str]):
    """Compose ``args`` (a ``-m`` sweep: each swept key at its first value; ``<placeholders>`` left out)."""
    sweep = "-m" in args
    overrides = [a.split(",")[0] if sweep and "[" not in a else a for a in args if a != "-m" and "<" not in a]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, "paths.output_dir=composed-only"])


def test_readme_has_the_commands():
    assert len(COMMANDS) >= 15 and ["task=audio"] in COMMANDS and ["task=recommendation"] in COMMANDS


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_readme_command_composes(args: list[str]):
    if args == ["task=nope"]:  # the documented failure
        with pytest.raises(ConfigCompositionException, match="task/nope"):
            _compose(args)
        return
    cfg = _compose(args)
    OmegaConf.to_container(cfg.task, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("args", [c for c in COMMANDS if any("paths.data_dir=/path/to/data" in a for a in c)])
def test_readme_recipes_find_the_benchmark_files(args: list[str]):
    """With the team's copies as ``paths.data_dir``, a recipe's data path exists (the data we lack, ML-1M
    and Speech Commands, is skipped)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("no ../shared/data beside the repository")
    args = [f"paths.data_dir={SHARED_DATA}" if a.startswith("paths.data_dir=") else a for a in args]
    cfg = _compose(args)
    root = Path(OmegaConf.select(cfg, "task.data.root", default=None) or "")
    if any(name in str(root) for name in ("ml-1m", "speech_commands")):
        pytest.skip(f"{root.name} is not among the team's copies")
    assert root.exists(), f"{' '.join(args)} reads {root}, which does not exist"


@pytest.mark.parametrize("task", ["vision", "translation"])
def test_readme_task_commands_train(tmp_path: Path, task: str):
    """``train.py task=<name>`` as in README, cut to two steps (the other tasks' own tests run theirs)."""
    tiny = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    proc = run_train(
        [f"task={task}", *tiny, f"hydra.run.dir={tmp_path}", "trainer.enable_progress_bar=false"]
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{task} (ours)" in proc.stdout


def test_readme_linear_patch_example_builds_the_model():
    """``task.model.stem_channels=[]`` needs a patch that divides the 28-px digits (README says 7)."""
    from hydra.utils import instantiate

    from tasks.vision.data import VisionDataModule

    (args,) = [c for c in COMMANDS if "task.model.stem_channels=[]" in c]
    cfg = _compose(args)
    task = instantiate(cfg.task, _convert_="all")
    dm = VisionDataModule(**{**task.data_cfg, "train_limit": 64})
    dm.setup()
    model = task.build_model(dm)
    images, labels = next(iter(dm.train_dataloader()))
    x, _ = task.on_device_batch((images, labels), training=False)
    assert model(x).shape == (len(labels), 10)
