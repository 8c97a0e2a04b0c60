"""What the tasks that read Hugging Face hub datasets (``datasets.load_dataset``) share: the one-line message
for a hub dataset that could not be loaded (vision, audio and translation data) and the
form of a hub dataset name."""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
#: a hub dataset name, ``name`` or ``owner/name`` (the config pre-check and the data modules test it)
HUB_NAME = r"[\w.-]+(/[\w.-]+)?"


def hub_failure(key: str, name: str, err: BaseException, local: str) -> str:
    """The one-line message for hub dataset ``name`` (set by config key ``key``) that ``datasets`` could not
    load (``err``): offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or without network it needs a
    datasets cache that holds it; ``local`` says how to use a local copy instead (a command fragment)."""
    offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "") not in ("", "0")]
    why = error_summary(err)
    return (
        f"{key}={name} could not be loaded ({' and '.join(offline) + ' set; ' if offline else ''}"
        f"{why}): the hub needs network access, or (with HF_HUB_OFFLINE=1) a datasets cache that already "
        f"holds {name}; without either, drop {key} and use a local copy: {local}"
    )


def error_summary(err: BaseException) -> str:
    """``Type: first line`` of ``err`` (160 characters at most), for a one-line message."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}"
