#!/usr/bin/env python
"""Training-step time of the CIFAR-10 ViT variants, ``torch.compile`` default mode vs CUDA graphs.

One training step of ``experiment=vision_cifar10`` without Lightning: the model, augmentation, label
smoothing and optimiser settings are read from that recipe, the batch goes through ``VisionTask``'s own
``on_device_batch`` (GPU augmentation, normalisation) and ``training_loss``, then backward, the recipe's
gradient-norm clip and fused AdamW. Random uint8 images (speed only). Each variant (model overrides on top of
the recipe) is compiled in this process and timed after warm-up; ``*_ro`` variants use
``mode="reduce-overhead"`` (CUDA graphs) for the model and a compiled augmentation (``compile_mode`` in the
config), the others the default mode with the augmentation eager.

    python bench/vision_step.py                                   # every variant
    python bench/vision_step.py --variants current,current_ro     # the recipe's model, both modes
    python bench/vision_step.py --variants current --profile      # + a torch.profiler table of 10 steps
    python bench/vision_step.py --variants current_ro --trainer-epochs 20 --data-dir /path/to/data

``--trainer-epochs N`` also runs each variant under the trainer, as a user does (``python train.py
experiment=vision_cifar10 paths.data_dir=... trainer.max_epochs=N`` with the variant's overrides: loader,
Lightning loop, logging, validation every 10 epochs), on the same GPU right after its bare timing, and
reports the median training epoch of its ``metrics.csv`` per step beside the bare step (``trainer_ratio``;
target <= 1.15). An epoch that validates (every 10th) counts its validation too; the median leaves those out.
Variants with ``channels_last`` are timed bare only (``train.py`` has no such option).

Prints one JSON line per variant: ms per step, img/s, seconds per 49k-image epoch, augmentation ms, compile
seconds, parameters. Needs a CUDA GPU. Use ``--profile`` with one variant per process: a profile leaves CUPTI
attached and slows every later launch of the process, and with CUDA graphs PyTorch's profiler may turn
``TEARDOWN_CUPTI`` off.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import seconds_per_call  # noqa: E402
from tasks.lit import param_groups  # noqa: E402
from tasks.vision.model import ViT  # noqa: E402
from tasks.vision.task import VisionTask  # noqa: E402

TOK256 = {"patch_size": 2, "stem_channels": [64], "stem_depth": 2}  # 16x16 tokens (CCT-like)
RO = "reduce-overhead"
#: name: (model overrides of the recipe, batch size, channels_last, compile mode)
VARIANTS = {
    "current": ({}, 512, False, None),
    "current_cl": ({}, 512, True, None),
    "current_b1024": ({}, 1024, False, None),
    "stem64_256_cl": ({"stem_channels": [64, 256]}, 512, True, None),
    "tok256_d7": (TOK256, 512, False, None),
    "linear": ({"stem_channels": []}, 512, False, None),
    "current_ro": ({}, 512, False, RO),
    "current_b256_ro": ({}, 256, False, RO),
    "current_b128_ro": ({}, 128, False, RO),
    "tok256_ro": (TOK256, 512, False, RO),
    "stem64_256_ro": ({"stem_channels": [64, 256]}, 512, False, RO),
    "w384_ro": ({"embed_dim": 384, "num_heads": 6}, 512, False, RO),
    "tok256_d9w384_ro": (TOK256 | {"embed_dim": 384, "num_heads": 6, "depth": 9}, 512, False, RO),
}


def recipe(experiment: str) -> dict:
    """The composed ``task`` and ``optim`` sections of ``conf/experiment/<experiment>.yaml``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"])
    return {
        "task": OmegaConf.to_container(cfg.task, resolve=False),  # (data paths are not needed here)
        "optim": OmegaConf.to_container(cfg.optim, resolve=True),
    }


