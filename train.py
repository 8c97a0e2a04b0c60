#!/usr/bin/env python
"""The one entry point: ``python train.py task=<name> [experiment=<recipe>] [key=value ...]``.

compose config -> build the task (``task._target_``) -> data module + model -> TaskModule -> Trainer fit
-> test (best checkpoint) -> baselines -> results table, results.csv, metrics.csv, plots, task artefacts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tasks.common import cli, schema

if TYPE_CHECKING:
    from tasks.common import SigtermCheckpoint

log = logging.getLogger("train")
# ${pid:} in conf/hydra/default.yaml: run folders of processes started in the same second stay apart
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)  # a sweep: one value


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, dict[str, float]] | float | None:
    """``train(cfg)``; an error raised by the project's own checks (a bad value, file or checkpoint) is one
    line on standard error and the last line of ``train.log``, exit status 2. ``HYDRA_FULL_ERROR=1`` shows its
    traceback; any other exception keeps its traceback (also written to ``train.log``). A job of a ``-m``
    sweep runs through ``_sweep_job`` instead (returns the Optuna objective)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg)
    try:
        check_config(cfg)  # before torch and Lightning are imported: a bad value costs no start-up
        return train(cfg)
    except Exception as err:
        if _report(err):
            raise SystemExit(2) from None
        raise


# -- sweeps (README "Sweeps"; tasks/common/sweep.py) ---------------------------------------------------
def _sweep_job(cfg: DictConfig) -> float | None:
    """One job of a ``-m`` sweep: devices first (before CUDA starts), then ``train``; a failure is reported
    (one line for our own checks, else the traceback in ``train.log``) and recorded, not raised, so the
    other jobs run and the sweep's table lists it. Returns the best monitored validation value (``None``:
    failed)."""
    from tasks.common import sweep

    started = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    monitored: dict[str, Any] = {}
    error = None
    try:
        check_config(cfg)
        sweep.prepare_job(cfg)
        rows = train(cfg, monitored)
    except Exception as err:
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        if not _report(err):
            log.error("job %s failed:\n%s", HydraConfig.get().job.num, traceback.format_exc())
    return sweep.finish_job(cfg, rows, monitored, error, time.perf_counter() - started)


def check_config(cfg: DictConfig) -> None:
    """Every setting against its declared type, range and source (``tasks/common/schema.py``: the root and
    each task), before torch and Lightning are imported: one line naming the key, the value and the fix."""
    schema.check_config(cfg)


