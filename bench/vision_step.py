#!/usr/bin/env python
"""Training-step time of the CIFAR-10 ViT variants, ``torch.compile`` default mode vs CUDA graphs.

One training step as ``experiment=vision_cifar10`` runs it, without Lightning: GPU augmentation (pad-crop,
flip, TrivialAugment), normalisation, bf16 autocast forward, label-smoothed cross-entropy, backward, global
gradient-norm clip, fused AdamW. Random uint8 images (speed only). Each variant is compiled in this process
and timed after warm-up; ``*_ro`` variants use ``mode="reduce-overhead"`` (CUDA graphs) for the model and a
compiled augmentation, the others the default mode with the augmentation eager (as before this option).

    python bench/vision_step.py                                   # every variant
    python bench/vision_step.py --variants current,current_ro     # the recipe's model, both modes
    python bench/vision_step.py --variants current --profile      # + a torch.profiler table of 10 steps

Prints one JSON line per variant: ms per step, img/s, seconds per 49k-image epoch, augmentation ms, compile
seconds, parameters. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.lit import param_groups  # noqa: E402
from tasks.vision.augment import BatchAugment  # noqa: E402
from tasks.vision.model import ViT  # noqa: E402

#: the model of conf/experiment/vision_cifar10.yaml
BASE = dict(
    image_size=32,
    in_chans=3,
    num_classes=10,
    patch_size=4,
    stem_channels=[64, 128],
    stem_depth=2,
    embed_dim=256,
    depth=7,
    num_heads=4,
    mlp_ratio=2.0,
    pool="avg",
    drop_path=0.1,
    qk_norm=True,
)
TOK256 = {"patch_size": 2, "stem_channels": [64], "stem_depth": 2}  # 16x16 tokens (CCT-like)
RO = "reduce-overhead"
#: name: (model overrides, batch size, channels_last, compile mode)
VARIANTS = {
    "current": ({}, 512, False, None),
    "current_cl": ({}, 512, True, None),
    "current_b1024": ({}, 1024, False, None),
    "stem64_256_cl": ({"stem_channels": [64, 256]}, 512, True, None),
    "tok256_d7": (TOK256, 512, False, None),
    "linear": ({"stem_channels": []}, 512, False, None),
    "current_ro": ({}, 512, False, RO),
    "tok256_ro": (TOK256, 512, False, RO),
    "stem64_256_ro": ({"stem_channels": [64, 256]}, 512, False, RO),
    "w384_ro": ({"embed_dim": 384, "num_heads": 6}, 512, False, RO),
    "tok256_d9w384_ro": (TOK256 | {"embed_dim": 384, "num_heads": 6, "depth": 9}, 512, False, RO),
}


def measure(name: str, steps: int, profile: bool) -> dict:
    over, batch, channels_last, mode = VARIANTS[name]
    torch.manual_seed(0)
    model = ViT(**(BASE | over)).cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    stem = sum(p.numel() for p in model.patch_embed.parameters())
    model.compile(mode=mode)
    augment = BatchAugment(crop="translate", pad=4, flip=True, trivial_augment=True, magnitude=0.5)
    if mode:
        augment.compile()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, fused=True)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 10, (batch,), device="cuda")
    mean = torch.tensor([0.49, 0.48, 0.45], device="cuda").view(1, 3, 1, 1)
    std = torch.full_like(mean, 0.25)

    def step() -> torch.Tensor:
        x = (augment(images.float().div_(255)) - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), labels, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(3):  # compile (and, with CUDA graphs, record)
        step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        augment(images.float().div_(255))
    torch.cuda.synchronize()
    aug = (time.perf_counter() - t0) / steps
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as run_profile

        with run_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25), flush=True)
    return {
        "ms_step": dt * 1e3,
        "img_s": batch / dt,
        "s_epoch_49k": 49000 / (batch / dt),
        "aug_ms": aug * 1e3,
        "compile_s": compile_s,
        "params_M": params / 1e6,
        "stem_M": stem / 1e6,
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    parser.add_argument("--profile", action="store_true", help="profile 10 steps of the first variant")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/vision_step.py needs a CUDA GPU")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    for i, name in enumerate(names):
        result = measure(name, args.steps, args.profile and i == 0)
        print(name, json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
