#!/usr/bin/env python
"""Translation speed: training tokens/s of our encoder-decoder against ``nn.Transformer``, and beam search
with the KV cache against recomputing the prefix.

    python bench/translation_speed.py                      # base config, bf16, batch 64 x (64 + 64) tokens
    python bench/translation_speed.py --compile            # eager and torch.compile'd (both models)
    python bench/translation_speed.py --decode-len 128     # longer decoding: the cache matters more
    python bench/translation_speed.py --padded             # source batches with padding (masks on)
    python bench/translation_speed.py --device cpu --small # a seconds-long smoke run on CPU

1. Training: the base configuration (6+6 layers, d 512, 8 heads, FFN 2048, ReLU, dropout 0.1, pre-norm,
   vocabulary 8000, tied embeddings) built on ``mha`` (``tasks.translation.model.Seq2SeqTransformer``)
   against the same model whose encoder-decoder is ``nn.Transformer`` (same embeddings, positions and output
   layer; this file is the one place in the project that uses ``nn.Transformer``, as the peer). Full steps:
   forward, label-smoothed cross-entropy, backward, fused AdamW, bf16 autocast. Whether the source batch
   holds padding is decided on the host (as a collate function would record it): both models get the
   source padding mask when it does (``--padded`` pads 1/4 of the sentences by up to half their length) and
   neither does otherwise (``--always-mask``: both always get it, the old setting). With ``--compile`` both
   models are also timed under ``torch.compile`` (ours with ``fullgraph=True``: a graph break fails).
2. Decoding: beam 5 over a batch of source sentences with our model, once with the decoder KV cache (each
   step feeds one token) and once recomputing the whole prefix every step. EOS is suppressed so both run the
   full length and do the same search.

Prints tokens/s, the speed-up over ``nn.Transformer`` (target >= 1.3x; nn.Transformer measured
170,929 tok/s on an H100 at this shape) and the cached-decoding speed-up.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import seconds_per_call  # noqa: E402
from mha import sinusoidal_table  # noqa: E402
from tasks.translation.data import EOS_ID, PAD_ID  # noqa: E402
from tasks.translation.model import Seq2SeqTransformer  # noqa: E402
from tasks.translation.search import beam_search  # noqa: E402


class TorchTransformerSeq2Seq(nn.Module):
    """The peer: the same embeddings / positions / tied output around ``nn.Transformer``."""

    def __init__(self, vocab: int, embed_dim: int, num_heads: int, layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.embed_dim = embed_dim
        self.embed = nn.Embedding(vocab, embed_dim, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=embed_dim**-0.5)
        self.drop = nn.Dropout(dropout)
        self.transformer = nn.Transformer(
            d_model=embed_dim,
            nhead=num_heads,
            num_encoder_layers=layers,
            num_decoder_layers=layers,
            dim_feedforward=ffn_dim,
            dropout=dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.output_bias = nn.Parameter(torch.zeros(vocab))

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        pos = sinusoidal_table(torch.arange(ids.shape[1], device=ids.device), self.embed_dim)
        return self.drop(self.embed(ids) * math.sqrt(self.embed_dim) + pos.to(self.embed.weight.dtype))

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, *, src_has_padding: bool = True
    ) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        src_pad = src.eq(PAD_ID) if src_has_padding else None
        h = self.transformer(
            self._embed(src),
            self._embed(tgt_in),
            tgt_mask=causal,
            tgt_is_causal=True,
            src_key_padding_mask=src_pad,
            memory_key_padding_mask=src_pad,
        )
        return F.linear(h, self.embed.weight, self.output_bias)


def train_batch(args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """``(src, tgt_in, tgt_out, src_has_padding)``; the padding flag is computed on the host (no sync)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    src = torch.randint(4, args.vocab, (args.batch, args.src_len), generator=g)
    if args.padded:  # a quarter of the sentences lose up to half their tokens to right padding
        for i in range(0, args.batch, 4):
            cut = int(torch.randint(1, args.src_len // 2 + 1, (1,), generator=g))
            src[i, args.src_len - cut :] = PAD_ID
    has_padding = bool(src.eq(PAD_ID).any()) or args.always_mask
    tgt = torch.randint(4, args.vocab, (args.batch, args.tgt_len + 1), generator=g).to(device)
    return src.to(device), tgt[:, :-1], tgt[:, 1:], has_padding


def train_tokens_per_s(model: nn.Module, args, device: torch.device, compile_model: bool = False) -> float:
    """Simple timing: ``args.warmup`` steps, then ``args.steps`` timed steps."""
    src, tgt_in, tgt_out, has_padding = train_batch(args, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    if compile_model:  # ours must compile without graph breaks; the peer as torch.compile takes it
        step_model = torch.compile(model, fullgraph=isinstance(model, Seq2SeqTransformer))
    else:
        step_model = model
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=args.dtype == "bf16"):
            logits = step_model(src, tgt_in, src_has_padding=has_padding)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten(), label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    seconds_per_call(step, args.warmup, device.type)
    return args.batch * (args.src_len + args.tgt_len) / seconds_per_call(step, args.steps, device.type)


@torch.no_grad()
def beam_seconds(model: Seq2SeqTransformer, args, device: torch.device, use_cache: bool) -> float:
    g = torch.Generator(device="cpu").manual_seed(1)
    src = torch.randint(4, args.vocab, (args.decode_batch, args.src_len), generator=g).to(device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model.eval()

    def run() -> list[list[int]]:
        with torch.autocast(device.type, dtype=dtype, enabled=args.dtype == "bf16"):
            return beam_search(
                model, src, beam_size=args.beam, max_len_a=0.0, max_len_b=args.decode_len, use_cache=use_cache
            )

    run()  # warm-up
    _sync(device)
    start = time.perf_counter()
    out = run()
    _sync(device)
    if any(len(h) != args.decode_len for h in out):
        raise RuntimeError("a hypothesis ended early; the comparison needs full-length decoding")
    return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="autocast dtype")
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
    p.add_argument("--compile", action="store_true", help="also time both training models compiled")
    p.add_argument("--padded", action="store_true", help="pad a quarter of the source sentences")
    p.add_argument("--always-mask", action="store_true", help="pass the padding mask even without padding")
    p.add_argument("--batch", type=int, default=64, help="training sentences per batch")
    p.add_argument("--src-len", type=int, default=64, help="source tokens per sentence")
    p.add_argument("--tgt-len", type=int, default=64, help="target tokens per sentence")
    p.add_argument("--vocab", type=int, default=8000, help="shared vocabulary size")
    p.add_argument("--warmup", type=int, default=10, help="untimed training steps")
    p.add_argument("--steps", type=int, default=50, help="timed training steps")
    p.add_argument("--beam", type=int, default=5, help="beam width")
    p.add_argument("--decode-batch", type=int, default=64, help="sentences decoded at once")
    p.add_argument("--decode-len", type=int, default=64, help="generated tokens per sentence")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run on a GPU or pass --device cpu --small for a smoke run")
    size = {"embed_dim": 512, "num_heads": 8, "layers": 6, "ffn_dim": 2048}
    if args.small:
        size = {"embed_dim": 64, "num_heads": 4, "layers": 2, "ffn_dim": 128}
        args.batch, args.src_len, args.tgt_len, args.vocab = 8, 16, 16, 500
        args.warmup, args.steps, args.decode_batch, args.decode_len = 1, 3, 4, 12
    torch.manual_seed(0)
    ours = Seq2SeqTransformer(
        args.vocab,
        args.vocab,
        embed_dim=size["embed_dim"],
        num_heads=size["num_heads"],
        encoder_layers=size["layers"],
        decoder_layers=size["layers"],
        ffn_dim=size["ffn_dim"],
        dropout=0.1,
        activation="relu",
        norm_first=True,
    ).to(device)
    peer = TorchTransformerSeq2Seq(
        args.vocab, size["embed_dim"], size["num_heads"], size["layers"], size["ffn_dim"], 0.1
    ).to(device)
    n_ours, n_peer = (sum(q.numel() for q in m.parameters()) for m in (ours, peer))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"params: ours {n_ours / 1e6:.2f} M, nn.Transformer {n_peer / 1e6:.2f} M; batch {args.batch} x "
        f"({args.src_len} + {args.tgt_len}) tokens, {args.dtype}, compile={args.compile}"
    )
    results: dict[str, float] = {}
    has_padding = train_batch(args, torch.device("cpu"))[3]
    print(
        f"source padding mask passed: {has_padding} "
        f"(--padded {args.padded}, --always-mask {args.always_mask})"
    )
    modes = [("eager", False)] + ([("compiled", True)] if args.compile else [])
    for mode, compile_model in modes:
        suffix = "" if mode == "eager" else "_compiled"
        results["ours_tok_s" + suffix] = train_tokens_per_s(ours, args, device, compile_model)
        results["torch_tok_s" + suffix] = train_tokens_per_s(peer, args, device, compile_model)
        results["train_speedup" + suffix] = results["ours_tok_s" + suffix] / results["torch_tok_s" + suffix]
        print(
            f"training ({mode}): ours {results['ours_tok_s' + suffix]:,.0f} tok/s, nn.Transformer "
            f"{results['torch_tok_s' + suffix]:,.0f} tok/s -> {results['train_speedup' + suffix]:.2f}x "
            "(target >= 1.3x)"
        )
    del peer
    with torch.no_grad():
        ours.output_bias[EOS_ID] = -1e4  # no hypothesis ends early: both searches run the full length
    results["beam_cached_s"] = beam_seconds(ours, args, device, use_cache=True)
    results["beam_recompute_s"] = beam_seconds(ours, args, device, use_cache=False)
    results["decode_speedup"] = results["beam_recompute_s"] / results["beam_cached_s"]
    sent = args.decode_batch
    print(
        f"beam-{args.beam} decoding of {sent} x {args.decode_len} tokens: "
        f"cached {results['beam_cached_s']:.3f} s ({sent / results['beam_cached_s']:.1f} sent/s), "
        f"recomputed prefix {results['beam_recompute_s']:.3f} s -> {results['decode_speedup']:.2f}x"
    )
    ratios = " ".join(f"{key}={value:.3f}" for key, value in results.items() if "speedup" in key)
    print(f"RATIOS {ratios}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
