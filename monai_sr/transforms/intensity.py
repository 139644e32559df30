"""Intensity normalisation that records what it did and can be inverted exactly.

The network sees intensities divided by a robust maximum of the volume (a high percentile of the
voxels), so a T1 from any scanner lands near ``[0, 1]``; the result is multiplied back so the output
keeps the input's units.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["robust_max", "RobustScale"]


def robust_max(x: np.ndarray | torch.Tensor, percentile: float = 99.5) -> float:
    """The ``percentile`` of the voxel values of ``x``; falls back to the max (or 1.0) for flat images."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float32, copy=False).ravel()
    if a.size > 2_000_000:  # a strided sample is enough for a percentile and keeps memory flat
        a = a[:: a.size // 2_000_000]
    v = float(np.percentile(a, percentile))
    if v <= 0:
        v = float(np.abs(a).max())
    return v if v > 0 else 1.0


class RobustScale:
    """Divide by :func:`robust_max` and remember the factor; :meth:`inverse` multiplies it back.

    Examples::

        norm = RobustScale()
        y = norm(x)            # x / norm.scale
        x_back = norm.inverse(y)
    """

    def __init__(self, percentile: float = 99.5) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile
        self.scale: float | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = robust_max(x, self.percentile)
        return x / self.scale

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            raise RuntimeError("RobustScale.inverse called before the forward transform")
        return y * self.scale
