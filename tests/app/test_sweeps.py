"""Sweeps: per-job GPU / thread assignment, the sweep table, the launcher and Optuna configs (in-process), and
``-m`` sweeps end to end with the parallel, Optuna and submitit launchers (subprocess, tiny vision runs)."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from tasks.common import sweep
from tests.conftest import REPO, TINY_VISION, run_train

CONF = REPO / "conf"
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
#: a tiny job: a few steps, no test-time extras
TINY = [*TINY_VISION, "trainer.max_steps=2", "save_artifacts=false"]


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[*overrides, "paths.output_dir=composed-only"],
            return_hydra_config=hydra,
        )


def _sweep_dir(cwd: Path) -> Path:
    (found,) = (cwd / "multirun" / "vision").iterdir()
    return found


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "sweep.csv") as f:
        return list(csv.DictReader(f))


# -- devices (unit) -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gpus", "jobs_per_gpu", "expected"),
    [
        (["0", "1", "2", "3"], 1, ["0", "1", "2", "3", "0", "1"]),  # one job per GPU, then around again
        (["0"], 4, ["0"] * 6),  # four small jobs share the only GPU
        (["0", "1"], 2, ["0", "0", "1", "1", "0", "0"]),  # two per GPU
        (["4", "7"], 1, ["4", "7", "4", "7", "4", "7"]),  # the ids given, not 0..n-1
    ],
)
def test_pick_gpu_by_job_number(gpus: list[str], jobs_per_gpu: int, expected: list[str]):
    assert [sweep.pick_gpu(n, gpus, jobs_per_gpu) for n in range(6)] == expected


def test_pick_gpu_without_gpus_and_bad_share():
    assert sweep.pick_gpu(3, [], 2) is None
    with pytest.raises(ValueError, match=r"sweep.jobs_per_gpu=0"):
        sweep.pick_gpu(0, ["0"], 0)


def test_threads_are_divided_between_parallel_jobs():
    assert sweep.threads_per_job(None, 2, 2) == 1
    assert sweep.threads_per_job(None, 2, 16) == 8
    assert sweep.threads_per_job(None, 4, 2) == 1  # never 0
    assert sweep.threads_per_job(3, 2, 16) == 3  # cpu_threads set: kept


def test_visible_gpus_from_config_or_environment(monkeypatch: pytest.MonkeyPatch):
    assert sweep.visible_gpus([2, 3]) == ["2", "3"]
    monkeypatch.setattr(sweep, "_ORIGINAL_VISIBLE", "1, 5")
    assert sweep.visible_gpus(None) == ["1", "5"]
    monkeypatch.setattr(sweep, "_ORIGINAL_VISIBLE", "")
    assert sweep.visible_gpus(None) == []


@pytest.fixture(autouse=True)
def _no_hydra_job():
    """Tests that play a running job set HydraConfig; leave it unset for the next test."""
    yield
    HydraConfig.instance().cfg = None


def _as_job(cfg, num: int = 0):
    """Make ``cfg`` (composed with its hydra node) the running job's config."""
    with open_dict(cfg):
        cfg.hydra.job.num = num
        cfg.hydra.runtime.output_dir = "composed-only"
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_ddp_inside_a_parallel_sweep_is_refused_in_one_line():
    cfg = _as_job(_compose(["hydra/launcher=parallel", "trainer=ddp"], hydra=True))
    with pytest.raises(ValueError, match=r"^trainer.strategy=ddp inside a parallel sweep .*trainer=gpu\.$"):
        sweep.prepare_job(cfg)


def test_a_parallel_cpu_job_gets_its_share_of_the_cores(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sweep, "_ORIGINAL_VISIBLE", "")  # no GPU
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    cfg = _as_job(_compose(["hydra/launcher=parallel", "sweep.jobs=4", "cpu_threads=null"], hydra=True))
    sweep.prepare_job(cfg)
    assert cfg.cpu_threads == 2


def test_a_parallel_gpu_job_sees_only_its_gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sweep, "_pinned_gpu", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    overrides = ["hydra/launcher=parallel", "sweep.jobs=4", "sweep.jobs_per_gpu=2", "sweep.gpus=[0,1]"]
    cfg = _as_job(_compose(overrides, hydra=True), num=3)
    sweep.prepare_job(cfg)
    assert sweep.os.environ["CUDA_VISIBLE_DEVICES"] == "1"


