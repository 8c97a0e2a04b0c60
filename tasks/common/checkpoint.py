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
    If that file is gone, the score is dropped as well: the next validation saves a new best. Only a best
    checkpoint beside the resumed one (``resume_from``: the ``ckpt_path`` given) is copied, never a file from
    elsewhere that a path stored in the checkpoint names.
    """

    def __init__(self, *args: Any, resume_from: str | os.PathLike | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_from = Path(resume_from) if resume_from is not None else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # "the dirpath has changed ... won't be reloaded": handled below
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)
        old_dir = state_dict.get("dirpath")
        if old_dir is None or self.dirpath is None or Path(old_dir).resolve() == Path(self.dirpath).resolve():
            return
        old_best, score = state_dict.get("best_model_path") or "", state_dict.get("best_model_score")
        beside = (
            self.resume_from is None or Path(old_best).parent.resolve() == self.resume_from.parent.resolve()
        )
        if not old_best or score is None or not beside or not Path(old_best).is_file():
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


#: key of a train.py checkpoint that records which task and model configuration wrote it
TASK_KEY = "mha_suite"


def load_checkpoint(path: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by ``train.py`` without running any code from it (``weights_only=True``).

    Args:
        path: the ``.ckpt`` file.
        task: the task that should have written it; another task's checkpoint raises, naming both.

    Returns:
        The checkpoint dict: ``state_dict`` (model weights under ``model.``) and ``checkpoint[TASK_KEY]``
        (``task``: the task's name, ``model``: its ``task.model`` config) besides Lightning's own keys.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable checkpoint (truncated, another format), or another task's.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass e.g. <run>/checkpoints/best.ckpt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated zip, a text file, a pickle with code in it
        first = str(err).splitlines()[0] if str(err) else ""
        why = "refused by weights_only" if "Weights only load failed" in first else first[:160]
        raise ValueError(
            f"checkpoint {path} cannot be read safely ({type(err).__name__}: {why}); it is truncated, not a "
            "checkpoint, or holds objects other than tensors and plain values (no code is run from a file)."
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a checkpoint written by train.py (no state_dict in it).")
    written_by = (state.get(TASK_KEY) or {}).get("task")
    if task is not None and written_by is not None and written_by != task:
        raise ValueError(
            f"checkpoint {path} was written by task={written_by}, not task={task}; "
            f"pass a checkpoint of task={task}."
        )
    return state


def rng_state() -> dict[str, Any]:
    """The random generators' states as tensors and plain values (loadable with ``weights_only=True``):
    Python's, NumPy's, torch's CPU and (when in use) CUDA generators."""
    import random

    import numpy as np

    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (the CUDA states only onto as many devices as there are)."""
    import random

    import numpy as np

    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _tuples(value: Any) -> Any:
    """Lists back to tuples (``random.setstate`` wants the tuple ``getstate`` gave)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def read_model_card(
    ckpt: str | os.PathLike, filename: str, task: str, given: str | os.PathLike | None = None
):
    """The model card ``filename`` (JSON: what rebuilding the model needs) that ``train.py task=<task>``
    wrote into the run folder of ``ckpt``: ``given`` if set, else the first found in the checkpoint's folder,
    its parent or grandparent. Returns ``(card dict, its path)``; a missing card raises, naming the fix."""
    import json

    ckpt = Path(ckpt).expanduser()
    if given is not None:
        candidates = [Path(given).expanduser()]
    else:
        candidates = [
            folder / filename for folder in (ckpt.parent, ckpt.parent.parent, ckpt.parent.parent.parent)
        ]
    for path in candidates:
        if path.is_file():
            try:
                card = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(
                    f"model card {path} is not valid JSON ({err}); it is written by train.py task={task}: "
                    "restore it from the run folder or retrain"
                ) from None
            if not isinstance(card, dict):
                raise ValueError(f"model card {path} holds {type(card).__name__}, expected a JSON object")
            return card, path
    raise FileNotFoundError(
        f"no {filename} at {', '.join(map(str, candidates))}; train.py task={task} writes it into the run "
        "folder of the checkpoint: pass that folder's checkpoint, or the card's path"
    )


def model_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights from a ``train.py`` checkpoint (keys without the ``model.`` prefix; a compiled
    model's ``_orig_mod.`` is dropped too)."""
    out = {}
    for key, value in state["state_dict"].items():
        if key.startswith("model."):
            out[key.removeprefix("model.").replace("_orig_mod.", "", 1)] = value
    return out


def check_checkpoint_matches(state: dict[str, Any], task: str, model_cfg: dict[str, Any], path: Any) -> None:
    """Raise one clear line when checkpoint ``state`` was written by another task or another model
    configuration than the run loading it (otherwise Lightning lists every mismatched tensor)."""
    record = state.get(TASK_KEY)
    if not record:
        return  # written before checkpoints recorded their task: let the weights decide
    if record.get("task") != task:
        raise ValueError(
            f"ckpt_path={path} was written by task={record.get('task')}; this run is task={task}. "
            f"Pass task={record.get('task')}, or a checkpoint of task={task}."
        )
    saved = record.get("model") or {}
    diff = sorted(k for k in set(saved) | set(model_cfg) if saved.get(k) != model_cfg.get(k))
    if diff:
        shown = ", ".join(
            f"task.model.{k}={saved.get(k)!r} (this run: {model_cfg.get(k)!r})" for k in diff[:4]
        )
        raise ValueError(
            f"ckpt_path={path} was written with other model settings: {shown}. Resume with the same "
            "task.model overrides as the run that wrote it."
        )
