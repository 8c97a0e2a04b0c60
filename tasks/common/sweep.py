"""Sweeps (``python train.py -m ...``): per-job devices, each job's record, and the summary of a sweep.

- ``pick_gpu`` / ``threads_per_job``: which GPU a parallel job sees (by its job number, set in
  ``CUDA_VISIBLE_DEVICES`` before CUDA starts) and how many CPU threads it gets.
- ``prepare_job`` / ``finish_job``: called by ``train.py`` around each job of a sweep; a job writes
  ``<job dir>/sweep_job.json`` (overrides, status, error, metrics) and returns the Optuna objective.
- ``SweepSummary``: a Hydra callback; after every multirun it writes ``<sweep dir>/sweep.csv``, prints one
  table of every job and, when one numeric parameter varies, plots the metrics against it (``sweep.png``).
- ``optuna_storage``: the Optuna study's SQLite storage (a search resumes by running the same command).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("sweep")

#: file each job writes into its own folder
JOB_RECORD = "sweep_job.json"
#: CUDA_VISIBLE_DEVICES as this process found it (before a job of a parallel sweep narrowed it)
_ORIGINAL_VISIBLE = os.environ.get("CUDA_VISIBLE_DEVICES")
#: the GPU this process was given by its first job (a joblib worker runs several jobs; CUDA starts once)
_pinned_gpu: str | None = None


# -- devices --------------------------------------------------------------------------------------------
def pick_gpu(job_num: int, gpus: Sequence[str], jobs_per_gpu: int) -> str | None:
    """The GPU id job ``job_num`` runs on: jobs ``0 .. jobs_per_gpu - 1`` share the first GPU, the next
    ``jobs_per_gpu`` the second, and so on, wrapping around (``None`` when there is no GPU).

    With ``len(gpus) * jobs_per_gpu`` jobs at once every GPU holds ``jobs_per_gpu`` of them.
    """
    if jobs_per_gpu < 1:
        raise ValueError(f"sweep.jobs_per_gpu={jobs_per_gpu}; set it to 1 or more.")
    if not gpus:
        return None
    return str(gpus[(job_num // jobs_per_gpu) % len(gpus)])


def threads_per_job(cpu_threads: int | None, parallel_jobs: int, cores: int) -> int:
    """Torch threads for each of ``parallel_jobs`` jobs at once on ``cores`` cores: ``cpu_threads`` when
    set, else an equal share of the cores (at least 1)."""
    if cpu_threads:
        return int(cpu_threads)
    return max(1, cores // max(1, parallel_jobs))


def visible_gpus(configured: Sequence[Any] | None = None) -> list[str]:
    """GPU ids a sweep may use: ``configured`` (``sweep.gpus``) when given, else ``CUDA_VISIBLE_DEVICES`` as
    the process started with it, else every GPU ``nvidia-smi`` lists. Never starts CUDA in this process."""
    if configured:
        return [str(g) for g in configured]
    if _ORIGINAL_VISIBLE is not None:
        return [g.strip() for g in _ORIGINAL_VISIBLE.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _parallel_jobs(hydra_cfg: Any) -> int:
    """How many jobs run at once under this launcher (1: the basic launcher, or a cluster's own nodes)."""
    target = str(hydra_cfg.launcher.get("_target_", ""))
    if not target.endswith("JoblibLauncher"):
        return 1
    n_jobs = int(hydra_cfg.launcher.get("n_jobs") or 1)
    return (os.cpu_count() or 1) if n_jobs < 0 else n_jobs


def prepare_job(cfg: DictConfig) -> None:
    """Before a job of a sweep trains (before torch starts CUDA): refuse DDP inside a parallel sweep, give a
    parallel job its GPU (``CUDA_VISIBLE_DEVICES``) and, without a GPU, its share of the CPU cores."""
    global _pinned_gpu
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    parallel = _parallel_jobs(hydra_cfg)
    if parallel <= 1:
        return
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if "ddp" in strategy or "fsdp" in strategy:
        raise ValueError(
            f"trainer.strategy={strategy} inside a parallel sweep ({parallel} jobs at once) would give every "
            "job every GPU; sweep DDP runs with the default launcher (one after another) or use trainer=gpu."
        )
    gpus = visible_gpus(cfg.sweep.gpus)
    job_num = int(hydra_cfg.job.num)
    gpu = pick_gpu(job_num, gpus, int(cfg.sweep.jobs_per_gpu))
    if gpu is not None:
        torch = sys.modules.get("torch")
        cuda_started = torch is not None and torch.cuda.is_initialized()
        if _pinned_gpu is not None and cuda_started:
            if gpu != _pinned_gpu:  # this worker process already runs on its first job's GPU
                log.info("job %d: stays on GPU %s (this worker's CUDA is started)", job_num, _pinned_gpu)
            gpu = _pinned_gpu
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        _pinned_gpu = gpu
        log.info(
            "job %d: GPU %s (of %s, %d job(s) per GPU)", job_num, gpu, ",".join(gpus), cfg.sweep.jobs_per_gpu
        )
    else:
        threads = threads_per_job(cfg.cpu_threads, parallel, os.cpu_count() or 1)
        with open_dict(cfg):
            cfg.cpu_threads = threads
        log.info("job %d: %d CPU thread(s) (%d jobs at once)", job_num, threads, parallel)


# -- one job's record -----------------------------------------------------------------------------------
def finish_job(
    cfg: DictConfig,
    rows: Mapping[str, Mapping[str, float]],
    monitored: Mapping[str, Any],
    error: str | None,
    wall_s: float,
) -> float | None:
    """Write the job's record (``<run dir>/sweep_job.json``) and return the Optuna objective: the best value
    of the task's monitored validation metric, or ``None`` for a failed job or one that never validated
    (Optuna marks the trial failed; under Optuna such a job's row is failed too).

    Under the Optuna sweeper, a ``hydra.sweeper.direction`` that disagrees with the task's ``monitor_mode``
    fails the job with a line naming the key."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    best = monitored.get("best")
    searching = "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower()
    if error is None and searching:
        direction = str(hydra_cfg.sweeper.direction).split(".")[-1].lower()  # Direction.maximize or maximize
        wanted = "maximize" if monitored.get("mode") == "max" else "minimize"
        if direction != wanted:
            error = (
                f"ValueError: hydra.sweeper.direction={direction}, but the task's {monitored.get('metric')} "
                f"is better when {monitored.get('mode')}imised: set hydra.sweeper.direction={wanted}"
            )
            print(f"error: {error.removeprefix('ValueError: ')}", file=sys.stderr)
    if error is None and searching and (best is None or not math.isfinite(best)):  # no objective
        error = (
            f"no finite {monitored.get('metric', 'validation metric')} (no validation ran, or it diverged)"
        )
    ours = next((m for name, m in rows.items() if name.endswith("(ours)")), {})
    record = {
        "job": int(hydra_cfg.job.num),
        "overrides": list(hydra_cfg.overrides.task),
        "status": "failed" if error else "ok",
        "error": error or "",
        "monitor": monitored.get("metric", ""),
        "mode": monitored.get("mode", ""),
        "best_val": best if best is not None and math.isfinite(best) else None,
        "test": {k: float(v) for k, v in ours.items()},
        "wall_s": round(wall_s, 1),
        "started": round(time.time() - wall_s, 2),  # seconds since the epoch
        "pid": os.getpid(),
    }
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / JOB_RECORD).write_text(json.dumps(record, indent=1))
    return None if error or record["best_val"] is None else float(best)


# -- the sweep's summary --------------------------------------------------------------------------------
def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job of the sweep in ``sweep_dir`` (its numbered sub-folders), in job order; a job that left no
    record (killed, or its process died) is a row with status ``no result``."""
    records = []
    for job_dir in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        path = job_dir / JOB_RECORD
        if path.exists():
            records.append(json.loads(path.read_text()))
            continue
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        records.append(
            {
                "job": int(job_dir.name),
                "overrides": [str(o) for o in overrides],
                "status": "no result",
                "error": "the job left no record (killed, or its process died): see its train.log",
                "monitor": "",
                "mode": "",
                "best_val": None,
                "test": {},
                "wall_s": None,
            }
        )
    return records


def varying_params(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs (the sweep's parameters), in first-seen order."""
    given = [dict(map(_split, rec["overrides"])) for rec in records]
    keys = list(dict.fromkeys(k for g in given for k in g))
    if len(records) == 1:
        return keys
    return [k for k in keys if len({g.get(k) for g in given}) > 1]  # absent in a job counts as different


def summary_rows(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table: job, status, each varying parameter, the best monitored
    validation value, every test metric of the model, wall seconds, error."""
    params = varying_params(records)
    monitor = next((r["monitor"] for r in records if r["monitor"]), "")
    tests: list[str] = []
    for rec in records:
        tests += [k for k in rec["test"] if k not in tests]
    header = [
        "job",
        "status",
        *params,
        f"best {monitor}" if monitor else "best val",
        *(f"test/{t}" for t in tests),
    ]
    header += ["wall_s", "error"]
    body = []
    for rec in records:
        given = dict(map(_split, rec["overrides"]))
        best = rec["best_val"]
        body.append(
            [
                str(rec["job"]),
                rec["status"],
                *(given.get(p, "") for p in params),
                "" if best is None else f"{best:.4f}",
                *("" if t not in rec["test"] else f"{rec['test'][t]:.4f}" for t in tests),
                "" if rec["wall_s"] is None else f"{rec['wall_s']:.1f}",
                rec["error"],
            ]
        )
    return header, body


def best_job(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The finished job with the best monitored validation value (``None`` if none finished)."""
    done = [r for r in records if r["best_val"] is not None and r["status"] == "ok"]
    if not done:
        return None
    sign = -1.0 if done[0]["mode"] == "max" else 1.0
    return min(done, key=lambda r: sign * r["best_val"])


def format_sweep_table(header: Sequence[str], body: Sequence[Sequence[str]], max_error: int = 80) -> str:
    """A plain-text table (errors cut to ``max_error`` characters; sweep.csv keeps them whole)."""
    rows = [list(header), *([*r[:-1], r[-1][:max_error]] for r in body)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    fmt = "| " + " | ".join(
        f"{{:{'<' if i in (1, len(header) - 1) else '>'}{w}}}" for i, w in enumerate(widths)
    )
    fmt += " |"
    return "\n".join([line, fmt.format(*rows[0]), line, *(fmt.format(*r) for r in rows[1:]), line])


def plot_sweep(records: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """When exactly one parameter (not a seed) varies and its values are numbers: the best monitored
    validation value and the test metric of the same name against it, as ``path`` (PNG). Returns the file,
    or ``None``."""
    params = varying_params(records)
    if len(params) != 1 or params[0].split(".")[-1] == "seed":  # seeds: a table, not a curve
        return None
    points = []
    for rec in records:
        try:
            x = float(dict(map(_split, rec["overrides"]))[params[0]])
        except (KeyError, ValueError):
            return None
        points.append((x, rec))
    done = sorted(((x, r) for x, r in points if r["best_val"] is not None), key=lambda p: p[0])
    if len(done) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitor = done[0][1]["monitor"]
    name = monitor.removeprefix("val/")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [x for x, _ in done]
    ax.plot(xs, [r["best_val"] for _, r in done], "o-", label=f"best {monitor}")
    test = [(x, r["test"][name]) for x, r in done if name in r["test"]]
    if test:
        ax.plot([x for x, _ in test], [y for _, y in test], "s--", label=f"test/{name}")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(params[0])
    ax.set_ylabel(name)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _short(value: str) -> str:
    """A long float as 4 significant digits (``0.0018493306410514402``: ``0.001849``); others as they are."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.lstrip("-").isdigit() else value


def summarize(sweep_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Write ``sweep.csv`` (and ``sweep.png`` when it applies) into ``sweep_dir``; return the records and the
    printable report (table, best job, failures)."""
    records = collect(sweep_dir)
    header, body = summary_rows(records)
    with open(sweep_dir / "sweep.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["overrides", *header])
        for rec, row in zip(records, body, strict=True):
            writer.writerow([" ".join(rec["overrides"]), *row])
    plot = plot_sweep(records, sweep_dir / "sweep.png")
    params = set(varying_params(records))
    shown = [[_short(v) if h in params else v for h, v in zip(header, row, strict=True)] for row in body]
    lines = [f"\nSweep of {len(records)} job(s) ({sweep_dir}/sweep.csv):", format_sweep_table(header, shown)]
    best = best_job(records)
    if best is not None:
        lines.append(
            f"best: job {best['job']} ({best['monitor']} = {best['best_val']:.4f})"
            + "".join(f" {o}" for o in best["overrides"] if _split(o)[0] in header)
        )
    if plot is not None:
        lines.append(f"plot: {plot}")
    return records, "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/hydra/default.yaml): after every ``-m`` sweep, the table
    of every job (``sweep.csv``, printed, ``sweep.png``); exit status 1 when a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise ``hydra.sweep.dir``; raise ``SystemExit(1)`` after the table if any job failed."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        records, report = summarize(sweep_dir)
        print(report, flush=True)
        failed = [r for r in records if r["status"] != "ok"]
        if failed:
            jobs = ", ".join(str(r["job"]) for r in failed)
            print(
                f"error: {len(failed)} of {len(records)} jobs failed (job {jobs}): see {sweep_dir}/sweep.csv",
                file=sys.stderr,
            )
            raise SystemExit(1)


# -- Optuna storage -------------------------------------------------------------------------------------
def optuna_storage(path: str | None, study_name: str | None = None) -> Any:
    """The Optuna study's storage for ``hydra.sweeper.storage``: ``None`` (in memory) or an SQLite file
    (``optuna.db``, relative to the launch folder, or an ``sqlite:///`` URL); the same command run again
    resumes the study (its trials so far inform the sampler) and runs ``hydra.sweeper.n_trials`` more. Trials
    of ``study_name`` that a stopped search left running are marked failed (one search per study at a time).

    Optuna 2.10 (the newest the Hydra sweeper accepts) stamps the schema version on a connection it never
    commits, which SQLAlchemy 2 rolls back (then ``AssertionError``, or ``database is locked``); the storage
    here stamps it in a committed transaction, with SQLAlchemy 1.4 and 2 alike."""
    if path is None or str(path) == "":
        return None
    import alembic.migration
    from optuna.storages._rdb import storage as rdb

    url = str(path) if "://" in str(path) else f"sqlite:///{Path(path).expanduser().resolve()}"

    class _CommittingVersionManager(rdb._VersionManager):
        def _init_alembic(self) -> None:
            with self.engine.begin() as conn:  # committed on exit
                context = alembic.migration.MigrationContext.configure(conn)
                if context.get_current_revision() is None:
                    context.stamp(self._create_alembic_script(), self.get_head_version())

        def get_current_version(self) -> str:
            with self.engine.connect() as conn:
                version = alembic.migration.MigrationContext.configure(conn).get_current_revision()
            if version is None:
                raise RuntimeError(
                    f"the Optuna storage {url} has no schema version; delete it or use another file"
                )
            return version

    original = rdb._VersionManager
    rdb._VersionManager = _CommittingVersionManager
    try:
        storage = rdb.RDBStorage(url)
    finally:
        rdb._VersionManager = original
    if study_name:
        _fail_stale_trials(storage, study_name)
    return storage


def _fail_stale_trials(storage: Any, study_name: str) -> None:
    """Mark the trials of ``study_name`` still ``RUNNING`` in ``storage`` (their search was killed) failed."""
    from optuna.trial import TrialState

    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return  # a new study
    stale = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        storage.set_trial_state(trial._trial_id, TrialState.FAIL)
    if stale:
        log.warning(
            "study %s: %d trial(s) left running by a stopped search marked failed (trial %s)",
            study_name,
            len(stale),
            ", ".join(str(t.number) for t in stale),
        )