# -- configs (in-process) -------------------------------------------------------------------------------
def test_slurm_config_composes_with_the_usual_knobs():
    args = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.mem_gb=64",
    ]
    launcher = _compose(args, hydra=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) == (
        "gpu",
        2,
        30,
        64,
    )
    assert OmegaConf.to_container(launcher)["submitit_folder"].endswith("/.submitit/%j")  # logs in the sweep


def test_parallel_launcher_takes_sweep_jobs():
    launcher = _compose(["hydra/launcher=parallel", "sweep.jobs=3"], hydra=True).hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 3


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_space_composes_for_its_task(name: str):
    """Direction = the task's monitor_mode; every searched key exists in the task's config."""
    cfg = _compose([f"hparams_search={name}"], hydra=True)
    assert cfg.hydra.runtime.choices.task == name
    task_cls = get_class(cfg.task._target_)
    monitor = cfg.task.get("monitor", task_cls.monitor)
    mode = "min" if monitor == "loss" else task_cls.monitor_mode
    assert cfg.hydra.sweeper.direction == ("maximize" if mode == "max" else "minimize")
    assert len(cfg.hydra.sweeper.params) >= 3
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", f"{name}: no key {key}"


def test_optuna_storage_resumes_a_study(tmp_path: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert sweep.optuna_storage(None) is None
    for _ in range(2):  # the second opening finds the first one's trials
        study = optuna.create_study(
            storage=sweep.optuna_storage(str(tmp_path / "s.db")), study_name="t", load_if_exists=True
        )
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(study.trials) == 4


# -- the sweep table (unit) -----------------------------------------------------------------------------
def _fake_job(sweep_dir: Path, num: int, lr: str, best: float | None, error: str = "") -> None:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"optim.lr={lr}", "task=vision"]), job / ".hydra" / "overrides.yaml")
    if best is None and not error:
        return  # killed: no record
    record = {
        "job": num,
        "overrides": [f"optim.lr={lr}", "task=vision"],
        "status": "failed" if error else "ok",
        "error": error,
        "monitor": "val/acc",
        "mode": "max",
        "best_val": best,
        "test": {"acc": best} if best is not None else {},
        "wall_s": 1.0,
    }
    (job / sweep.JOB_RECORD).write_text(json.dumps(record))


def test_summary_lists_every_job_failed_and_killed_ones_too(tmp_path: Path):
    for num, (lr, best, error) in enumerate(
        [("1e-3", 0.9, ""), ("3e-3", 0.95, ""), ("1e-2", None, "ValueError: bad"), ("3e-2", None, "")]
    ):
        _fake_job(tmp_path, num, lr, best, error)
    records, report = sweep.summarize(tmp_path)
    rows = _rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "no result"]
    assert [r["optim.lr"] for r in rows] == ["1e-3", "3e-3", "1e-2", "3e-2"]
    assert "task" not in rows[0]  # not varied: only in the overrides column
    assert rows[2]["error"] == "ValueError: bad" and "killed" in rows[3]["error"]
    assert "best: job 1 (val/acc = 0.9500) optim.lr=3e-3" in report
    assert (tmp_path / "sweep.png").stat().st_size > 0  # one numeric parameter: plotted