def _quiet_lightning() -> None:
    """Every Lightning line once (through Hydra's console and train.log handlers, not Lightning's own as
    well), without its advertising tip or warnings about our intended set-up that a user cannot act on."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    for message in (
        "You have overridden `on_after_batch_transfer`",  # the task's device-side hook: intended
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # inside Lightning, fixed upstream
        "does not have many workers",  # the data are in-memory tensors: 0 workers is right (and the default)
        "is not supported by the model summary",  # bf16-mixed: the summary's size estimate assumes fp32
    ):
        warnings.filterwarnings("ignore", message=message)


def _report(err: Exception) -> bool:
    """Report ``err`` (inside ``except``): True for the project's own checks, printed as one line on stderr
    and in ``train.log`` (unless ``HYDRA_FULL_ERROR=1``); False for anything else, whose traceback goes into
    ``train.log`` (the caller shows or raises it)."""
    if cli.is_user_error(err):  # tasks/common/cli.py: our own check, and HYDRA_FULL_ERROR is not 1
        _to_log_file(f"{type(err).__name__}: {err}")
        print(f"error: {err}", file=sys.stderr)
        return True
    _to_log_file(traceback.format_exc())
    return False


def _to_log_file(text: str) -> None:
    """Append ``text`` to the run's ``train.log`` only (the console gets Hydra's own report)."""
    record = logging.LogRecord("train", logging.ERROR, __file__, 0, "%s", (text.rstrip(),), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def train(cfg: DictConfig, monitored: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """compose config -> task -> data + model -> fit -> test -> baselines -> report (see the module doc).

    ``monitored``, when given, receives the task's monitored validation metric: ``metric`` (``val/<name>``),
    ``mode`` (``min`` / ``max``) and ``best`` (its best value over training; what a search optimises)."""
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    from tasks.base import RunContext
    from tasks.common import (
        AtomicCheckpointIO,
        ResumableModelCheckpoint,
        SigtermCheckpoint,
        appending_csv_logger,
        format_table,
        load_checkpoint,
        plot_metrics,
        save_artifacts,
        write_results,
    )
    from tasks.common.checkpoint import check_checkpoint_matches
    from tasks.lit import LossProgressBar, TaskModule

    _quiet_lightning()
    run_dir = Path(cfg.paths.output_dir)
    name = HydraConfig.get().runtime.choices.task  # task=<name>: conf/task/<name>.yaml
    state = None
    if cfg.ckpt_path is not None:  # before any work: a missing, unreadable or mismatched checkpoint
        state = load_checkpoint(cfg.ckpt_path, task=name)
    L.seed_everything(cfg.seed, workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    elif cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)

    run = RunContext(
        name=name,
        run_dir=run_dir,
        resume_from=Path(cfg.ckpt_path) if cfg.ckpt_path is not None else None,
    )
    task = instantiate(cfg.task, _convert_="all", _partial_=True)(run=run)  # the class in task._target_
    if state is not None:  # the model settings as the task records them (some come from task keys)
        check_checkpoint_matches(state, name, task.model_cfg, cfg.ckpt_path)
        del state
    datamodule = task.build_datamodule()
    model = task.build_model(datamodule)
    module = TaskModule(
        task,
        model,
        OmegaConf.to_container(cfg.optim),
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
    )

    trainer_cfg = OmegaConf.to_container(cfg.trainer)
    if trainer_cfg.get("precision") is None:
        trainer_cfg["precision"] = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    checkpoint = ResumableModelCheckpoint(  # best over the whole training, across a resume
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=f"val/{task.monitor}",
        mode=task.monitor_mode,
        save_last=True,
        save_top_k=1,
        resume_from=run.resume_from,  # the killed run's best.ckpt is taken from beside it only
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    on_sigterm = SigtermCheckpoint(last)  # SIGTERM mid-fit: save this step's state, then exit 143
    trainer = instantiate(
        trainer_cfg,
        logger=appending_csv_logger(run_dir),  # -> <run_dir>/metrics.csv (a resume appends)
        callbacks=[
            checkpoint,
            on_sigterm,
            LearningRateMonitor(logging_interval="step"),
            *(
                [LossProgressBar(refresh_rate=cfg.progress_every)]  # tqdm + train/loss
                if trainer_cfg.get("enable_progress_bar")
                else []
            ),
        ],
        plugins=[AtomicCheckpointIO()],
        gradient_clip_val=cfg.optim.grad_clip,
        default_root_dir=run_dir,
    )
    with _exit_on_sigterm(on_sigterm):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    trainer.save_checkpoint(last, weights_only=False)  # the final state (all of it), even mid-epoch

    rows: dict[str, dict[str, float]] = {}
    if cfg.run_test:
        best = "best" if checkpoint.best_model_path else None  # no validation ran: test the final weights
        with _exit_on_sigterm(on_sigterm):
            (results,) = trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        rows[f"{task.name} (ours)"] = {k.removeprefix("test/"): float(v) for k, v in results.items()}
        rows.update(task.baselines(datamodule))
    if trainer.is_global_zero:
        plot_metrics(run_dir / "metrics.csv", run_dir / "plots")
        if rows:
            write_results(rows, run_dir / "results.csv")
            print(f"\nResults on the test split ({run_dir}):\n{format_table(rows, task.metric_scales)}")
        if cfg.save_artifacts:
            save_artifacts(task, module.model, datamodule, run_dir)  # with torch.compile off
    if monitored is not None:  # the objective of a hyper-parameter search (tasks/common/sweep.py)
        best = checkpoint.best_model_score
        monitored.update(
            metric=f"val/{task.monitor}",
            mode=task.monitor_mode,
            best=float(best) if best is not None else None,
        )
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # DDP: every rank waits for rank 0's plots, then all
        dist.barrier()  # leave together (a rank that exits first can abort and take the others down)
        dist.destroy_process_group()
    return rows


@contextlib.contextmanager
def _exit_on_sigterm(on_sigterm: SigtermCheckpoint) -> Iterator[None]:
    """Lightning ends a run stopped by SIGTERM with ``SystemExit`` and status 0, as if it had finished; exit
    with 143 (128 + SIGTERM) instead, saying where the state is."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        yield
    except SIGTERMException:
        if on_sigterm.saved_step is not None:
            log.warning(
                "SIGTERM: stopped at step %d; resume with ckpt_path=%s",
                on_sigterm.saved_step,
                on_sigterm.path,
            )
        else:
            log.warning("SIGTERM: stopped after training; the final state is in %s", on_sigterm.path)
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    main()
