"""Task look-up, config composition, schedule, report and checkpoint helpers (fast, in-process)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from tasks.base import Task
from tasks.common import (
    AtomicCheckpointIO,
    ResumableModelCheckpoint,
    format_table,
    warmup_cosine,
    write_results,
)
from tests.conftest import REPO

CONF = REPO / "conf"
TASK_CONFIGS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # paths.output_dir is Hydra's run folder, only set inside a run: pin it for composition
        return compose(config_name="config", overrides=[*overrides, "paths.output_dir=composed-only"])


def test_a_task_run_imports_only_its_own_task():
    """The config group is the registry: building task=vision imports no other task's package."""
    code = (
        "import sys; from hydra.utils import get_class; "
        "cls = get_class('tasks.vision.task.VisionTask'); "
        "others = sorted(m for m in sys.modules if m.startswith('tasks.') and m.split('.')[1] not in "
        "('vision', 'base', 'common', 'lit')); print(others)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", f"task=vision imported {out.stdout.strip()}"


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_every_task_config_composes(name: str):
    cfg = _compose([f"task={name}"])
    cls = get_class(cfg.task._target_)
    assert issubclass(cls, Task)
    assert cls.__module__ == f"tasks.{name}.task", "the folder and the config file share the task's name"
    # everything but the Hydra-runtime paths resolves
    OmegaConf.to_container(cfg.task, resolve=True)
    OmegaConf.to_container(cfg.optim, resolve=True)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_task_config_overrides_trainer_and_optim_defaults(name: str):
    """A task's own trainer / optim values beat conf/trainer/default.yaml and config.yaml (defaults order)."""
    raw = OmegaConf.load(CONF / "task" / f"{name}.yaml")
    cfg = _compose([f"task={name}"])
    for group in ("trainer", "optim"):
        for key, value in (raw.get(group) or {}).items():
            assert cfg[group][key] == value, f"{group}.{key} from conf/task/{name}.yaml was overridden"
    assert _compose([f"task={name}", "trainer.max_epochs=3"]).trainer.max_epochs == 3  # the command line wins


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment: str):
    cfg = _compose([f"experiment={experiment}"])
    cls = get_class(cfg.task._target_)
    assert issubclass(cls, Task)
    OmegaConf.to_container(cfg.task, resolve=True)


@pytest.mark.parametrize("trainer", ["default", "gpu", "ddp"])
def test_trainer_configs_compose(trainer: str):
    cfg = _compose([f"trainer={trainer}"])
    assert cfg.trainer.accelerator in ("auto", "gpu", "cpu")
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp"


def test_every_yaml_key_is_commented():
    """Project convention: every key in conf/ has a one-line comment."""
    missing = []
    for path in sorted(CONF.rglob("*.yaml")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.startswith("- "):
                continue
            if re.match(r"^[\w.\-/@]+:\s*\S", stripped) and "#" not in stripped:  # mapping headers exempt
                missing.append(f"{path.relative_to(REPO)}:{n}: {stripped}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


def test_unknown_task_fails_fast_with_the_list():
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "task=nope"], capture_output=True, text=True, timeout=60
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode != 0
    assert "Could not find 'task/nope'" in proc.stderr and "vision" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, "one clear message, not a traceback"
    assert elapsed < 20, f"task=nope took {elapsed:.1f}s: it should fail before torch is imported"


def test_warmup_cosine_schedule():
    total = 100
    values = [warmup_cosine(s, total, warmup=0.1, min_lr_ratio=0.1) for s in range(total)]
    assert values[0] == pytest.approx(0.1)  # 1/10 of the way up
    assert values[9] == pytest.approx(1.0)  # warmup done
    assert max(values) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))  # monotone decay
    assert values[-1] == pytest.approx(0.1, abs=1e-3)
    assert warmup_cosine(0, 10, warmup=3) == pytest.approx(1 / 3)  # warmup as a step count
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(0, 10, warmup=-1)


