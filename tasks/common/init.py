"""Weight initialisation shared by the ViT-style models (vision, audio)."""

from __future__ import annotations

from torch import nn

from mha import MultiHeadAttention


def trunc_normal_init_(model: nn.Module, std: float = 0.02) -> None:
    """timm's ViT init, in place: truncated normal (``std``) for every linear weight and every projection
    matrix of ``mha``'s attention, zero biases (positions and class tokens are the model's own)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, MultiHeadAttention):
            for name, p in m.named_parameters(recurse=False):
                if p.ndim == 2:
                    nn.init.trunc_normal_(p, std=std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)
