"""Diagnostic (H100, 2026-11-24): what each part of ``mha.attention``'s short path costs at ViT-B forward,
(16,12,197,64) bf16, against F.sdpa in the same process, timed as ``bench/attention.py`` times its rows.
Each row adds one part to the previous one, all written out inline in a function with ``mha.attention``'s
signature: the ``auto``/plain-call flag tests, then reading ``q.shape``/``k.shape``/``v.shape``, then the
validation comparisons, then the CUDA rule's bounds and the kernel report (= the short path), then
``mha.attention`` itself.  Run from the repository root on a CUDA machine:
``python bench/diag_short_path_parts.py``.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.attention as ba  # noqa: E402
import mha  # noqa: E402
import mha.functional as mf  # noqa: E402

SDPA = F.scaled_dot_product_attention
HALF = (torch.float16, torch.bfloat16)
STATE = mf._STATE
RULES, SHORT = mf.BACKEND_RULES, mf._SHORT_TABLE


def pass_through(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
                 block_mask=None, backend="auto", return_weights=False):  # fmt: skip
    return SDPA(q, k, v)


def flags(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
          block_mask=None, backend="auto", return_weights=False):  # fmt: skip
    if (
        mask is None
        and backend == "auto"
        and not dropout_p
        and score_mod is None
        and block_mask is None
        and not return_weights
        and RULES is SHORT
        and STATE["forced"] is None
    ):
        return SDPA(q, k, v)
    return None


def shapes(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
           block_mask=None, backend="auto", return_weights=False):  # fmt: skip
    if (
        mask is None
        and backend == "auto"
        and not dropout_p
        and score_mod is None
        and block_mask is None
        and not return_weights
        and RULES is SHORT
        and STATE["forced"] is None
    ):
        ks = k.shape
        qs = q.shape
        vs = v.shape
        if qs is not None and ks is not None and vs is not None:
            return SDPA(q, k, v)
    return None


def checks(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
           block_mask=None, backend="auto", return_weights=False):  # fmt: skip
    if (
        mask is None
        and backend == "auto"
        and not dropout_p
        and score_mod is None
        and block_mask is None
        and not return_weights
        and RULES is SHORT
        and STATE["forced"] is None
    ):
        ks = k.shape
        qs = q.shape
        if not (
            len(qs) != 4
            or v.shape != ks
            or len(ks) != 4
            or qs[0] != ks[0]
            or qs[1] != ks[1]
            or qs[3] != ks[3]
            or (is_causal and qs[2] != ks[2])
        ):
            return SDPA(q, k, v)
    return None


def full(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
         block_mask=None, backend="auto", return_weights=False):  # fmt: skip
    if (
        mask is None
        and backend == "auto"
        and not dropout_p
        and score_mod is None
        and block_mask is None
        and not return_weights
        and RULES is SHORT
        and STATE["forced"] is None
    ):
        ks = k.shape
        cuda = q.is_cuda
        if cuda and (ks[-2] > 256 or ks[-1] > 128 or q.dtype not in HALF):
            return None
        qs = q.shape
        if not (
            len(qs) != 4
            or v.shape != ks
            or len(ks) != 4
            or qs[0] != ks[0]
            or qs[1] != ks[1]
            or qs[3] != ks[3]
            or (is_causal and qs[2] != ks[2])
        ):
            if not cuda or (
                qs[2] != 1
                and 0 < qs[0] * qs[1] <= 512
                and (ks[2] > 128 or torch.is_grad_enabled() and q.requires_grad)
            ):
                STATE["last"] = "sdpa"
                return SDPA(q, k, v)
    return None


def main() -> None:
    ba.GPU_ROUNDS = 1
    q, k, v = (torch.randn(16, 12, 197, 64, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    fns = {
        "F.sdpa": lambda: SDPA(q, k, v, is_causal=False),
        "F.sdpa A/A": lambda: SDPA(q, k, v, is_causal=False),
        "pass-through": lambda: pass_through(q, k, v, is_causal=False),
        "+ flag tests": lambda: flags(q, k, v, is_causal=False),
        "+ 3 shape reads": lambda: shapes(q, k, v, is_causal=False),
        "+ validation": lambda: checks(q, k, v, is_causal=False),
        "+ CUDA bounds, report": lambda: full(q, k, v, is_causal=False),
        "mha.attention": lambda: mha.attention(q, k, v, is_causal=False),
    }
    ba.print_paired(fns, runs=2)


if __name__ == "__main__":
    main()