def test_results_table_and_csv(tmp_path: Path):
    rows = {"vision (ours)": {"loss": 0.1, "acc": 0.98}, "majority class": {"acc": 0.1}}
    table = format_table(rows)
    assert "vision (ours)" in table and "0.9800" in table and "majority class" in table
    assert table.splitlines()[3].startswith("| vision (ours)")
    assert "| acc [0-1] |" in format_table(rows, {"acc": "0-1"}).splitlines()[1]
    write_results(rows, tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "model,loss,acc" and lines[2] == "majority class,,0.1"


def test_atomic_checkpoint_io(tmp_path: Path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    assert torch.load(path)["step"] == 1

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_checkpoint({"step": 2, "bad": Boom()}, path)
    assert torch.load(path)["step"] == 1, "a failed save must leave the previous checkpoint intact"
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"], "no temporary files left behind"


def _checkpoint_state(folder: Path, best: Path | None, score: float | None) -> dict:
    cb = ResumableModelCheckpoint(dirpath=folder, filename="best", monitor="val/acc", mode="max")
    state = cb.state_dict()
    state.update(best_model_path=str(best) if best else "", best_model_score=None)
    if score is not None:
        state.update(best_model_score=torch.tensor(score), best_k_models={str(best): torch.tensor(score)})
        state.update(kth_best_model_path=str(best), kth_value=torch.tensor(score))
    return state


def test_best_checkpoint_survives_resume_into_a_new_folder(tmp_path: Path):
    old, new = tmp_path / "run1" / "checkpoints", tmp_path / "run2" / "checkpoints"
    old.mkdir(parents=True)
    torch.save({"w": torch.arange(3)}, old / "best.ckpt")
    cb = ResumableModelCheckpoint(dirpath=new, filename="best", monitor="val/acc", mode="max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "won't be reloaded" warning no longer applies
        cb.load_state_dict(_checkpoint_state(old, old / "best.ckpt", 0.9))
    assert cb.best_model_path == str(new / "best.ckpt")
    assert torch.equal(torch.load(new / "best.ckpt")["w"], torch.arange(3)), "the old best copied over"
    assert float(cb.best_model_score) == pytest.approx(0.9) and list(cb.best_k_models) == [
        str(new / "best.ckpt")
    ]
    assert [p.name for p in new.iterdir()] == ["best.ckpt"], "no temporary files left behind"
    # a worse score after the resume does not replace it; a better one would (Lightning's own test)
    one_process = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda x, **_: x))
    assert not cb.check_monitor_top_k(one_process, torch.tensor(0.8))
    assert cb.check_monitor_top_k(one_process, torch.tensor(0.95))


def test_resume_without_the_old_best_file_picks_a_new_best(tmp_path: Path):
    old, new = tmp_path / "run1" / "checkpoints", tmp_path / "run2" / "checkpoints"
    cb = ResumableModelCheckpoint(dirpath=new, filename="best", monitor="val/acc", mode="max")
    cb.load_state_dict(_checkpoint_state(old, old / "best.ckpt", 0.9))  # the file was deleted
    assert cb.best_model_path == "" and cb.best_model_score is None and not new.exists()
    same = ResumableModelCheckpoint(dirpath=old, filename="best", monitor="val/acc", mode="max")
    same.load_state_dict(_checkpoint_state(old, old / "best.ckpt", 0.9))  # same folder: Lightning's way
    assert same.best_model_path == str(old / "best.ckpt") and float(same.best_model_score) == pytest.approx(
        0.9
    )


def test_resume_copies_only_a_best_checkpoint_beside_the_resumed_one(tmp_path: Path):
    """A path stored inside a checkpoint cannot make a resumed run copy a file from elsewhere."""
    old, new, elsewhere = tmp_path / "run1" / "checkpoints", tmp_path / "run2" / "checkpoints", tmp_path / "x"
    elsewhere.mkdir()
    torch.save({"w": torch.arange(3)}, elsewhere / "best.ckpt")
    cb = ResumableModelCheckpoint(
        dirpath=new, filename="best", monitor="val/acc", mode="max", resume_from=old / "last.ckpt"
    )
    cb.load_state_dict(_checkpoint_state(old, elsewhere / "best.ckpt", 0.9))
    assert cb.best_model_path == "" and not new.exists(), "a file outside the resumed folder was copied"


def _yaml_keys(path: Path, prefix: str = "") -> list[str]:
    """Every leaf key of a YAML file, dotted (``task.model.num_heads``)."""
    from tasks.common.schema import flatten

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    data.pop("defaults", None)
    data.pop("hydra", None)
    return sorted(flatten(data, prefix))


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_every_task_key_has_a_declared_type(name: str):
    """The schema (tasks/common/schema.py) covers each key of conf/task/<name>.yaml and of the recipes of
    that task: a new key needs its type and range there, or the pre-check refuses it as unknown."""
    from tasks.common.schema import ROOT, TASKS

    target = OmegaConf.load(CONF / "task" / f"{name}.yaml").task._target_
    assert target in TASKS, f"no schema for {target} in tasks/common/schema.py"
    known = set(TASKS[target].keys) | set(ROOT.keys)
    files = [CONF / "task" / f"{name}.yaml"]
    files += [p for p in (CONF / "experiment").glob("*.yaml") if f"override /task: {name}" in p.read_text()]
    missing = {f"{p.relative_to(REPO)}: {k}" for p in files for k in _yaml_keys(p) if k not in known}
    assert not missing, "keys without a schema entry:\n" + "\n".join(sorted(missing))


def test_every_root_and_trainer_key_has_a_declared_type():
    from tasks.common.schema import ROOT

    keys = _yaml_keys(CONF / "config.yaml")
    for path in (CONF / "trainer").glob("*.yaml"):
        keys += _yaml_keys(path, "trainer.")
    missing = sorted(set(keys) - set(ROOT.keys))
    assert not missing, f"keys without a schema entry in tasks/common/schema.py: {missing}"


def test_the_pre_check_imports_no_torch():
    """train.check_config runs before torch is imported: the schema needs OmegaConf only."""
    code = "import sys, train; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", f"importing train.py loaded {out.stdout.strip()}"


def test_trainer_extras_are_lightning_trainer_arguments():
    """The Trainer arguments the schema passes on unchecked (and those train.py sets itself) exist."""
    import inspect

    import lightning

    from tasks.common.schema import TRAINER_EXTRAS, TRAINER_OWN

    params = set(inspect.signature(lightning.pytorch.Trainer.__init__).parameters)
    assert set(TRAINER_EXTRAS) | set(TRAINER_OWN) <= params
