"""The learning-rate schedule of every monai_sr training loop: linear warm-up, then cosine decay to 1 %.

* :func:`cosine_decay`: the factor ``0.01 + 0.99 * (1 + cos(pi * t)) / 2`` at progress ``t`` in ``[0, 1]``
  (clipped): 1 at the start, 0.01 at the end. :func:`monai_sr.training.internal.fit_on_volume` uses it
  with the progress of its step or time budget.
* :func:`warmup_cosine`: ``peak * (step + 1) / warmup`` for the first ``warmup`` steps, then ``peak *
  cosine_decay((step - warmup) / (total - warmup))``. With ``peak=1`` it is the factor of
  ``torch.optim.lr_scheduler.LambdaLR`` (:func:`warmup_cosine_lambda`); scripts that set the rate
  themselves pass their peak rate.

Examples::

    for g in opt.param_groups:
        g["lr"] = warmup_cosine(step, total=args.steps, warmup=args.warmup, peak=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_lambda(steps, warmup))
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["cosine_decay", "warmup_cosine", "warmup_cosine_lambda"]


def cosine_decay(progress: float) -> float:
    """``0.01 + 0.99 * 0.5 * (1 + cos(pi * min(1, progress)))``: from 1 down to 0.01 (1 % of the peak)."""
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(step: int, *, total: int, warmup: int = 0, peak: float = 1.0) -> float:
    """Learning rate (``peak`` times the factor) at optimiser step ``step`` (0-based) of ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * cosine_decay((step - warmup) / max(1, total - warmup))


def warmup_cosine_lambda(total: int, warmup: int = 0) -> Callable[[int], float]:
    """:func:`warmup_cosine` factor as a function of the step, for ``LambdaLR`` (per iteration)."""
    return lambda step: warmup_cosine(step, total=total, warmup=warmup)
