"""Task packages: one folder ``tasks/<name>/`` per task, built by ``train.py`` from ``conf/task/<name>.yaml``.

Adding a task is one folder here plus one config file; nothing else changes. Importing ``tasks`` imports no
task (a run of ``task=vision`` never loads translation's code) and no Lightning: ``Task`` and
``RunContext`` (``tasks.base``) are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunContext", "Task"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tasks import base

        return getattr(base, name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
