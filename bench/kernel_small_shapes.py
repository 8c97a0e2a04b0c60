#!/usr/bin/env python
"""GPU kernel time and wall time of each SDPA backend, and of ``mha.attention``, at small (host-bound) shapes.

For each shape, forward and forward+backward: SDPA's default choice, each of flash / memory-efficient / cuDNN
with only that backend enabled (flags set around the timing, not per call), and ``mha.attention``
(``auto``). Prints ``(GPU ms, wall ms, host ms)`` per row (host: the time to issue one call), using
``bench/attention.py``'s timers. Needs a CUDA GPU.

    python bench/kernel_small_shapes.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mha  # noqa: E402
from bench.attention import gpu_ms, host_us, time_ms  # noqa: E402
from mha.functional import _SDPA_FLAGS  # noqa: E402

SHAPES = [
    (16, 12, 197, 64),
    (8, 12, 197, 64),
    (32, 12, 197, 64),
    (16, 6, 197, 64),
    (64, 4, 64, 64),
    (16, 12, 256, 64),
    (16, 4, 64, 64),
]


def only(name: str | None) -> None:
    """Enable SDPA backend ``name`` alone (``None``: all of them)."""
    for backend, (_, enable) in _SDPA_FLAGS.items():
        enable(name is None or backend == name)


def timed(step) -> tuple[float, float, float]:
    return round(gpu_ms(step)[0], 4), round(time_ms(step), 4), round(host_us(step) * 1e-3, 4)


def measure(shape: tuple[int, int, int, int], backward: bool) -> dict[str, object]:
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    g = torch.randn_like(q)
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    calls = {"default": (None, sdpa), **{n: (n, sdpa) for n in ("flash", "efficient", "cudnn")}}
    calls["ours"] = (None, lambda: mha.attention(q, k, v))
    rows: dict[str, object] = {}
    for name, (backend, fn) in calls.items():
        step = (lambda fn=fn: fn().backward(g)) if backward else fn
        only(backend)
        try:
            with torch.enable_grad() if backward else torch.no_grad():
                rows[name] = timed(step)
        except RuntimeError as err:
            rows[name] = str(err)[:40]
        finally:
            only(None)
    rows["ours backend"] = mha.last_backend()
    return rows


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/kernel_small_shapes.py needs a CUDA GPU")
    torch.manual_seed(0)
    for shape in SHAPES:
        for backward in (False, True):
            rows = measure(shape, backward)
            print(shape, "fwdbwd" if backward else "fwd", "(GPU ms, wall ms, host ms):", rows, flush=True)


if __name__ == "__main__":
    main()
