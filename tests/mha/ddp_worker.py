"""One rank of ``tests/mha/test_mha_ddp.py``, launched by ``torch.distributed.run`` (not collected by pytest).

Every rank builds the same encoder-decoder from ``mha`` (GQA, RoPE, qk-norm, a key padding mask, causal
self-attention and cross-attention), wraps it in ``DistributedDataParallel`` (or, with ``--fsdp``, shards
it with FSDP2's ``fully_shard``), runs its share of one batch forward and backward, takes one SGD step, and
saves its gradients and updated parameters (whole tensors).  Rank 0 also runs the same model unwrapped on
the whole batch: the averaged gradients must equal that one-process result.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/mha/ddp_worker.py --out DIR [--fsdp]
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import mha

BATCH, SRC, TGT, DIM, HEADS, KV_HEADS, VOCAB = 8, 24, 16, 64, 4, 2, 50


class Seq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        kw = dict(num_kv_heads=KV_HEADS, positional="rope", qk_norm=True, ffn_dim=128)
        self.embed = nn.Embedding(VOCAB, DIM)
        self.encoder = mha.Encoder(2, DIM, HEADS, **kw)
        self.decoder = mha.Decoder(2, DIM, HEADS, **kw)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, src: torch.Tensor, src_pad: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        memory, _ = self.encoder(self.embed(src), key_padding_mask=src_pad)
        out, _ = self.decoder(self.embed(tgt), memory, tgt_is_causal=True, memory_key_padding_mask=src_pad)
        return self.head(out)


def batch(device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    src = torch.randint(0, VOCAB, (BATCH, SRC), generator=g)
    tgt = torch.randint(0, VOCAB, (BATCH, TGT + 1), generator=g)
    lengths = torch.randint(SRC // 2, SRC + 1, (BATCH,), generator=g)
    src_pad = torch.arange(SRC)[None, :] >= lengths[:, None]  # nn.MultiheadAttention meaning: True = padding
    return tuple(t.to(device) for t in (src, src_pad, tgt[:, :-1], tgt[:, 1:]))


def loss_of(model: nn.Module, src, src_pad, tgt_in, tgt_out) -> torch.Tensor:
    logits = model(src, src_pad, tgt_in)
    return nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())


def step(model: nn.Module, data, run: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Forward (through ``run``, default ``model``), backward and one SGD step on ``model``'s parameters;
    returns the gradients and the updated parameters, on CPU."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_of(model if run is None else run, *data).backward()
    grads = {f"grad.{n}": _full(p.grad) for n, p in model.named_parameters()}
    opt.step()
    return {**grads, **{f"param.{n}": _full(p) for n, p in model.named_parameters()}}


def _full(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy of the whole tensor (FSDP2 keeps a shard per rank as a DTensor)."""
    t = t.detach()
    return (t.full_tensor() if isinstance(t, DTensor) else t).cpu().clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the DDP-wrapped model")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard per layer) instead of DDP")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and os.environ.get("MHA_DDP_CPU") != "1"
    rank = int(os.environ["RANK"])
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    model = Seq2Seq().to(device)
    data = batch(device)
    if rank == 0:  # the one-process reference on the whole batch, from the same initial weights
        ref = copy.deepcopy(model)
        torch.save(step(ref, data), Path(args.out) / "reference.pt")
    share = BATCH // world
    mine = tuple(t[rank * share : (rank + 1) * share] for t in data)
    if args.fsdp:  # every encoder / decoder layer, then the root, sharded across the ranks
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            fully_shard(layer)
        wrapped = fully_shard(model)
    else:
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    result = step(model, mine, run=torch.compile(wrapped) if args.compile else wrapped)
    torch.save(result, Path(args.out) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
