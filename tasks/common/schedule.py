"""Learning-rate schedule shared by every task: linear warmup, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup: float, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    Args:
        step: current optimiser step.
        total_steps: steps of the whole run (>= 1).
        warmup: a fraction of ``total_steps`` when < 1, else a number of steps.
        min_lr_ratio: the multiplier reached at the last step.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup < 0:
        raise ValueError(f"optim.warmup must be >= 0 (a fraction < 1 or a step count), got {warmup}")
    warmup_steps = int(round(warmup * total_steps)) if warmup < 1 else int(warmup)
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
