"""Diagnostic (H100, 2026-11-24): does a torch.profiler session slow every later kernel launch of the
process?  ``bench/attention.py`` profiles each table's rows (GPU kernel time) after timing them, so every
table after the first is timed after a profile.  Prints the host time per call (``bench.attention.host_us``,
median of 40) of F.sdpa and ``mha.attention`` at (16,12,197,64) bf16 forward, before and after one profile,
and after a second, in this process, with ``TEARDOWN_CUPTI=0`` (what this PyTorch did without the variable);
then re-runs itself with ``TEARDOWN_CUPTI=1`` (Kineto's switch to finalize CUPTI when a profile ends).
Run from the repository root on a CUDA machine:
``python bench/diag_profiler_residue.py``.
"""

import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TEARDOWN_CUPTI", "0")  # first Kineto's default here, then (re-run) the switch on

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mha  # noqa: E402
from bench.attention import gpu_ms, host_us  # noqa: E402


def stage(tag: str, rows: dict) -> None:
    with torch.no_grad():
        for fn in rows.values():
            fn()
        res = {n: statistics.median(host_us(fn) for _ in range(40)) for n, fn in rows.items()}
    print(f"  {tag:22s} " + " | ".join(f"{n} {us:6.1f} us" for n, us in res.items()), flush=True)


def main() -> None:
    q, k, v = (torch.randn(16, 12, 197, 64, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    sdpa = F.scaled_dot_product_attention
    rows = {"F.sdpa": lambda: sdpa(q, k, v), "ours": lambda: mha.attention(q, k, v)}
    print(f"TEARDOWN_CUPTI={os.environ.get('TEARDOWN_CUPTI')}", flush=True)
    stage("start", rows)
    stage("start again", rows)
    with torch.no_grad():
        gpu_ms(rows["F.sdpa"])
    stage("after one profile", rows)
    with torch.no_grad():
        gpu_ms(rows["ours"])
    stage("after a second", rows)


if __name__ == "__main__":
    main()
    if os.environ["TEARDOWN_CUPTI"] == "0":
        subprocess.run([sys.executable, __file__], env={**os.environ, "TEARDOWN_CUPTI": "1"}, check=True)
