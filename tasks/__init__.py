"""Task packages: one folder ``tasks/<name>/`` per task, built by ``train.py`` from ``conf/task/<name>.yaml``.

Adding a task is one folder here plus one config file; nothing else changes. Importing ``tasks`` imports no
task: a run of ``task=vision`` never loads translation's code.
"""

from tasks.base import RunContext, Task

__all__ = ["RunContext", "Task"]
