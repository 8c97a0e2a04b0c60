"""Task packages. Importing ``tasks`` registers every task found under ``tasks/<name>/task.py``.

Adding a task is one folder ``tasks/<name>/`` (with ``task.py`` using ``@register("<name>")``) plus one
``conf/task/<name>.yaml``; nothing else changes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tasks.base import TASKS, Task, get_task, register

__all__ = ["TASKS", "Task", "get_task", "register", "task_names"]

_NOT_TASKS = {"common"}


def _import_task_packages() -> None:
    here = Path(__file__).parent
    for task_file in sorted(here.glob("*/task.py")):
        if task_file.parent.name not in _NOT_TASKS:
            importlib.import_module(f"tasks.{task_file.parent.name}.task")


def task_names() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(TASKS)


_import_task_packages()