# -- end to end (subprocess) ----------------------------------------------------------------------------
def test_parallel_sweep_runs_jobs_at_once_and_a_failing_job_is_a_row(tmp_path: Path):
    """Two jobs at once; a bad value fails its own job with one line; the others finish; exit status 1."""
    args = ["-m", *TINY, "hydra/launcher=parallel", "task.augment.crop=translate,none,bogus"]
    proc = run_train(args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == "error: task.augment.crop='bogus' is not one of resized, translate, none"
    assert errors[-1].startswith("error: 1 of 3 jobs failed (job 2)")
    assert "Traceback" not in proc.stderr
    sweep_dir = _sweep_dir(tmp_path)
    rows = _rows(sweep_dir)
    assert [(r["job"], r["status"], r["task.augment.crop"]) for r in rows] == [
        ("0", "ok", "translate"),
        ("1", "ok", "none"),
        ("2", "failed", "bogus"),
    ]
    assert all(float(r["best val/acc"]) > 0 and float(r["test/acc"]) > 0 for r in rows[:2])
    assert "Sweep of 3 job(s)" in proc.stdout
    first, second = (json.loads((sweep_dir / j / sweep.JOB_RECORD).read_text()) for j in "01")
    assert first["pid"] != second["pid"], "both jobs ran in one process"
    end = min(r["started"] + r["wall_s"] for r in (first, second))
    assert max(first["started"], second["started"]) < end, "the two jobs did not overlap in time"


def test_optuna_two_trials_return_a_best_value_and_resume(tmp_path: Path):
    args = ["-m", "hparams_search=vision", *TINY, "hydra.sweeper.n_trials=2", "sweep.storage=study.db"]
    for _ in range(2):  # the rerun loads the study: its 2 trials + 2 more
        proc = run_train(args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = sorted(
        (tmp_path / "multirun" / "vision").iterdir(),
        key=lambda d: (d / "optimization_results.yaml").stat().st_mtime,
    )
    result = OmegaConf.load(second / "optimization_results.yaml")
    assert 0 < result.best_value <= 1 and "optim.lr" in result.best_params
    assert len(_rows(first)) == 2 and len(_rows(second)) == 2
    import optuna

    study = optuna.load_study(study_name="vision", storage=sweep.optuna_storage(str(tmp_path / "study.db")))
    assert len(study.trials) == 4


@pytest.mark.slow
def test_submitit_local_runs_a_job(tmp_path: Path):
    proc = run_train(["-m", *TINY, "hydra/launcher=local", "seed=0"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = _sweep_dir(tmp_path)
    assert [r["status"] for r in _rows(sweep_dir)] == ["ok"]
    assert (sweep_dir / ".submitit").is_dir()


def _readme_sweep_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Sweeps\n(.*?)(?=^## )", text, flags=re.S | re.M)
    if not match:
        return []
    return [
        line.split("  #")[0].strip()
        for line in match.group(1).splitlines()
        if line.startswith(".venv/bin/python train.py")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("command", _readme_sweep_commands() or ["<no Sweeps section in README.md>"])
def test_readme_sweep_commands_run(tmp_path: Path, command: str):
    """Each command of README's "Sweeps" section, with tiny step counts (SLURM: composed only)."""
    if command.startswith("<"):
        pytest.skip(command)
    args = shlex.split(command)[2:]
    if "hydra/launcher=slurm" in args:
        one_job = [a.split(",")[0] for a in args if a != "-m"]  # x=a,b -> x=a: composed, not swept
        proc = run_train([*one_job, "--cfg", "hydra"], cwd=tmp_path)
        assert proc.returncode == 0 and "SlurmLauncher" in proc.stdout, proc.stderr[-3000:]
        return
    extra = [a for a in TINY if a.split("=")[0] not in {x.split("=")[0] for x in args}]
    if any(a.startswith("hparams_search=") for a in args):
        extra.append("hydra.sweeper.n_trials=2")
    proc = run_train([*args, *extra], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.glob("multirun/*/*/sweep.csv")), "no sweep.csv"


def test_ddp_on_cpu_shares_the_cores(monkeypatch: pytest.MonkeyPatch):
    """cpu_threads=null leaves torch's one thread per core; under DDP on a CPU, Lightning's launcher shares
    the cores among the processes (train.py relies on this and sets no threads of its own)."""
    import os

    import torch
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        _set_num_threads_if_needed(num_processes=2)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        assert torch.get_num_threads() == max(1, cores // 2)
        _set_num_threads_if_needed(num_processes=4 * cores)
        assert torch.get_num_threads() == max(1, cores // 2)  # OMP_NUM_THREADS now set: left alone
        os.environ.pop("OMP_NUM_THREADS")
        _set_num_threads_if_needed(num_processes=4 * cores)
        assert torch.get_num_threads() == 1  # more processes than cores: never below one thread
    finally:
        torch.set_num_threads(before)
        os.environ.pop("OMP_NUM_THREADS", None)
