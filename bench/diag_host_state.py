"""Diagnostic (H100, 2026-11-24): host time per call at (16,12,197,64) forward, F.sdpa against a minimal
keyed plan (``bench/host_overhead.py``) and ``mha.attention``, after each thing ``bench/attention.py`` does
in its process: a torch.profiler session, compiling and running FlexAttention, the forced-backend rows, and
with the garbage collector frozen / disabled.

Asked: does anything in that process (a profile hook, dynamo's frame hook, GC) make Python calls slower?
Output: docs/results/host_state_diag_h100_2026-11-24_session8.log.  Run from the repository root on a CUDA
machine: ``python bench/diag_host_state.py``.
"""

import gc
import statistics
import sys
import timeit
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mha  # noqa: E402
from bench.attention import _sdpa_forced, gpu_ms, host_us  # noqa: E402
from bench.host_overhead import entry_points  # noqa: E402


def _three_nested() -> None:
    return _two_nested()


def _two_nested() -> None:
    return _one()


def _one() -> None:
    return None


def report(tag: str, rows: dict) -> None:
    with torch.no_grad():
        for fn in rows.values():
            fn()
            fn()
        res: dict[str, list[float]] = {n: [] for n in rows}
        for _ in range(40):
            for n, fn in rows.items():
                res[n].append(host_us(fn))
    nested = min(timeit.repeat(_three_nested, number=20000, repeat=5)) / 20000 * 1e6
    mon = [sys.monitoring.get_tool(i) for i in range(6)] if hasattr(sys, "monitoring") else None
    med = {n: statistics.median(x) for n, x in res.items()}
    print(
        f"{tag:28s} nested3 {nested:.3f} us | "
        + " | ".join(f"{n} {m:.1f}" for n, m in med.items())
        + f" | ours-sdpa {med['ours'] - med['F.sdpa']:.1f} keyed-sdpa {med['keyed'] - med['F.sdpa']:.1f}"
        + f" | profile={sys.getprofile()} trace={sys.gettrace()} monitoring={mon}"
        + f" gc={gc.get_count()} objs={len(gc.get_objects())}",
        flush=True,
    )


def main() -> None:
    q, k, v = (torch.randn(16, 12, 197, 64, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    sdpa = F.scaled_dot_product_attention
    keyed = entry_points()["keyed plan, no validation"]
    rows = {
        "F.sdpa": lambda: sdpa(q, k, v, is_causal=False),
        "keyed": lambda: keyed(q, k, v, is_causal=False),
        "ours": lambda: mha.attention(q, k, v, is_causal=False),
    }
    print(sys.version)
    report("start", rows)
    report("start again", rows)
    with torch.no_grad():
        gpu_ms(rows["F.sdpa"])
    report("after profiler", rows)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    with torch.no_grad():
        for _ in range(5):
            flex(q, k, v)
    torch.cuda.synchronize()
    report("after flex compile + calls", rows)
    with torch.no_grad():
        for backend in ("cudnn", "flash", "efficient", "math"):
            for _ in range(5):
                _sdpa_forced(q, k, v, False, backend)
    report("after forced rows", rows)
    gc.collect()
    gc.freeze()
    report("after gc.freeze", rows)
    gc.disable()
    report("gc disabled", rows)


if __name__ == "__main__":
    main()
