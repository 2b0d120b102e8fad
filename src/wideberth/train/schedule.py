"""Learning-rate schedules as pure functions of the optimiser step."""

from __future__ import annotations

import math

from ..config import OptimConfig, ScheduleConfig

__all__ = ["lr_at"]


def lr_at(
    step: int,
    *,
    total_steps: int,
    steps_per_epoch: int,
    optim: OptimConfig,
    schedule: ScheduleConfig,
) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a ``total_steps`` run."""
    if schedule.name == "constant":
        lr = optim.lr
    elif schedule.name == "piecewise":
        scale = steps_per_epoch if schedule.milestone_unit == "epoch" else 1
        passed = sum(1 for m in schedule.milestones if step >= m * scale)
        lr = schedule.values[passed]
    elif schedule.name == "cosine":
        frac = min(step / max(total_steps, 1), 1.0)
        lr = schedule.min_lr + 0.5 * (optim.lr - schedule.min_lr) * (1 + math.cos(math.pi * frac))
    else:  # pragma: no cover - validated in config
        raise ValueError(f"unknown schedule {schedule.name!r}")
    if schedule.warmup_steps and step < schedule.warmup_steps:
        lr *= (step + 1) / schedule.warmup_steps
    return lr
