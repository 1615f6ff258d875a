"""Learning-rate schedules as a factor of the peak lr, per epoch (as the AGW code steps them).

``step``: linear warm-up from ``warmup_start_factor`` to 1 over ``warmup_epochs``, then x ``gamma`` at
each milestone. With the defaults (peak 0.1, start 0.1, milestones 20 and 50, gamma 0.1) this is the
paper's "staged learning rate starting at 0.01, peaking at 0.1, reducing to 0.001".
``cosine``: the same warm-up, then a half cosine from 1 down to ``min_lr_factor`` at the last epoch.
"""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(epoch: int, optim, epochs: int) -> float:
    """Factor of the peak lr for 0-based ``epoch`` of ``epochs``; ``optim`` is an ``OptimConfig``."""
    w = optim.warmup_epochs
    if epoch < w:
        return optim.warmup_start_factor + (1.0 - optim.warmup_start_factor) * epoch / w
    if optim.schedule == "step":
        return optim.gamma ** sum(epoch >= m for m in optim.milestones)
    span = max(1, epochs - 1 - w)
    t = min(1.0, (epoch - w) / span)
    return optim.min_lr_factor + (1.0 - optim.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
