"""Learning-rate multipliers (pure): constant, constant_with_warmup, cosine (with warm-up)."""

from __future__ import annotations

import math


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based)."""
    if schedule == "constant":
        return 1.0
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant_with_warmup" or step < warmup_steps:
        return warm
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"unknown lr schedule {schedule!r}")
