"""How much host time a Python entry point in front of ``F.scaled_dot_product_attention`` costs, measured
against SDPA itself in the same process, at the shapes where the host (not the GPU) is the bottleneck.

    python bench/host_overhead.py                          # vit, 1k, 1k-causal; fwd and fwd+bwd
    python bench/host_overhead.py --shapes vit --modes fwd --json out.json
    python bench/host_overhead.py --device cpu --shapes tiny --samples 2   # smoke run (numbers meaningless)

Rows, each a call on the same q/k/v (``(batch, heads, seq, head_dim)``, bf16), timed interleaved exactly as
``bench/attention.py`` times its tables (``--samples`` passes, one ~10 ms sample of every row per pass, order
shuffled; ``wall us`` = the median sample, ``host us`` = the host's time to issue one call):

* ``F.sdpa``: ``F.scaled_dot_product_attention(q, k, v, is_causal=...)``, the reference.
* ``F.sdpa again (A/A)``: the same call as a second row: the spread of the method itself.  A ratio of
  another row inside this row's band is noise, not cost.
* ``pass-through wrapper``: a Python function with ``mha.attention``'s signature that calls SDPA and does
  nothing else: the least any Python entry point costs.
* ``keyed plan, no validation``: the least a Python entry point that picks a kernel per call signature
  costs: the ``auto`` conditions, a compile/force check and one dict look-up keyed by shapes, dtype,
  device, causality and grad mode, then SDPA.  No input validation, no per-layout check, no kernel report.
* ``ours (mha.attention)``: the real thing (validated once per signature, then its remembered plan).

``paired vs F.sdpa``: F.sdpa's sample over the row's sample within the same pass (median, quartiles);
below 1 the row is slower.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.attention as ba  # noqa: E402
import mha  # noqa: E402

SHAPES = {k: ba.SHAPES[k] for k in ("vit", "1k", "1k-causal", "tiny")}


def entry_points() -> dict[str, Callable]:
    """The two Python entry points of the floor: a bare pass-through and a minimal keyed plan."""
    sdpa = F.scaled_dot_product_attention

    def pass_through(
        q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
        block_mask=None, backend="auto", return_weights=False,
    ):  # fmt: skip
        return sdpa(q, k, v, is_causal=is_causal)

    plans: dict[tuple, Callable] = {}
    state = {"last": None, "forced": None}

    def keyed_plan(
        q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
        block_mask=None, backend="auto", return_weights=False,
    ):  # fmt: skip
        plannable = (
            mask is None
            and backend == "auto"
            and not dropout_p
            and score_mod is None
            and block_mask is None
            and not return_weights
            and state["forced"] is None
            and not torch.compiler.is_compiling()
        )
        grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
        key = (q.shape, k.shape, v.shape, q.dtype, q.device, is_causal, grad)
        plan = plans.get(key) if plannable else None
        if plan is None:  # the first call of a signature: what a real entry point would validate and decide
            plan = plans[key] = sdpa
        state["last"] = "sdpa"
        return plan(q, k, v, is_causal=is_causal)

    return {"pass-through wrapper": pass_through, "keyed plan, no validation": keyed_plan}


def rows(shape: tuple, backward: bool) -> list[dict]:
    b, h, n, d, causal = shape
    q, k, v = (
        torch.randn(b, h, n, d, device=ba.DEVICE, dtype=ba.DTYPE, requires_grad=backward) for _ in "qkv"
    )
    grad = torch.randn_like(q)
    sdpa = F.scaled_dot_product_attention
    wrappers = entry_points()
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "F.sdpa": lambda: sdpa(q, k, v, is_causal=causal),
        "F.sdpa again (A/A)": lambda: sdpa(q, k, v, is_causal=causal),
        **{name: (lambda w=w: w(q, k, v, is_causal=causal)) for name, w in wrappers.items()},
        "ours (mha.attention)": lambda: mha.attention(q, k, v, is_causal=causal),
    }
    timed = ba.time_rows(fns, grad if backward else None)
    ref = timed["F.sdpa"]
    out = []
    for name in fns:
        t = timed[name]
        row = {"name": name, "wall_us": None, "host_us": t.get("host_us"), "gpu_ms": t["gpu_ms"]}
        if isinstance(t["ms"], float):
            row["wall_us"] = t["ms"] * 1e3
            if name != "F.sdpa" and isinstance(ref["ms"], float):
                row["paired"] = ba.paired_ratio(ref["samples"], t["samples"])
        row["same_kernels_as_sdpa"] = bool(t["kernels"]) and t["kernels"] == ref["kernels"]
        if name.startswith("ours"):
            row["backend"] = t["backend"]
        out.append(row)
    return out


def markdown(results: list[dict]) -> str:
    lines = [
        "| shape (B,H,N,D) | causal | pass | row | wall us | host us | paired vs F.sdpa (IQR) "
        "| same kernels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        b, h, n, d, causal = res["shape"]
        for row in res["rows"]:
            paired = row.get("paired")
            cells = [
                f"({b}, {h}, {n}, {d})",
                str(causal),
                res["pass"],
                row["name"],
                ba.fmt(row["wall_us"], ".1f"),
                ba.fmt(row["host_us"], ".1f"),
                "-" if paired is None else f"{paired[0]:.3f} ({paired[1]:.3f}-{paired[2]:.3f})",
                "yes" if row["same_kernels_as_sdpa"] else ("-" if ba.DEVICE != "cuda" else "no"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="vit,1k,1k-causal", help=f"comma list of {list(SHAPES)}")
    parser.add_argument("--modes", default="fwd,fwdbwd", help="comma list of fwd, fwdbwd")
    parser.add_argument("--samples", type=int, default=24, help="interleaved passes (one sample per row)")
    parser.add_argument("--json", type=Path, help="also dump the raw results as JSON")
    parser.add_argument("--device", default="cuda", help="cuda (benchmark) or cpu (smoke run of the script)")
    args = parser.parse_args()
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/host_overhead.py needs a CUDA GPU (or --device cpu --shapes tiny)")
    ba.DEVICE, ba.SAMPLES, ba.GPU_ROUNDS = args.device, max(1, args.samples), 1
    meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "torch": torch.__version__,
        "date": str(datetime.date.today()),
        "command": "python bench/host_overhead.py " + " ".join(sys.argv[1:]),
    }
    print(f"- {meta['date']}: {meta['device']}, torch {meta['torch']}, bf16, `{meta['command']}`\n")
    results = []
    for shape_name in args.shapes.split(","):
        for mode in args.modes.split(","):
            shape = SHAPES[shape_name]
            res = {"shape": shape, "pass": mode, "rows": rows(shape, mode == "fwdbwd")}
            results.append(res)
            print(markdown([res]).split("\n", 2)[2], flush=True)
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))
    print("\n" + markdown(results))


if __name__ == "__main__":
    main()
