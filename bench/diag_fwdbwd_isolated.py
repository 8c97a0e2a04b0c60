"""Diagnostic (H100, 2026-11-24): forward and forward+backward of F.sdpa, F.sdpa again (A/A), the cuDNN op
called directly and ``mha.attention``, in a process that runs nothing else, rows interleaved (rotated).

Asked: is ours' fwd+bwd deficit in ``bench/attention.py`` (0.68-0.79x at (8,16,1024,64) causal when its
rows were rotated, so ours always ran right after the textbook formula) a cost of ours?  It also counts the
calls that took the slow path (validation) during timing.  Output: docs/results/
fwdbwd_isolated_diag_h100_2026-11-24_session8.log.  Run from the repository root on a CUDA machine:
``python bench/diag_fwdbwd_isolated.py``.
"""

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mha  # noqa: E402
from bench.attention import calibrate, host_us, sample_ms  # noqa: E402
from mha import functional as fn_  # noqa: E402

SLOW_CALLS = [0]
_check_inputs = fn_._check_inputs


def _counting(*args, **kwargs):
    SLOW_CALLS[0] += 1
    return _check_inputs(*args, **kwargs)


def measure(shape: tuple, causal: bool) -> None:
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    g = torch.randn_like(q)
    sdpa = F.scaled_dot_product_attention
    fwd = {
        "F.sdpa": lambda: sdpa(q, k, v, is_causal=causal),
        "F.sdpa (A/A)": lambda: sdpa(q, k, v, is_causal=causal),
        "cudnn op": lambda: torch._scaled_dot_product_cudnn_attention(
            q, k, v, None, True, 0.0, causal, False
        )[0],
        "ours": lambda: mha.attention(q, k, v, is_causal=causal),
    }
    rows = {f"{n} fwd": f for n, f in fwd.items()}
    rows.update({f"{n} fwd+bwd": (lambda f=f: f().backward(g)) for n, f in fwd.items()})
    for f in rows.values():
        f()
        f()
    SLOW_CALLS[0] = 0
    reps = {n: calibrate(f) for n, f in rows.items()}
    hs: dict[str, list[float]] = {n: [] for n in rows}
    ws: dict[str, list[float]] = {n: [] for n in rows}
    names = list(rows)
    for p in range(24):
        for n in names[p % len(names) :] + names[: p % len(names)]:
            hs[n].append(host_us(rows[n]))
            ws[n].append(sample_ms(rows[n], reps[n]) * 1e3)
    tag = "causal" if causal else ""
    print(shape, tag, "backend", mha.last_backend(), "slow-path calls during timing:", SLOW_CALLS[0])
    for n in names:
        ref = "F.sdpa fwd" if n.endswith(" fwd") else "F.sdpa fwd+bwd"
        pr = sorted(a / b for a, b in zip(ws[ref], ws[n], strict=True))
        q1, q2, q3 = pr[len(pr) // 4], pr[len(pr) // 2], pr[3 * len(pr) // 4]
        print(
            f"   {n:22s} host {statistics.median(hs[n]):7.1f} us  wall {statistics.median(ws[n]):7.1f} us  "
            f"paired vs F.sdpa {q2:.3f} ({q1:.3f}-{q3:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    fn_._check_inputs = _counting
    for shape, causal in [((8, 16, 1024, 64), True), ((8, 16, 1024, 64), False), ((16, 12, 197, 64), False)]:
        measure(shape, causal)
