"""Data consistency for in-plane SR of k-space-limited MR slices: keep what was measured, add the rest.

A scanner with an ``n x m`` matrix measures the central ``n x m`` band of k-space; the slice it
reconstructs is exactly that band (:func:`monai_sr.transforms.kspace.fourier_resample` is the operator,
with the field-of-view rule's phase). A super-resolved slice ``y`` on the ``s``-times finer grid has its
own estimate of that band, and a network's errors there only cost (its useful work lies outside it).
The projection puts the measured band back::

    y_dc = y + w * ZF(x - T(y))

``T`` truncates k-space onto the input grid, ``ZF`` zero-fills back (both :func:`fourier_resample`, so
``ZF(T(y))`` is ``y``'s band and ``T(ZF(x)) = x`` up to an even size's unpaired Nyquist bin, which
:func:`fourier_resample` drops in both directions). With ``w = 1`` (hard) ``T(y_dc) = T(ZF(x))``: the
acquired band of the output equals the input's; ``0 < w < 1`` (soft) moves it that far towards the
input (for a noisy input whose band the network also denoised). Out of the band ``y`` is untouched.

Assumption, stated where it matters: the input is the scanner's reconstruction of its band, without an
apodisation filter; with a k-space filter (Hamming, Fermi...) the measured band is attenuated towards its
edge and a hard projection keeps that attenuation. The projection is linear in ``y``, so it commutes
with the geometric self-ensemble's mean.
"""

from __future__ import annotations

import numpy as np
import torch

from monai_sr.transforms.kspace import fourier_resample

__all__ = ["project_acquired_band"]


def project_acquired_band(sr: torch.Tensor, lr: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """``sr + weight * ZF(lr - T(sr))`` over the last two axes (see the module docstring).

    Args:
        sr: super-resolved slices ``(..., s0 h, s1 w)``, any float dtype and device.
        lr: the input slices ``(..., h, w)`` they came from (same leading shape).
        weight: ``1`` hard projection, ``(0, 1)`` soft.

    Returns:
        float32 tensor on ``sr``'s device, shape of ``sr``. Computed in float64 numpy on the CPU.
    """
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"data-consistency weight must be in (0, 1], got {weight}")
    if sr.shape[:-2] != lr.shape[:-2]:
        raise ValueError(f"sr {tuple(sr.shape)} and lr {tuple(lr.shape)} must share their leading axes")
    hi, lo = tuple(sr.shape[-2:]), tuple(lr.shape[-2:])
    if any(a % b for a, b in zip(hi, lo)) or any(a < b for a, b in zip(hi, lo)):
        raise ValueError(f"sr planes {hi} are not an integer multiple of lr planes {lo}")
    axes = (sr.ndim - 2, sr.ndim - 1)
    y = sr.detach().to("cpu", torch.float64).numpy()
    x = lr.detach().to("cpu", torch.float64).numpy()
    residual = x - fourier_resample(y, lo, axes)
    out = y + weight * fourier_resample(residual, hi, axes)
    return torch.from_numpy(out.astype(np.float32)).to(sr.device)
