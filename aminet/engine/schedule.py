"""Learning-rate schedules as a factor of the peak lr, per epoch (as the AGW code steps them).

``step``: linear warm-up from ``warmup_start_factor`` to 1 over the warm-up epochs, then x ``gamma`` at
each milestone. Warm-up and milestones are shares of the run's epochs (``OptimConfig.warmup_epochs`` /
``milestone_epochs``). With the defaults over 80 epochs (peak 0.1, start 0.1, warm-up 10 epochs,
milestones 20 and 50, gamma 0.1) this is the paper's "staged learning rate starting at 0.01, peaking at
0.1, reducing to 0.001".
``cosine``: the same warm-up, then a half cosine from 1 down to ``min_lr_factor`` at the last epoch.
"""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(epoch: int, optim, epochs: int) -> float:
    """Factor of the peak lr for 0-based ``epoch`` of ``epochs``; ``optim`` is an ``OptimConfig``."""
    w = optim.warmup_epochs(epochs)
    if epoch < w:
        return optim.warmup_start_factor + (1.0 - optim.warmup_start_factor) * epoch / w
    if optim.schedule == "step":
        return optim.gamma ** sum(epoch >= m for m in optim.milestone_epochs(epochs))
    span = max(1, epochs - 1 - w)
    t = min(1.0, (epoch - w) / span)
    return optim.min_lr_factor + (1.0 - optim.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
