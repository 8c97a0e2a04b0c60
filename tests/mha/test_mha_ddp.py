"""``mha`` models under ``DistributedDataParallel`` and FSDP2 (``fully_shard``): two processes, each on half a
batch, must produce the gradients and the SGD step of one process on the whole batch
(``tests/mha/ddp_worker.py`` is one rank).

The CPU runs (gloo) are in CI; the CUDA runs (NCCL, eager and ``torch.compile``) need two GPUs:
``pytest -m gpu tests/mha/test_mha_ddp.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = WORKER.parents[2]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


def run_ranks(
    out: Path, *, cpu: bool, compile: bool = False, fsdp: bool = False, timeout: float = 300
) -> dict[str, dict]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    if cpu:
        env["MHA_DDP_CPU"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [
        str(WORKER),
        "--out",
        str(out),
        *(["--compile"] if compile else []),
        *(["--fsdp"] if fsdp else []),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: torch.load(out / f"{name}.pt") for name in ("reference", "rank0", "rank1")}


def check_equal_to_one_process(res: dict[str, dict], atol: float, rtol: float) -> None:
    ref, r0, r1 = res["reference"], res["rank0"], res["rank1"]
    names = [n for n in ref if n.startswith("grad.")]
    assert len(names) > 40  # embeddings, every attention / MLP / norm of 2 encoder + 2 decoder layers, head
    assert any("cross_attn" in n for n in names) and any("self_attn" in n for n in names)
    for name in ref:
        torch.testing.assert_close(r0[name], r1[name], atol=0, rtol=0, msg=f"{name} differs between ranks")
        msg = f"{name}: two processes != one process on the whole batch"
        torch.testing.assert_close(r0[name], ref[name], atol=atol, rtol=rtol, msg=msg)
    assert r0["grad.head.weight"].abs().sum() > 0  # a real backward ran


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_gloo_cpu_matches_one_process(tmp_path, fsdp):
    check_equal_to_one_process(run_ranks(tmp_path, cpu=True, fsdp=fsdp), atol=1e-5, rtol=1e-4)


@pytest.mark.gpu
@two_gpus
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_nccl_matches_one_process(tmp_path, compile, fsdp):
    res = run_ranks(tmp_path, cpu=False, compile=compile, fsdp=fsdp)
    check_equal_to_one_process(res, atol=1e-4, rtol=1e-3)
