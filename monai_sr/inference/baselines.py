"""The classical baselines of in-plane SR, as networks any inferer runs and as plain functions.

* Zero-filled k-space interpolation (:class:`ZeroFilledInterpolation`, :func:`zero_filled`): each plane's
  k-space padded with zeros to the finer grid (:func:`monai_sr.transforms.kspace.fourier_resample`, with
  the field-of-view rule's phase). For a k-space-limited acquisition it is the free physics baseline: it
  keeps every measured coefficient and invents nothing.
* Bicubic (:class:`BicubicInterpolation`, :func:`bicubic`): ``torch.nn.functional.interpolate`` with
  ``align_corners=False``, which is the field-of-view grid of DESIGN.md.

The modules declare ``scale`` like the networks of :mod:`monai_sr.networks`, so
``SliceWiseInferer()(volume, ZeroFilledInterpolation(2))`` gives a MetaTensor on the field-of-view-rule
grid, and ``monai-sr enhance --baseline zero-filled`` writes it as a derived series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.utils import StrEnum
from torch import nn

from monai_sr.checks import check_scale
from monai_sr.transforms.kspace import fourier_resample

__all__ = ["Baseline", "ZeroFilledInterpolation", "BicubicInterpolation", "zero_filled", "bicubic", "baseline_network"]


class Baseline(StrEnum):
    """The baselines by name (``--baseline`` of ``monai-sr enhance``)."""

    ZERO_FILLED = "zero-filled"
    BICUBIC = "bicubic"


class ZeroFilledInterpolation(nn.Module):
    """Zero-filled k-space interpolation of 2D planes ``(N, C, h, w) -> (N, C, s0 h, s1 w)`` (float32)."""

    def __init__(self, scale: int | Sequence[int] = 2) -> None:
        super().__init__()
        self.scale = check_scale(scale, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[-2] * self.scale[0], x.shape[-1] * self.scale[1])
        out = fourier_resample(x.detach().to("cpu", torch.float64).numpy(), shape, (x.ndim - 2, x.ndim - 1))
        return torch.from_numpy(out.astype(np.float32)).to(x.device)


class BicubicInterpolation(nn.Module):
    """Bicubic interpolation of 2D planes ``(N, C, h, w) -> (N, C, s0 h, s1 w)``, ``align_corners=False``."""

    def __init__(self, scale: int | Sequence[int] = 2) -> None:
        super().__init__()
        self.scale = check_scale(scale, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=tuple(float(s) for s in self.scale), mode="bicubic", align_corners=False)


def baseline_network(name: str, scale: int | Sequence[int] = 2) -> nn.Module:
    """The baseline ``name`` (a :class:`Baseline` value) as a network of ``scale``."""
    kind = Baseline(name) if name in set(Baseline) else None
    if kind is None:
        raise ValueError(f"unknown baseline {name!r}; available: {[b.value for b in Baseline]}")
    return (ZeroFilledInterpolation if kind == Baseline.ZERO_FILLED else BicubicInterpolation)(scale)


def _planes(module: nn.Module, volume: np.ndarray) -> np.ndarray:
    """Run a 2D baseline over the slices (axis 2) of ``volume`` ``(X, Y, Z)``."""
    t = torch.from_numpy(np.moveaxis(np.asarray(volume, np.float32), 2, 0)[:, None].copy())
    with torch.inference_mode():
        return np.moveaxis(module(t)[:, 0].numpy(), 0, 2)


def zero_filled(volume: np.ndarray, scale: int | Sequence[int] = 2) -> np.ndarray:
    """Zero-filled k-space interpolation of each slice of ``volume`` ``(X, Y, Z)`` in-plane; float64."""
    s = check_scale(scale, 2)
    v = np.asarray(volume, np.float64)
    return fourier_resample(v, (v.shape[0] * s[0], v.shape[1] * s[1]), (0, 1))


def bicubic(volume: np.ndarray, scale: int | Sequence[int] = 2) -> np.ndarray:
    """Bicubic interpolation (``align_corners=False``) of each slice of ``volume`` ``(X, Y, Z)``; float32."""
    return _planes(BicubicInterpolation(scale), volume)
