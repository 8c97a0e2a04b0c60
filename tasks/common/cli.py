"""What ``train.py`` and the inference commands (``python -m tasks.<task>.<command>``) share: which
exceptions are the project's own message for the user, how a command reports one, and the options every
command reads the same way (``device=``, the weights of a checkpoint and its model card).

A bad option, file or checkpoint is one line ``error: <message>`` on standard error and exit status 2;
``HYDRA_FULL_ERROR=1`` (the variable Hydra reads for ``train.py``) shows its traceback instead. Any other
exception -- a bug, or an error raised inside a library -- keeps its traceback. Light: no torch at import.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: exceptions that, raised from this project's own code, are a message for the user, not a crash
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError)
REPO = Path(__file__).resolve().parents[2]


def full_error() -> bool:
    """``HYDRA_FULL_ERROR=1``: show the traceback of the project's own errors too."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def raised_by_us(err: BaseException) -> bool:
    """Whether ``err`` was raised in this project's code (not in a library it calls)."""
    frames = traceback.extract_tb(err.__traceback__)
    return (
        bool(frames)
        and Path(frames[-1].filename).resolve().is_relative_to(REPO)
        and (".venv" not in Path(frames[-1].filename).parts)
    )


def is_user_error(err: BaseException) -> bool:
    """``err`` is one of :data:`USER_ERRORS` raised by the project's own checks, to be shown as one line
    (never under ``HYDRA_FULL_ERROR=1``)."""
    return isinstance(err, USER_ERRORS) and raised_by_us(err) and not full_error()


def run_command(main: Callable[[], int]) -> int:
    """Run an inference command's ``main`` as ``python -m`` does: its exit status; a usage error it raised
    as ``SystemExit("error: ...")`` or one of the project's own errors is one line on standard error and
    status 2; anything else propagates with its traceback."""
    try:
        return main()
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        print(stop.code, file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        if not is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def device(value: str) -> torch.device:
    """The ``device=`` option as a ``torch.device``; an unknown name or an absent GPU raises one line."""
    import torch

    try:
        dev = torch.device(value)
    except RuntimeError:
        raise ValueError(f"device={value!r} is not a device; pass device=cpu or device=cuda") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={value} but no CUDA GPU is visible here; pass device=cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device={value} but only {count} CUDA GPU(s) are visible; pass device=cuda:0")
    elif dev.type != "cpu":
        raise ValueError(f"device={value!r} is not supported here; pass device=cpu or device=cuda")
    return dev


def load_weights(model: torch.nn.Module, state: dict[str, Any], ckpt: Path, card: Path) -> None:
    """The weights of checkpoint ``state`` (from ``ckpt``) into ``model`` (built from model card ``card``);
    a checkpoint and card of different runs raise one line naming both files."""
    from tasks.common.checkpoint import model_state_dict

    try:
        model.load_state_dict(model_state_dict(state))
    except RuntimeError as err:  # missing / unexpected keys, other shapes: the card is of another run
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else ""  # after "Error(s) in loading"
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise ValueError(
            f"checkpoint {ckpt} does not fit the model card {card} ({detail}); pass the checkpoint and the "
            "card of the same run (the card train.py wrote into that run's folder)"
        ) from err
