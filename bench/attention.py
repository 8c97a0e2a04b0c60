"""Benchmark the ``mha`` attention core against PyTorch SDPA backends, FlexAttention,
``nn.MultiheadAttention``, timm ``Attention`` and the textbook formula, on one CUDA GPU in bf16.

    python bench/attention.py                        # all shapes, fwd and fwd+bwd, prints markdown tables
    python bench/attention.py --write BENCHMARKS.md  # also (re)writes the attention section of BENCHMARKS.md
    python bench/attention.py --shapes vit --modes fwd --json out.json
    # within a 10-minute budget per command: split the shapes, merge into one table
    python bench/attention.py --shapes vit,1k,1k-causal --accumulate bench/attention_results.json \\
        --write BENCHMARKS.md
    python bench/attention.py --shapes 4k,4k-causal --accumulate bench/attention_results.json --write ...

Two tables:
* kernel level, ``(batch, heads, seq, head_dim)`` q/k/v: ours (``mha.attention``, backend ``auto``), ours
  again (an A/A control: the spread of a row against its own twin), SDPA's own default choice, each SDPA
  backend forced, FlexAttention compiled, the formula ``softmax(QK^T/sqrt(d))V`` written out.  Ratio =
  TFLOP/s over the best SDPA row.  Besides the square shapes, the calls the tasks make: a key-padding mask
  (``padded``: translation, recommendation; the additive mask ``mha.Encoder`` passes), grouped-query heads
  (``gqa``, with a row of SDPA on k/v repeated to every query head, which the kernels without GQA support
  need) and a one-query decode step against a KV cache (``decode``: beam search).  An SDPA row that beats
  ours by more than the A/A spread is where a choice of our own would pay.
* module level, ``(batch, seq, embed)`` with projections: ``mha.MultiHeadAttention``,
  ``nn.MultiheadAttention`` with default arguments (``need_weights=True``) and with ``need_weights=False``,
  timm ``Attention``.  Ratio = their time / our time (targets fwd+bwd: >= 1.5x nn default, >= 1.0x timm).
  With a key-padding mask, ours takes the bool mask as a user passes it (converted to an additive mask on
  every call), and a second row runs a layer of ``mha.Encoder``, which gets the mask converted once per
  forward (``sdpa_mask``), as timm's row gets its mask made outside the timed call.
FLOPs: attention ``4*B*H*N^2*D`` forward (halved when causal), backward 2.5x forward; modules add
``8*B*N*E^2`` forward for the projections (backward 2x). Timing: the rows of a table are timed interleaved
(``--samples`` passes, one ~10 ms sample of every row per pass, order shuffled, two untimed warm-up calls
before each sample), CUDA events around back-to-back calls; ``ms`` is the median sample: wall time with the
host running ahead, so Python and launch overhead count where the kernels are shorter than it, as at ViT
sizes. ``host us``: the host's time to issue one call (CPU clock, not waiting for the GPU): a row whose
``host us`` exceeds its ``GPU ms`` is host-bound and its ``ms`` measures dispatch, not the kernel. ``GPU ms``:
kernel time per call from torch.profiler, what the call costs once host time is hidden (CUDA graphs,
``torch.compile``, a queue kept full by bigger work). "paired vs X": the ratio sample by sample within a pass
(median and quartiles), so host drift cancels.
``--device cpu --shapes tiny,tiny-masked`` is a smoke run of the script itself (numbers meaningless).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

# Kineto leaves CUPTI attached after a profile unless told to finalize it: every later kernel launch of the
# process then costs ~1.6-3x the host time (F.sdpa at ViT-B on an H100: 17-29 us before a profile, 28-54 us
# after).  The tables profile each shape after timing it, so without this every table but the first would be
# timed with slower launches.
os.environ.setdefault("TEARDOWN_CUPTI", "1")

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mha  # noqa: E402


class Shape(NamedTuple):
    """One benchmarked call: q ``(batch, heads, q_len, head_dim)``, k/v ``(batch, kv_heads, k_len,
    head_dim)``; ``padded``: a key-padding mask (random lengths from half to all of ``k_len``)."""

    batch: int
    heads: int
    kv_heads: int
    q_len: int
    k_len: int
    head_dim: int
    causal: bool = False
    padded: bool = False


SHAPES = {
    "vit": Shape(16, 12, 12, 197, 197, 64),  # ViT-B/16 at 224 px
    "1k": Shape(8, 16, 16, 1024, 1024, 64),
    "1k-causal": Shape(8, 16, 16, 1024, 1024, 64, causal=True),
    "4k": Shape(4, 16, 16, 4096, 4096, 128),
    "4k-causal": Shape(4, 16, 16, 4096, 4096, 128, causal=True),
    "16k-causal": Shape(2, 16, 16, 16384, 16384, 128, causal=True),
    "padded": Shape(64, 8, 8, 128, 128, 64, padded=True),  # translation / recommendation batches
    "gqa": Shape(8, 32, 8, 1024, 1024, 128, causal=True),  # 4 query heads per key/value head
    "decode": Shape(320, 8, 8, 1, 64, 64, causal=True),  # beam 5 x 64 sentences, one query, 64 cached keys
    "tiny": Shape(2, 2, 2, 16, 16, 8, causal=True),  # smoke tests of the script (not benchmarks)
    "tiny-masked": Shape(2, 4, 2, 8, 16, 8, causal=True, padded=True),
}
SMOKE = ("tiny", "tiny-masked")
DEVICE = "cuda"
SDPA = {
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}
DTYPE = torch.bfloat16
FLEX = True  # --no-flex: leave out the compiled FlexAttention row (it compiles per shape and pass)


def calibrate(fn: Callable[[], object], target_ms: float = 10.0) -> int:
    """Warm ``fn`` up and return how many back-to-back calls make one ~``target_ms`` timing sample."""
    for _ in range(3):
        fn()
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return max(1, min(200, int(target_ms * 1e-3 / max(time.perf_counter() - t0, 1e-6))))


def sample_ms(fn: Callable[[], object], reps: int) -> float:
    """Milliseconds per call over ``reps`` back-to-back calls between two CUDA events: wall time with the
    host running ahead, as in a training loop (Python overhead is hidden where the kernels are longer, and
    counts where they are not)."""
    if DEVICE == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1e3 / reps


def time_ms(fn: Callable[[], object], samples: int = 15) -> float:
    """Median of ``samples`` ~10 ms samples of ``fn`` alone (the tables interleave rows instead)."""
    reps = calibrate(fn)
    return statistics.median(sample_ms(fn, reps) for _ in range(samples))


def host_us(fn: Callable[[], object], calls: int = 10) -> float:
    """Host microseconds per call: ``calls`` calls issued onto an empty queue, timed on the CPU without
    waiting for the GPU (10 calls hold far fewer launches than the queue takes, so nothing blocks).  A
    host-bound row's ``ms`` is about this; a GPU-bound row's is its ``GPU ms``."""
    _sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - t0
    _sync()
    return elapsed / calls * 1e6


def gpu_ms(fn: Callable[[], object], iters: int = 10) -> tuple[float, frozenset[str]] | None:
    """GPU kernel time per call of ``fn`` in ms (torch.profiler, CUDA activity only), and the names of the
    kernels it launched: what the call costs the GPU once host time is off the critical path (CUDA graphs,
    ``torch.compile``, a queue kept full by bigger work).  ``None`` on CPU."""
    if DEVICE != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    # with TEARDOWN_CUPTI=1 Kineto finalizes CUPTI at the next CUDA runtime call after a profile; make that
    # call now (a process whose last CUDA call was a profile waited for it forever at exit)
    torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in events) / iters / 1e3, frozenset(e.key for e in events)


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _free() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def run_guarded(fn: Callable[[], float]) -> float | str:
    try:
        return fn()
    except torch.cuda.OutOfMemoryError:
        _free()
        return "OOM"
    except RuntimeError as err:  # a forced backend that cannot run this shape
        _free()
        return "n/a: " + str(err).splitlines()[0][:60]


def formula(q, k, v, mask, causal):
    """Attention written out: ``softmax(QK^T/sqrt(d) + mask) V`` with k/v repeated over query-head groups."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Lq, Lk)
    if mask is not None:
        scores = scores + mask
    if causal:
        scores = scores.masked_fill(~mha.causal_mask(q.shape[2], k.shape[2], device=q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def padding(shape: Shape) -> torch.Tensor | None:
    """``(batch, k_len)`` key-padding mask (``True`` = padding) for a ``padded`` shape, else ``None``."""
    if not shape.padded:
        return None
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(shape.k_len // 2, shape.k_len + 1, (shape.batch,), generator=g)
    return mha.padding_mask(lengths, shape.k_len).to(DEVICE)


def kernel_rows(shape: Shape, backward: bool) -> list[dict]:
    b, h, hkv, lq, lk, d, causal, _ = shape
    q = torch.randn(b, h, lq, d, device=DEVICE, dtype=DTYPE, requires_grad=backward)
    k, v = (torch.randn(b, hkv, lk, d, device=DEVICE, dtype=DTYPE, requires_grad=backward) for _ in "kv")
    grad = torch.randn_like(q)
    gqa = h != hkv
    kpm = padding(shape)
    mask = (
        None if kpm is None else mha.masks.key_padding_to_sdpa(kpm, DTYPE)
    )  # (B, 1, 1, Lk), what Encoder passes
    # what F.sdpa needs for the same result: its is_causal is top-left aligned and excludes a mask
    sdpa_causal = causal and lq == lk and mask is None
    sdpa_mask = mask
    if causal and lq > 1 and not sdpa_causal:
        sdpa_mask = mha.and_masks(mask, mha.causal_mask(lq, lk, device=DEVICE), DTYPE)
    sdpa_args = {"attn_mask": sdpa_mask, "is_causal": sdpa_causal}

    def repeated(fn: Callable) -> Callable[[], torch.Tensor]:  # k/v repeated to every query head first
        return lambda: fn(q, k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1), **sdpa_args)

    fns: dict[str, Callable[[], torch.Tensor]] = {
        "ours (auto)": lambda: mha.attention(q, k, v, mask=mask, is_causal=causal),
        "ours again (A/A)": lambda: mha.attention(q, k, v, mask=mask, is_causal=causal),
        "sdpa (default choice)": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **sdpa_args),
    }
    if gqa:
        fns["sdpa (default choice, k/v repeated)"] = repeated(F.scaled_dot_product_attention)
    for name, backend in SDPA.items():
        forced = _sdpa_forced(backend)
        if gqa and backend in ("CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):  # no GQA support: repeat k/v
            fns[name + " (k/v repeated)"] = repeated(forced)
        else:
            fns[name] = lambda forced=forced: forced(q, k, v, enable_gqa=gqa, **sdpa_args)
    if FLEX and DEVICE == "cuda" and mask is None and lq == lk:  # compiled Flex on CPU takes a minute
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
        causal_mod = lambda b_, h_, qi, ki: qi >= ki  # noqa: E731
        block_mask = create_block_mask(causal_mod, None, None, lq, lk, device=DEVICE) if causal else None
        fns["flex (compiled)"] = lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=gqa)
    fns["formula softmax(QK^T/sqrt(d))V"] = lambda: formula(q, k, v, sdpa_mask, sdpa_causal)

    timed = time_rows(fns, grad if backward else None)
    rows, outputs = [], {}
    for name, fn in fns.items():
        t = timed[name]
        row = {"name": name, "ms": t["ms"], "host_us": t.get("host_us"), "gpu_ms": t["gpu_ms"], "err": None}
        if name == "ours (auto)":
            row["backend"] = t["backend"]
        if isinstance(t["ms"], float) and name in ("ours (auto)", "sdpa (default choice)"):
            with torch.no_grad():
                outputs[name] = fn().float()
        rows.append(row)
        _free()
    if len(outputs) == 2:  # correctness guard: ours against SDPA's default
        rows[0]["err"] = (outputs["ours (auto)"] - outputs["sdpa (default choice)"]).abs().max().item()
    flops = 4 * b * h * lq * lk * d / (2 if causal and lq == lk else 1) * (3.5 if backward else 1.0)
    for row in rows:
        row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12 if isinstance(row["ms"], float) else None
    sdpa_rows = [r for r in rows if r["name"].startswith("sdpa") and r["tflops"]]
    best = max(sdpa_rows, key=lambda r: r["tflops"], default=None)
    best_gpu = min((r["gpu_ms"] for r in rows if r["name"].startswith("sdpa") and r["gpu_ms"]), default=None)
    for row in rows:
        row["ratio"] = row["tflops"] / best["tflops"] if best and row["tflops"] else None
        row["gpu_ratio"] = best_gpu / row["gpu_ms"] if best_gpu and row["gpu_ms"] else None
    ours = timed["ours (auto)"]
    if isinstance(ours["ms"], float):  # sample by sample, same pass (> 1: ours faster)
        refs = [r["name"] for r in ([best] if best else [])] + ["sdpa (default choice)", "ours again (A/A)"]
        rows[0]["paired"] = {
            ref: paired_ratio(timed[ref]["samples"], ours["samples"])
            for ref in dict.fromkeys(refs)
            if isinstance(timed[ref]["ms"], float)
        }
    # which SDPA rows launched exactly our kernels (a noise-free check of the choice itself)
    same = [r["name"] for r in rows[1:] if r["name"].startswith("sdpa") and timed[r["name"]]["kernels"]]
    rows[0]["same_kernels"] = [n for n in same if timed[n]["kernels"] == ours["kernels"]]
    return rows


def paired_ratio(ref: list[float], ours: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of ``ref / ours`` over the passes both rows ran (>1: ours faster)."""
    ratios = sorted(r / o for r, o in zip(ref, ours, strict=False))
    if len(ratios) < 4:
        m = statistics.median(ratios)
        return m, m, m
    q1, q2, q3 = statistics.quantiles(ratios, n=4)
    return q2, q1, q3


SAMPLES = 24
GPU_ROUNDS = 3


def time_rows(fns: dict[str, Callable[[], torch.Tensor]], grad: torch.Tensor | None) -> dict:
    """``{name: {"ms", "samples", "host_us", "gpu_ms", "kernels", "backend"}}``; ``ms`` is "OOM"/"n/a: ..."
    for a row that cannot run.

    The rows are timed interleaved: ``SAMPLES`` passes, each taking one ~10 ms sample of every row (the order
    shuffled per pass, warm-up calls before each), so drifts of clocks, host load and allocator state fall on
    all rows alike and rows can be compared sample by sample. ``ms`` is the median sample; ``host_us`` the
    median host time per call (``host_us``, one measurement per pass); ``GPU ms`` the least kernel time
    (torch.profiler) of ``GPU_ROUNDS`` interleaved profiles after the passes.
    """
    steps = {
        name: (lambda fn=fn: fn().backward(grad)) if grad is not None else fn for name, fn in fns.items()
    }
    mode = torch.enable_grad if grad is not None else torch.no_grad
    out: dict[str, dict] = {}
    reps: dict[str, int] = {}
    with mode():
        for name, step in steps.items():
            out[name] = {
                "ms": None,
                "samples": [],
                "host": [],
                "gpu_ms": None,
                "kernels": frozenset(),
                "backend": None,
            }
            got = run_guarded(lambda step=step: calibrate(step))
            if isinstance(got, str):  # OOM / unsupported: no further tries
                out[name]["ms"] = got
            else:
                reps[name] = got
            _free()
        live = list(reps)
        for p in range(SAMPLES):
            for name in _pass_order(live, p):
                if isinstance(out[name]["ms"], str):
                    continue
                step = steps[name]
                got = run_guarded(lambda step=step, n=reps[name]: _warm(step) or sample_ms(step, n))
                if isinstance(got, str):
                    out[name]["ms"] = got
                    _free()
                    continue
                out[name]["samples"].append(got)
                out[name]["host"].append(host_us(step))
        live = [name for name in live if not isinstance(out[name]["ms"], str)]
        for name in live:
            out[name]["ms"] = statistics.median(out[name]["samples"])
            out[name]["host_us"] = statistics.median(out[name]["host"])
        for r in range(GPU_ROUNDS):  # interleaved too; the least kernel time is kept (clocks vary ~5%)
            for name in _pass_order(live, r):
                row = out[name]
                gpu = run_guarded(lambda step=steps[name]: gpu_ms(step))
                if isinstance(gpu, tuple) and (row["gpu_ms"] is None or gpu[0] < row["gpu_ms"]):
                    row["gpu_ms"], row["kernels"] = gpu
                row["backend"] = mha.last_backend() if name.startswith("ours") else None
    return out


WARM_CALLS = 2


def _warm(step: Callable[[], object]) -> None:
    """A few untimed calls before a sample: the row before it (another kernel, other Python, other
    allocations) may have left the CPU caches and the allocator cold for this one."""
    for _ in range(WARM_CALLS):
        step()
    _sync()


def _pass_order(names: list[str], seed: int) -> list[str]:
    """``names`` shuffled for pass ``seed`` (reproducibly): no row always runs first, or always after the same
    row (a rotation would keep each row's predecessor fixed)."""
    order = list(names)
    random.Random(seed).shuffle(order)
    return order


def _sdpa_forced(backend: str) -> Callable[..., torch.Tensor]:
    """``F.scaled_dot_product_attention`` with only SDPA backend ``backend`` enabled (``sdpa_kernel``)."""

    def call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return F.scaled_dot_product_attention(q, k, v, **kwargs)

    return call


def module_rows(shape: Shape, backward: bool) -> list[dict] | None:
    """Self-attention modules on ``(batch, seq, embed)``; ``None`` for shapes the peers cannot run (GQA, a
    decode step)."""
    b, h, hkv, n, lk, d, causal, _ = shape
    if hkv != h or n != lk:
        return None
    e = h * d
    x = torch.randn(b, n, e, device=DEVICE, dtype=DTYPE, requires_grad=backward)
    grad = torch.randn_like(x)
    kpm = padding(shape)
    torch_mha = nn.MultiheadAttention(e, h, batch_first=True, device=DEVICE, dtype=DTYPE)
    ours = mha.MultiHeadAttention.from_torch(torch_mha)
    ours_again = copy.deepcopy(ours)  # an A/A control: the spread of a row against its own twin
    causal_mask = (
        nn.Transformer.generate_square_subsequent_mask(n, device=DEVICE, dtype=DTYPE) if causal else None
    )
    masks = {"attn_mask": causal_mask, "key_padding_mask": kpm, "is_causal": causal}
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "ours MultiHeadAttention": lambda: ours(x, key_padding_mask=kpm, is_causal=causal)[0],
        "ours again (A/A)": lambda: ours_again(x, key_padding_mask=kpm, is_causal=causal)[0],
    }
    if kpm is not None and not causal:  # a layer of mha.Encoder: the stack converts the mask once per forward
        encoder_mask = mha.masks.key_padding_to_sdpa(kpm, DTYPE)
        fns["ours, mask made once (Encoder layer)"] = lambda: ours(x, sdpa_mask=encoder_mask)[0]
    fns |= {
        "nn.MultiheadAttention (default)": lambda: torch_mha(x, x, x, **masks)[0],
        "nn.MultiheadAttention need_weights=False": lambda: torch_mha(x, x, x, need_weights=False, **masks)[
            0
        ],
    }
    try:
        from timm.layers import Attention

        timm_attn = Attention(e, h, qkv_bias=True).to(DEVICE, DTYPE)
        if kpm is None:
            fns["timm Attention"] = lambda: timm_attn(x, is_causal=causal)
        elif not causal:  # timm takes an SDPA-convention mask (True = may attend)
            allowed = ~kpm[:, None, None, :]
            fns["timm Attention"] = lambda: timm_attn(x, attn_mask=allowed)
    except ImportError:
        pass
    timed = time_rows(fns, grad if backward else None)
    reference = "nn.MultiheadAttention need_weights=False"
    rows = []
    for name in fns:
        t = timed[name]
        row = {"name": name, "ms": t["ms"], "host_us": t.get("host_us"), "gpu_ms": t["gpu_ms"], "err": None}
        if name == "ours MultiHeadAttention":
            row["backend"] = t["backend"]
        elif isinstance(t["ms"], float) and isinstance(timed["ours MultiHeadAttention"]["ms"], float):
            mine = timed["ours MultiHeadAttention"]
            row["paired"] = {"ours": paired_ratio(t["samples"], mine["samples"])}
            row["same_kernels_as_ours"] = bool(t["kernels"]) and t["kernels"] == mine["kernels"]
        rows.append(row)
    if all(isinstance(timed[name]["ms"], float) for name in ("ours MultiHeadAttention", reference)):
        with torch.no_grad():
            diff = fns["ours MultiHeadAttention"]().float() - fns[reference]().float()  # correctness guard
        rows[0]["err"] = diff.abs().max().item()
    attn = 4 * b * h * n * n * d / (2 if causal else 1) * (3.5 if backward else 1.0)
    flops = attn + 8 * b * n * e * e * (3 if backward else 1)
    ours_ms, ours_gpu = rows[0]["ms"], rows[0]["gpu_ms"]
    for row in rows:
        ok = isinstance(row["ms"], float)
        row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12 if ok else None
        row["ratio"] = row["ms"] / ours_ms if ok and isinstance(ours_ms, float) else None  # speed-up of ours
        row["gpu_ratio"] = row["gpu_ms"] / ours_gpu if row["gpu_ms"] and ours_gpu else None
    return rows


def fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def describe(shape: Shape) -> str:
    """``(B,H,N,D)``, with ``H/Hkv`` for GQA, ``Lq->Lk`` for unequal lengths and ``padded``."""
    heads = f"{shape.heads}" if shape.heads == shape.kv_heads else f"{shape.heads}/{shape.kv_heads}"
    seq = f"{shape.q_len}" if shape.q_len == shape.k_len else f"{shape.q_len}->{shape.k_len}"
    return f"({shape.batch},{heads},{seq},{shape.head_dim})" + (" padded" if shape.padded else "")


def markdown(results: list[dict]) -> str:
    lines = [
        "| shape | causal | pass | row | ms | TFLOP/s | ratio | host us | GPU ms | GPU ratio | note |",
        "|" + "---|" * 11,
    ]
    for res in results:
        for row in res["rows"]:
            note = row.get("backend") or ""
            if row.get("same_kernels"):
                note += " (same kernels as " + ", ".join(row["same_kernels"]) + ")"
            ms = row["ms"]
            if isinstance(ms, str) and ms.startswith("n/a: "):
                note, ms = note + ms[5:], "n/a"
            if row.get("same_kernels_as_ours"):
                note += " (same kernels as ours)"
            for ref, (med, lo, hi) in (row.get("paired") or {}).items():
                note += f" paired vs {ref}: {med:.2f} (IQR {lo:.2f}-{hi:.2f})"
            if row.get("err") is not None:
                ref = "sdpa default" if res["level"] == "kernel" else "nn need_weights=False"
                note += f" max err vs {ref} {row['err']:.1e}"
            shape = Shape(*res["dims"])
            cells = [
                f"{res['shape']} {describe(shape)}",
                shape.causal,
                res["pass"],
                row["name"],
                fmt(ms, ".3f"),
            ]
            cells += [fmt(row["tflops"], ".1f"), fmt(row["ratio"], ".2f")]
            cells += [fmt(row.get("host_us"), ".1f"), fmt(row.get("gpu_ms"), ".3f")]
            cells += [fmt(row.get("gpu_ratio"), ".2f"), note.strip()]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    start, end = "<!-- bench/attention.py:start -->", "<!-- bench/attention.py:end -->"
    block = f"{start}\n{text}\n{end}"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main() -> None:
    global DEVICE, SAMPLES, FLEX
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes",
        default=",".join(s for s in SHAPES if s not in SMOKE),
        help=f"comma list of {list(SHAPES)}",
    )
    parser.add_argument("--modes", default="fwd,fwdbwd", help="comma list of fwd, fwdbwd")
    parser.add_argument("--levels", default="kernel,module", help="comma list of kernel, module")
    parser.add_argument("--write", type=Path, help="markdown file whose attention section is (re)written")
    parser.add_argument("--json", type=Path, help="also dump this run's raw results as JSON")
    parser.add_argument(
        "--accumulate",
        type=Path,
        help="JSON store merged across runs (same level/shape/pass replaced), so several shorter runs "
        "build one table, e.g. bench/attention_results.json",
    )
    parser.add_argument("--device", default="cuda", help="cuda (benchmark) or cpu (smoke run of the script)")
    parser.add_argument(
        "--samples",
        type=int,
        default=SAMPLES,
        help="interleaved timing passes (one ~10 ms sample of every row each); ms = the median sample",
    )
    parser.add_argument("--no-flex", action="store_true", help="leave out the compiled FlexAttention row")
    args = parser.parse_args()
    DEVICE = args.device
    FLEX = not args.no_flex
    SAMPLES = max(1, args.samples)
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench/attention.py needs a CUDA GPU (or --device cpu --shapes tiny,tiny-masked for a smoke run)"
        )
    torch.backends.cuda.matmul.allow_tf32 = True
    if DEVICE == "cuda":  # ~1 s of matmuls first: clocks and power state settle before the first row
        x = torch.randn(4096, 4096, device=DEVICE, dtype=DTYPE)
        t_end = time.perf_counter() + 1.0
        while time.perf_counter() < t_end:
            for _ in range(20):
                x @ x
            torch.cuda.synchronize()
        del x
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU"
    meta = {
        "device": device_name,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "date": str(datetime.date.today()),
        "command": "python bench/attention.py " + " ".join(sys.argv[1:]),
    }
    shape_names = args.shapes.split(",")
    unknown = [name for name in shape_names if name not in SHAPES]
    if unknown:  # before any timing, not after an hour of it
        raise SystemExit(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    old = json.loads(args.accumulate.read_text()) if args.accumulate and args.accumulate.exists() else []
    fresh: list[dict] = []
    runs = itertools.product(args.levels.split(","), shape_names, args.modes.split(","))
    for level, shape_name, mode in runs:
        shape = SHAPES[shape_name]
        rows = (kernel_rows if level == "kernel" else module_rows)(shape, mode == "fwdbwd")
        if rows is None:
            continue
        res = {
            "level": level,
            "shape": shape_name,
            "dims": list(shape),
            "pass": mode,
            "rows": rows,
            "meta": meta,
        }
        fresh.append(res)
        print(markdown([res]).split("\n", 2)[2], flush=True)
        # saved after every table: a run cut off by a time limit keeps what it measured
        if args.json:
            args.json.write_text(json.dumps(fresh, indent=1, default=str))
        if args.accumulate:
            args.accumulate.write_text(json.dumps(merge(old, fresh), indent=1, default=str))
    results = merge(old, fresh) if args.accumulate else fresh
    text = render(results)
    print("\n" + text)
    if args.write:
        write_section(args.write, text)


def merge(old: list[dict], fresh: list[dict]) -> list[dict]:
    """``old`` results (earlier runs) with every (level, shape, pass) that ``fresh`` re-measured replaced."""

    def key(r: dict) -> tuple:
        return r["level"], r["shape"], r["pass"]

    done = {key(r) for r in fresh}
    return [r for r in old if key(r) not in done] + fresh


def render(results: list[dict]) -> str:
    """Markdown section: one header line per distinct run, then the kernel and module tables."""
    order = {name: i for i, name in enumerate(SHAPES)}
    results = sorted(results, key=lambda r: (order.get(r["shape"], 99), r["pass"]))
    runs = []
    for res in results:
        meta = res.get("meta", {})
        line = (
            f"{meta.get('date')}: {meta.get('device')}, torch {meta.get('torch')}, "
            f"cuDNN {meta.get('cudnn')}, bf16, "
            f"`{meta.get('command')}`"
        )
        if line not in runs:
            runs.append(line)
    text = "### Attention core (`bench/attention.py`)\n\n" + "\n".join(f"- {line}" for line in runs)
    titles = {
        "kernel": "Kernel level (ratio = TFLOP/s / best SDPA row; GPU ratio = the same on GPU kernel time)",
        "module": "Module level, projections included (ratio = their ms / our ms: speed-up of ours; GPU "
        "ratio = the same on GPU kernel time)",
    }
    for level, title in titles.items():
        sub = [r for r in results if r["level"] == level]
        if sub:
            text += f"\n\n#### {title}\n\n" + markdown(sub)
    return text


if __name__ == "__main__":
    main()
