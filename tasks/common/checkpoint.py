"""Checkpoints that lose nothing: atomic writes (a crash mid-save never leaves a truncated ``last.ckpt``), the
current step saved when SIGTERM stops a run, and a best checkpoint that survives resuming into a new run
folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, fsync it, then ``os.replace`` it into place.

    ``os.replace`` within one file system is atomic, so a reader (or a resumed run) sees either the old
    checkpoint or the new one, never half of one.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options (got {storage_options!r})")
        _atomic_write(Path(path), lambda f: torch.save(checkpoint, f))


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temporary file in ``path``'s folder, fsync it, ``os.replace`` it into place and
    fsync the folder (the rename itself durable); on any failure the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (``_atomic_write``)."""
    with open(src, "rb") as g:
        _atomic_write(dst, lambda f: shutil.copyfileobj(g, f, 1 << 24))


class ResumableModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose best checkpoint survives resuming into another folder.

    ``train.py ckpt_path=.../last.ckpt`` resumes into a new Hydra run folder. Lightning's ``ModelCheckpoint``
    then forgets the best score (its state is kept only when the folder is the same), so the resumed run's
    "best" was picked among the epochs after the resume, and the final test could miss a better
    checkpoint of the killed run. Here the killed run's best checkpoint is copied into the new folder
    (atomically, by global rank 0) and its score restored, so "best" means best over the whole training.
    If that file is gone, the score is dropped as well: the next validation saves a new best.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # "the dirpath has changed ... won't be reloaded": handled below
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        old_dir = state_dict.get("dirpath")
        if old_dir is None or self.dirpath is None or Path(old_dir).resolve() == Path(self.dirpath).resolve():
            return
        old_best, score = state_dict.get("best_model_path") or "", state_dict.get("best_model_score")
        if not old_best or score is None or not Path(old_best).is_file():
            self.best_model_path = ""  # not the other folder's file: the next validation picks a best
            return
        new_best = Path(self.dirpath) / Path(old_best).name
        if rank_zero_only.rank == 0:
            atomic_copy(Path(old_best), new_best)
        self.best_model_path = self.kth_best_model_path = str(new_best)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(new_best): score}


class SigtermCheckpoint(Callback):
    """Save the training state to ``path`` when SIGTERM stops ``fit`` (a scheduler's preemption, ``timeout``,
    ``kill``), so ``ckpt_path=<path>`` resumes at the step where it stopped, not at the last validation.

    Lightning turns SIGTERM into ``SIGTERMException`` at the next batch boundary, on every rank at the same
    step (it broadcasts rank 0's flag), and calls ``on_exception`` before tearing down; the save goes through
    the trainer, so it is atomic (``AtomicCheckpointIO``) and works under DDP.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.saved_step: int | None = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING:
            trainer.save_checkpoint(self.path)
            self.saved_step = trainer.global_step
