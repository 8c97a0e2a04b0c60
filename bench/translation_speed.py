#!/usr/bin/env python
"""Translation speed: training tokens/s of our encoder-decoder against ``nn.Transformer``, and beam-search
decoding (ours uncached, with the eager KV cache, with static shapes + CUDA graphs) against Hugging Face
``generate`` on an equal-size Marian model.

    python bench/translation_speed.py                      # both sections: base config, bf16, on a GPU
    python bench/translation_speed.py --sections decode --out decode.json   # decoding rows only, to JSON
    python bench/translation_speed.py --compile            # training also timed under torch.compile
    python bench/translation_speed.py --decode-len 128     # longer decoding: the cache matters more
    python bench/translation_speed.py --padded             # source batches with padding (masks on)
    python bench/translation_speed.py --device cpu --small --dtype fp32   # CPU: the task's default model

1. ``train``: the base configuration (6+6 layers, d 512, 8 heads, FFN 2048, ReLU, dropout 0.1, pre-norm,
   vocabulary 8000, tied embeddings) built on ``mha`` (``tasks.translation.model.Seq2SeqTransformer``)
   against the same model whose encoder-decoder is ``nn.Transformer`` (same embeddings, positions and output
   layer; this file is the one place in the project that uses ``nn.Transformer``, as the peer). Full steps:
   forward, label-smoothed cross-entropy, backward, fused AdamW, bf16 autocast. Whether the source batch
   holds padding is decided on the host (as a collate function would record it): both models get the
   source padding mask when it does (``--padded`` pads 1/4 of the sentences by up to half their length) and
   neither does otherwise (``--always-mask``: both always get it, the old setting). With ``--compile`` both
   models are also timed under ``torch.compile`` (ours with ``fullgraph=True``: a graph break fails).
2. ``decode``: beam 5 over ``--decode-batches`` sentences of ``--src-len`` tokens, ``--decode-len``
   tokens each, with the weights in ``--dtype``: our model recomputing the whole prefix every step, with
   the eager KV cache (grows with the steps, follows the batch), and with static shapes (one CUDA graph
   replay per step on a GPU; eager on CPU); and, when ``transformers`` is installed (a benchmark-only
   dependency: its rows are skipped otherwise), ``MarianMTModel.generate`` of a random Marian model of our
   sizes (same vocabulary, sinusoidal positions, shared embeddings) with ``num_beams=5``,
   ``min_new_tokens = max_new_tokens``, ``early_stopping=False``. EOS is suppressed in ours (and by
   ``min_new_tokens`` in Marian), so every search runs the full length: the same number of steps.

Prints tokens/s, the training speed-up over ``nn.Transformer`` (target >= 1.3x; nn.Transformer measured
170,929 tok/s on an H100 at this shape), and per batch size each decoding path's seconds, sentences/s and
generated tokens/s with its speed-up over our eager cache (targets on an H100: static >= 3x the eager cache
at batch 64, >= 2x generate at batches 64 and 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import seconds_per_call  # noqa: E402
from mha import sinusoidal_table  # noqa: E402
from tasks.translation.data import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
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


def decode_src(args, batch: int, device: torch.device) -> torch.Tensor:
    """(batch, src_len) random source ids; ``--padded``: a quarter of the sentences right-padded."""
    g = torch.Generator(device="cpu").manual_seed(1)
    src = torch.randint(4, args.vocab, (batch, args.src_len), generator=g)
    if args.padded:
        for i in range(0, batch, 4):
            src[i, args.src_len - int(torch.randint(1, args.src_len // 2 + 1, (1,), generator=g)) :] = PAD_ID
    return src.to(device)


def timed(fn, args, device: torch.device) -> float:
    """Seconds per call: one untimed call (captures, lazy initialisations), then back-to-back calls for about
    ``--decode-seconds`` (at least two)."""
    first = seconds_per_call(fn, 1, device.type)
    calls = max(2, min(20, round(args.decode_seconds / max(first, 1e-3))))
    return seconds_per_call(fn, calls, device.type)


def marian_peer(args, size: dict[str, int], device: torch.device, dtype: torch.dtype):
    """A random ``MarianMTModel`` of our sizes, or ``None`` when ``transformers`` is not installed."""
    try:
        import transformers
        from transformers import MarianConfig, MarianMTModel
    except ImportError:
        return None
    config = MarianConfig(
        vocab_size=args.vocab,
        decoder_vocab_size=args.vocab,
        d_model=size["embed_dim"],
        encoder_layers=size["layers"],
        decoder_layers=size["layers"],
        encoder_attention_heads=size["num_heads"],
        decoder_attention_heads=size["num_heads"],
        encoder_ffn_dim=size["ffn_dim"],
        decoder_ffn_dim=size["ffn_dim"],
        activation_function="relu",
        max_position_embeddings=max(512, args.src_len, args.decode_len + 1),
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=BOS_ID,
        forced_eos_token_id=None,
        share_encoder_decoder_embeddings=True,
    )
    torch.manual_seed(0)
    model = MarianMTModel(config).to(device=device, dtype=dtype).eval()
    model.version = transformers.__version__
    return model


@torch.no_grad()
def decode_rows(ours: Seq2SeqTransformer, args, size: dict[str, int], device: torch.device) -> list[dict]:
    """Seconds, sentences/s and tokens/s of every decoding path at every batch size."""
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    ours = ours.to(dtype).eval()
    with torch.no_grad():
        ours.output_bias[EOS_ID] = -1e4  # no hypothesis ends early: every search runs the full length
    peer = marian_peer(args, size, device, dtype)
    if peer is None:
        print("transformers is not installed: the Hugging Face generate rows are skipped")
    beam, length = args.beam, args.decode_len
    paths = {
        "ours, prefix recomputed": {"use_cache": False},
        "ours, eager KV cache": {"static": False},
        "ours, static + CUDA graphs" if device.type == "cuda" else "ours, static shapes": {"static": True},
    }
    rows = []
    for batch in args.decode_batches:
        src = decode_src(args, batch, device)
        row_of = {}
        for name, kwargs in paths.items():
            run = partial(beam_search, ours, src, beam_size=beam, max_len_a=0.0, max_len_b=length, **kwargs)
            if any(len(h) != length for h in run()):
                raise RuntimeError(f"{name}: a hypothesis ended early; the comparison needs full length")
            row_of[name] = timed(run, args, device)
        if peer is not None:
            generate = partial(
                peer.generate,
                input_ids=src,
                attention_mask=src.ne(PAD_ID).long(),
                num_beams=beam,
                max_new_tokens=length,
                min_new_tokens=length,
                early_stopping=False,
                do_sample=False,
            )
            if generate().shape[1] != length + 1:  # decoder start token + the new tokens
                raise RuntimeError("generate stopped early; the comparison needs full length")
            row_of[f"HF generate (transformers {peer.version})"] = timed(generate, args, device)
        cached = row_of["ours, eager KV cache"]
        for name, seconds in row_of.items():
            rows.append(
                {
                    "batch": batch,
                    "path": name,
                    "s": seconds,
                    "sent_s": batch / seconds,
                    "tok_s": batch * length / seconds,
                    "vs_eager_cache": cached / seconds,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="autocast / decoding dtype")
    p.add_argument("--sections", nargs="+", default=["train", "decode"], choices=["train", "decode"])
    p.add_argument("--small", action="store_true", help="the translation task's default model, for a CPU run")
    p.add_argument("--compile", action="store_true", help="also time both training models compiled")
    p.add_argument("--padded", action="store_true", help="pad a quarter of the source sentences")
    p.add_argument("--always-mask", action="store_true", help="pass the padding mask even without padding")
    p.add_argument("--batch", type=int, default=64, help="training sentences per batch")
    p.add_argument("--src-len", type=int, default=64, help="source tokens per sentence")
    p.add_argument("--tgt-len", type=int, default=64, help="target tokens per sentence (training)")
    p.add_argument("--vocab", type=int, default=8000, help="shared vocabulary size")
    p.add_argument("--warmup", type=int, default=10, help="untimed training steps")
    p.add_argument("--steps", type=int, default=50, help="timed training steps")
    p.add_argument("--beam", type=int, default=5, help="beam width")
    p.add_argument("--decode-batches", type=int, nargs="+", default=[1, 16, 64], help="sentences per search")
    p.add_argument("--decode-len", type=int, default=64, help="generated tokens per sentence")
    p.add_argument("--decode-seconds", type=float, default=1.0, help="timed seconds per decoding row")
    p.add_argument("--out", "--json", type=Path, default=None, help="also write the results to this JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run on a GPU or pass --device cpu --small for a smoke run")
    size = {"embed_dim": 512, "num_heads": 8, "layers": 6, "ffn_dim": 2048}
    if args.small:
        # the translation task's default model (conf/task/translation.yaml), sentences of its default corpus
        size = {"embed_dim": 128, "num_heads": 4, "layers": 2, "ffn_dim": 512}
        small = dict(batch=8, src_len=16, tgt_len=16, vocab=400, warmup=1, steps=3)
        small |= dict(decode_batches=[1, 4, 32], decode_len=12)
        for key, value in small.items():  # a flag given explicitly keeps its value
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
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
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    results: dict = {"device": name, "torch": torch.__version__, "args": {**vars(args), "out": str(args.out)}}
    if "train" in args.sections:
        peer = TorchTransformerSeq2Seq(
            args.vocab, size["embed_dim"], size["num_heads"], size["layers"], size["ffn_dim"], 0.1
        ).to(device)
        n_ours, n_peer = (sum(q.numel() for q in m.parameters()) for m in (ours, peer))
        print(
            f"params: ours {n_ours / 1e6:.2f} M, nn.Transformer {n_peer / 1e6:.2f} M; batch {args.batch} x "
            f"({args.src_len} + {args.tgt_len}) tokens, {args.dtype}, compile={args.compile}"
        )
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
            results["train_speedup" + suffix] = (
                results["ours_tok_s" + suffix] / results["torch_tok_s" + suffix]
            )
            print(
                f"training ({mode}): ours {results['ours_tok_s' + suffix]:,.0f} tok/s, nn.Transformer "
                f"{results['torch_tok_s' + suffix]:,.0f} tok/s -> {results['train_speedup' + suffix]:.2f}x "
                "(target >= 1.3x)"
            )
        del peer
    if "decode" in args.sections:
        rows = decode_rows(ours, args, size, device)
        results["decode"] = rows
        print(
            f"\nbeam-{args.beam} decoding, {args.src_len} source -> {args.decode_len} generated tokens per "
            f"sentence, {args.dtype} weights (x: speed-up over our eager KV cache)"
        )
        print(f"{'batch':>5}  {'path':<40} {'s/call':>8} {'sent/s':>9} {'tok/s':>10} {'x':>6}")
        for row in rows:
            print(
                f"{row['batch']:>5}  {row['path']:<40} {row['s']:>8.4f} {row['sent_s']:>9.1f} "
                f"{row['tok_s']:>10,.0f} {row['vs_eager_cache']:>6.2f}"
            )
        results.update(decode_ratios(rows))
    ratios = " ".join(f"{key}={value:.3f}" for key, value in results.items() if "speedup" in key)
    print(f"RATIOS {ratios}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return results


def decode_ratios(rows: list[dict]) -> dict[str, float]:
    """Per batch size: cached over recomputed (``decode_speedup``), static over the eager cache and over
    Hugging Face ``generate``."""
    ratios = {}
    for batch in sorted({row["batch"] for row in rows}):
        s = {row["path"].split(" (")[0]: row["s"] for row in rows if row["batch"] == batch}
        static = next(v for k, v in s.items() if k.startswith("ours, static"))
        ratios[f"decode_speedup_b{batch}"] = s["ours, prefix recomputed"] / s["ours, eager KV cache"]
        ratios[f"static_speedup_b{batch}"] = s["ours, eager KV cache"] / static
        if "HF generate" in s:
            ratios[f"static_vs_generate_speedup_b{batch}"] = s["HF generate"] / static
    return ratios


if __name__ == "__main__":
    main()