def measure(name: str, cfg: dict, steps: int, profile: bool) -> dict:
    over, batch, channels_last, mode = VARIANTS[name]
    torch.manual_seed(0)
    task = VisionTask(
        model=cfg["task"]["model"] | over,
        augment=cfg["task"]["augment"],
        label_smoothing=cfg["task"]["label_smoothing"],
    )
    task.num_classes = 10
    task.mean = torch.tensor([0.49, 0.48, 0.45], device="cuda").view(1, 3, 1, 1)  # CIFAR-10's, rounded
    task.std = torch.full_like(task.mean, 0.25)
    model = ViT(image_size=32, in_chans=3, num_classes=10, **task.model_cfg).cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    stem = sum(p.numel() for p in model.patch_embed.parameters())
    model.compile(mode=mode)
    if mode:
        task.compile_batch_work()
    optim = cfg["optim"]
    opt = torch.optim.AdamW(param_groups(model, optim["weight_decay"]), lr=optim["lr"], fused=True)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device="cuda")
    labels = torch.randint(0, 10, (batch,), device="cuda")

    def step() -> torch.Tensor:
        x, y = task.on_device_batch((images, labels), training=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", torch.bfloat16):
            loss = task.training_loss(model, (x, y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    compile_s = 3 * seconds_per_call(step, 3)  # compile (and, with CUDA graphs, record)
    seconds_per_call(step, 5)  # warm-up
    dt = seconds_per_call(step, steps)
    aug = seconds_per_call(lambda: task.augment(images.float().div_(255)), steps)
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


def _hydra(value: object) -> str:
    """A value as a Hydra command-line override (lists without spaces)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def trainer_step(overrides: list[str]) -> dict:
    """Run ``python train.py <overrides>`` in a fresh run folder and read its ``metrics.csv``: the median
    training epoch (``train/epoch_time_s``, the first epoch with its compile left out) and the steps per
    epoch (the difference of consecutive epochs' steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "train.py", *overrides, "trainer.enable_progress_bar=false"]
        cmd.append(f"hydra.run.dir={tmp}")
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        with open(Path(tmp) / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if r.get("train/epoch_time_s")]
        ends = [(int(r["step"]), float(r["train/epoch_time_s"])) for r in rows]
    if len(ends) < 3:
        raise ValueError(f"need >= 3 training epochs to time the trainer, got {len(ends)}")
    steps = statistics.median(b[0] - a[0] for a, b in zip(ends[:-1], ends[1:], strict=True))
    epoch_s = statistics.median(t for _, t in ends[1:])
    return {"trainer_s_epoch": epoch_s, "trainer_ms_step": epoch_s / steps * 1e3, "steps_per_epoch": steps}


def trainer_overrides(experiment: str, name: str, data_dir: str, epochs: int) -> list[str]:
    """The ``train.py`` overrides that run variant ``name`` of ``experiment`` for ``epochs`` epochs."""
    over, batch, _, mode = VARIANTS[name]
    return [
        f"experiment={experiment}",
        f"paths.data_dir={data_dir}",
        f"trainer.max_epochs={epochs}",
        f"task.data.batch_size={batch}",
        f"compile_mode={_hydra(mode)}",
        *(f"task.model.{k}={_hydra(v)}" for k, v in over.items()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant")
    parser.add_argument("--profile", action="store_true", help="profile 10 steps of the first variant")
    parser.add_argument("--experiment", default="vision_cifar10", help="the recipe in conf/experiment/")
    parser.add_argument("--trainer-epochs", type=int, default=0, help="also time N epochs under train.py")
    parser.add_argument("--data-dir", help="paths.data_dir for --trainer-epochs (holds cifar10-jpg.tar.gz)")
    args = parser.parse_args()
    if args.trainer_epochs and not args.data_dir:
        raise SystemExit("--trainer-epochs needs --data-dir /path/to/data (the folder of cifar10-jpg.tar.gz)")
    if not torch.cuda.is_available():
        raise SystemExit("bench/vision_step.py needs a CUDA GPU")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    cfg = recipe(args.experiment)
    for i, name in enumerate(names):
        result = measure(name, cfg, args.steps, args.profile and i == 0)
        torch.cuda.empty_cache()
        if args.trainer_epochs and not VARIANTS[name][2]:
            run = trainer_overrides(args.experiment, name, args.data_dir, args.trainer_epochs)
            result |= trainer_step(run)
            result["trainer_ratio"] = result["trainer_ms_step"] / result["ms_step"]
        print(name, json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
