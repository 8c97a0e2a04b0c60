"""Wall-clock timing shared by the ``bench/`` scripts (``attention.py`` has its own CUDA-event timer)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def seconds_per_call(fn: Callable[[], object], calls: int = 1, device: str = "cuda") -> float:
    """Wall seconds per call of ``fn`` over ``calls`` back-to-back calls, the device drained before and
    after (so queued work of earlier calls is not counted, and this call's work is)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls
