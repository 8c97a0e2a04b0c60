"""Batched, on-device image augmentation (no per-image Python loop, so 2 CPU workers never starve a GPU).

Every image of a batch gets its own random parameters, but each operation runs once on the whole batch:

* geometry (one ``affine_grid`` + ``grid_sample`` for all of it): random-resized crop *or* random
  translation (the "pad and crop" of CIFAR recipes), horizontal flip, small rotation, and TrivialAugment's
  geometric ops (rotate, shear x/y, translate x/y);
* TrivialAugment's colour ops on the images that drew them (brightness, contrast, colour, sharpness,
  solarize, posterize, autocontrast, identity), one op per image with a uniformly drawn magnitude;
* optional MixUp / CutMix on the batch, returning soft targets.

Input and output images are float in [0, 1], shape (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOR_OPS = (
    "identity",
    "brightness",
    "contrast",
    "color",
    "sharpness",
    "solarize",
    "posterize",
    "autocontrast",
)


class BatchAugment(nn.Module):
    """Random augmentation of a float image batch (B, C, H, W) in [0, 1].

    Args:
        crop: ``"resized"`` (RandomResizedCrop with ``scale`` / ``ratio``), ``"translate"`` (shift by up to
            ``pad`` pixels, zero fill: pad-and-crop) or ``"none"``.
        scale: area range of the random-resized crop.
        ratio: aspect-ratio range of the random-resized crop.
        pad: maximal shift in pixels for ``crop="translate"``.
        flip: random horizontal flip (off for digits).
        rotate: extra random rotation in degrees, uniform in [-rotate, rotate] (0: off).
        trivial_augment: apply one TrivialAugment op per image (geometric + colour).
        magnitude: scales every TrivialAugment op's maximal strength (1.0 = the paper's wide ranges).
        mixup_alpha: Beta(alpha, alpha) for MixUp (0: off).
        cutmix_alpha: Beta(alpha, alpha) for CutMix (0: off).
        mix_prob: probability a batch is mixed (MixUp or CutMix, chosen 50/50 when both are on).
    """

    def __init__(
        self,
        crop: str = "translate",
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        pad: float = 4.0,
        flip: bool = True,
        rotate: float = 0.0,
        trivial_augment: bool = False,
        magnitude: float = 1.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
    ) -> None:
        super().__init__()
        if crop not in ("resized", "translate", "none"):
            raise ValueError(f"augment crop must be 'resized', 'translate' or 'none', got {crop!r}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"augment scale must satisfy 0 < min <= max <= 1, got {scale}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha / cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        self.crop, self.scale, self.ratio, self.pad = crop, tuple(scale), tuple(ratio), float(pad)
        self.flip, self.rotate = flip, float(rotate)
        self.trivial_augment, self.magnitude = trivial_augment, float(magnitude)
        self._kernels: dict[tuple, torch.Tensor] = {}
        self.mixup_alpha, self.cutmix_alpha, self.mix_prob = (
            float(mixup_alpha),
            float(cutmix_alpha),
            float(mix_prob),
        )

    @property
    def mixes(self) -> bool:
        """Whether :meth:`mix` may change the targets."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mix_prob > 0

    # ------------------------------------------------------------------------------------------ geometry
    def _affine(self, x: torch.Tensor, op: torch.Tensor | None) -> torch.Tensor:
        """Per-image affine matrices (B, 2, 3) mapping output to input coordinates in [-1, 1] units."""
        b, _, h, w = x.shape
        dev = x.device
        sx = torch.ones(b, device=dev)
        sy = torch.ones(b, device=dev)
        tx = torch.zeros(b, device=dev)
        ty = torch.zeros(b, device=dev)
        if self.crop == "resized":
            area = torch.empty(b, device=dev).uniform_(*self.scale)
            log_r = torch.empty(b, device=dev).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
            r = log_r.exp()
            sx = (area * r).sqrt().clamp(max=1.0)  # crop width / image width
            sy = (area / r).sqrt().clamp(max=1.0)
            tx = (torch.rand(b, device=dev) * 2 - 1) * (1 - sx)  # crop centre stays inside the image
            ty = (torch.rand(b, device=dev) * 2 - 1) * (1 - sy)
        elif self.crop == "translate" and self.pad > 0:
            tx = (torch.rand(b, device=dev) * 2 - 1) * (2 * self.pad / w)
            ty = (torch.rand(b, device=dev) * 2 - 1) * (2 * self.pad / h)
        if self.flip:
            sx = torch.where(torch.rand(b, device=dev) < 0.5, -sx, sx)
        angle = (torch.rand(b, device=dev) * 2 - 1) * math.radians(self.rotate)
        shear_x = torch.zeros(b, device=dev)
        shear_y = torch.zeros(b, device=dev)
        if op is not None:
            mag = torch.rand(b, device=dev) * self.magnitude
            sign = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
            angle = angle + torch.where(op == 0, sign * mag * math.radians(30), 0.0)
            shear_x = torch.where(op == 1, sign * mag * 0.3, 0.0)
            shear_y = torch.where(op == 2, sign * mag * 0.3, 0.0)
            tx = tx + torch.where(op == 3, sign * mag * 0.45, 0.0)  # up to ~22% of the width
            ty = ty + torch.where(op == 4, sign * mag * 0.45, 0.0)
        cos, sin = angle.cos(), angle.sin()
        # theta = [translation] @ [rotation] @ [shear] @ [scale/flip]
        a11 = cos * sx + (-sin) * shear_y * sx
        a12 = cos * shear_x * sy + (-sin) * sy
        a21 = sin * sx + cos * shear_y * sx
        a22 = sin * shear_x * sy + cos * sy
        theta = torch.stack(
            [torch.stack([a11, a12, tx], -1), torch.stack([a21, a22, ty], -1)], 1
        )  # (B, 2, 3)
        return theta

    # ------------------------------------------------------------------------------------------ colour
    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        return x.mean(1, keepdim=True)

    def _smooth_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """PIL's SMOOTH filter (3x3), made once per device/dtype: building it per batch is a host->device
        copy from pageable memory, which waits for the GPU (a sync every training step)."""
        key = (x.device, x.dtype)
        cached = self._kernels.get(key)
        if cached is None:
            cached = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype) / 13
            cached = self._kernels[key] = cached.to(x.device)
        return cached

    def _color(self, x: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
        """Apply colour op ``op[i]`` (index into COLOR_OPS) with a random magnitude to image i."""
        b = x.shape[0]
        mag = (torch.rand(b, 1, 1, 1, device=x.device) * self.magnitude).clamp(max=1.0)
        sign = torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, -1.0, 1.0)
        factor = 1 + sign * mag * 0.99  # brightness / contrast / colour / sharpness factor in [0.01, 1.99]
        sel = op.view(b, 1, 1, 1)
        out = x
        out = torch.where(sel == 1, x * factor, out)
        mean = self._gray(x).mean(dim=(1, 2, 3), keepdim=True)
        out = torch.where(sel == 2, (x - mean) * factor + mean, out)
        out = torch.where(sel == 3, (x - self._gray(x)) * factor + self._gray(x), out)
        c = x.shape[1]
        kernel = self._smooth_kernel(x)
        blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
        out = torch.where(sel == 4, blur + (x - blur) * factor, out)
        threshold = 1 - mag
        out = torch.where((sel == 5) & (x >= threshold), 1 - x, out)
        levels = 2 ** (8 - (mag * 4).round())  # keep 8 .. 4 bits
        out = torch.where(sel == 6, torch.floor(x * 255 / levels) * levels / 255, out)
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        out = torch.where(sel == 7, (x - lo) / (hi - lo).clamp_min(1e-3), out)
        return out.clamp_(0, 1)

    # ------------------------------------------------------------------------------------------ public
    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment images (B, C, H, W) float in [0, 1]; returns the same shape."""
        if x.ndim != 4 or not x.is_floating_point():
            raise TypeError(f"BatchAugment expects float images (B, C, H, W), got {x.dtype} {tuple(x.shape)}")
        b = x.shape[0]
        op = None
        if self.trivial_augment:
            op = torch.randint(0, len(GEOMETRIC_OPS) + len(COLOR_OPS), (b,), device=x.device)
        geo_op = op if op is not None else None
        needs_warp = self.crop != "none" or self.flip or self.rotate > 0 or op is not None
        if needs_warp:
            theta = self._affine(x, geo_op)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if op is not None:
            x = self._color(x, op - len(GEOMETRIC_OPS))  # negative ids (geometric ops) match no colour op
        return x

    @torch.no_grad()
    def mix(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp / CutMix a batch: x (B, C, H, W), y int64 (B,) -> x, soft targets (B, num_classes)."""
        target = F.one_hot(y, num_classes).to(x.dtype)
        if not self.mixes or torch.rand(()).item() >= self.mix_prob:
            return x, target
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or torch.rand(()).item() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        x2, t2 = x.flip(0), target.flip(0)  # pair image i with image B-1-i
        if use_cutmix:
            h, w = x.shape[-2:]
            cut = math.sqrt(1 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
            x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x2[..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = x * lam + x2 * (1 - lam)
        return x, target * lam + t2 * (1 - lam)
