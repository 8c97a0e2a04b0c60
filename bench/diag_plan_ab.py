"""Diagnostic (H100, 2026-11-24): A/B in one process of ``mha.attention`` as checked out against a copy of
``mha/`` from another commit, importable as package ``mha_old`` from ``.gpu/`` (``git archive 0379c1a mha |
tar x -C /tmp && cp -r /tmp/mha .gpu/mha_old``), next to F.sdpa, its A/A copy and the minimal keyed plan of
``bench/host_overhead.py``; rows timed as ``bench/attention.py`` times them.  Output of the run that compared
the one-kernel plan call before and after bfb7731 (since reverted):
docs/results/plan_call_ab_h100_2026-11-24_session8.log.  Run: ``python bench/diag_plan_ab.py [shape,...]``
(names from ``bench/attention.py``'s SHAPES; default ``1k-causal,1k,4k-causal``).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / ".gpu")]
import mha_old  # noqa: E402

import bench.attention as ba  # noqa: E402
import mha  # noqa: E402
from bench.host_overhead import entry_points  # noqa: E402


def measure(name: str, backward: bool) -> None:
    b, h, n, d, causal = ba.SHAPES[name]
    q, k, v = (
        torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=backward) for _ in "qkv"
    )
    g = torch.randn_like(q)
    keyed = entry_points()["keyed plan, no validation"]
    sdpa = F.scaled_dot_product_attention
    fns = {
        "F.sdpa": lambda: sdpa(q, k, v, is_causal=causal),
        "F.sdpa A/A": lambda: sdpa(q, k, v, is_causal=causal),
        "keyed plan": lambda: keyed(q, k, v, is_causal=causal),
        "ours before (mha_old)": lambda: mha_old.attention(q, k, v, is_causal=causal),
        "ours (mha)": lambda: mha.attention(q, k, v, is_causal=causal),
    }
    t = ba.time_rows(fns, g if backward else None)
    print(name, "fwdbwd" if backward else "fwd", "backend", mha.last_backend(), mha_old.last_backend())
    for r in fns:
        pr = ba.paired_ratio(t["F.sdpa"]["samples"], t[r]["samples"])
        pb = ba.paired_ratio(t["ours before (mha_old)"]["samples"], t[r]["samples"])
        print(
            f"   {r:24s} wall {t[r]['ms'] * 1e3:7.1f} us host {t[r]['host_us']:7.1f} us  "
            f"paired vs F.sdpa {pr[0]:.3f} ({pr[1]:.3f}-{pr[2]:.3f})  vs before {pb[0]:.3f} "
            f"({pb[1]:.3f}-{pb[2]:.3f})  same kernels {t[r]['kernels'] == t['F.sdpa']['kernels']}",
            flush=True,
        )


if __name__ == "__main__":
    ba.GPU_ROUNDS = 1
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["1k-causal", "1k", "4k-causal"]
    for shape_name in names:
        for backward in (False, True):
            measure(shape_name, backward)
