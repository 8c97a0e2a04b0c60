#!/usr/bin/env python
"""Training throughput (images/s) of our ViT-S/16 (built from ``mha``) vs timm's ``vit_small_patch16_224``.

Both models train in the same process on the same random batches: 224 px, bf16 autocast, fused AdamW,
``torch.compile``; the script prints img/s for each and the ratio ours / timm. Needs a CUDA GPU.

    python bench/vit_throughput.py --batch-size 256 --steps 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import seconds_per_call  # noqa: E402


def build(name: str) -> torch.nn.Module:
    """``ours``: ViT-S/16 from mha; ``timm``: timm's vit_small_patch16_224 (random init, no download)."""
    if name == "ours":
        from tasks.vision.model import ViT

        return ViT(
            image_size=224,
            patch_size=16,
            in_chans=3,
            num_classes=1000,
            embed_dim=384,
            depth=12,
            num_heads=6,
            mlp_ratio=4.0,
            pool="token",
            layer_norm_eps=1e-6,
        )
    import timm

    return timm.create_model("vit_small_patch16_224", pretrained=False)


def measure(model: torch.nn.Module, batch_size: int, steps: int, warmup: int, compile: bool) -> float:
    """Training images per second over ``steps`` steps after ``warmup`` steps."""
    model = model.cuda().train()
    if compile:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch_size, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (batch_size,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds_per_call(step, warmup)
    return batch_size / seconds_per_call(step, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256, help="images per step")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation)")
    parser.add_argument("--no-compile", action="store_true", help="eager mode")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two models this many times")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/vit_throughput.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    models = {name: build(name) for name in ("ours", "timm")}
    print({k: f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f}M params" for k, m in models.items()})
    best = {name: 0.0 for name in models}
    for r in range(args.repeats):
        for name, model in models.items():
            ips = measure(
                model, args.batch_size, args.steps, args.warmup if r == 0 else 3, not args.no_compile
            )
            best[name] = max(best[name], ips)
            print(f"repeat {r}: {name:>4}: {ips:,.0f} img/s")
    compiled = not args.no_compile
    print(f"device: {torch.cuda.get_device_name()}, batch {args.batch_size}, bf16, compile={compiled}")
    print(
        f"ours {best['ours']:,.0f} img/s | timm {best['timm']:,.0f} img/s | "
        f"ratio {best['ours'] / best['timm']:.3f}x"
    )


if __name__ == "__main__":
    main()
