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

import torch

from monai_sr.transforms.kspace import fov_ramp, kept_bins

__all__ = ["project_acquired_band"]


def project_acquired_band(sr: torch.Tensor, lr: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """``sr + weight * ZF(lr - T(sr))`` over the last two axes (see the module docstring).

    Args:
        sr: super-resolved slices ``(..., s0 h, s1 w)``, any float dtype and device.
        lr: the input slices ``(..., h, w)`` they came from (same leading shape).
        weight: ``1`` hard projection, ``(0, 1)`` soft.

    Returns:
        float32 tensor on ``sr``'s device, shape of ``sr``. Computed with ``torch.fft`` in ``sr``'s
        precision (float64 for a float64 ``sr``, else float32), differentiable in ``sr``: a training loss behind the
        projection reaches the network only through the band the input did not measure
        (:class:`monai_sr.training.losses.AcquiredBandLoss`).
    """
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"data-consistency weight must be in (0, 1], got {weight}")
    if sr.shape[:-2] != lr.shape[:-2]:
        raise ValueError(f"sr {tuple(sr.shape)} and lr {tuple(lr.shape)} must share their leading axes")
    hi, lo = tuple(sr.shape[-2:]), tuple(lr.shape[-2:])
    if any(a % b for a, b in zip(hi, lo)) or any(a < b for a, b in zip(hi, lo)):
        raise ValueError(f"sr planes {hi} are not an integer multiple of lr planes {lo}")
    # In k-space of the fine grid, ZF(T(y)) keeps y's bins of the measured band (the two field-of-view
    # ramps cancel) and ZF(x) is x's spectrum, ramped and scaled, placed on those bins: one real FFT of
    # each plane and one inverse, instead of the four one-axis resamplings of the formula. The last axis
    # holds only the non-negative frequencies (rfft); the kept band is symmetric, so that is all of it.
    dtype = torch.float32 if sr.device.type == "mps" or sr.dtype != torch.float64 else torch.float64
    lead = sr.shape[:-2]
    y = sr.to(dtype).reshape(-1, *hi)
    x = lr.detach().to(sr.device, dtype).reshape(-1, *lo)
    spec_y = torch.fft.rfft2(y)
    spec_x = torch.fft.rfft2(x)
    n_cols = (lo[1] + 1) // 2  # kept non-negative column frequencies 0 .. n_cols - 1
    rows_hi = torch.as_tensor(kept_bins(lo[0], hi[0]), device=sr.device)[:, None]
    rows_lo = torch.as_tensor(kept_bins(lo[0], lo[0]), device=sr.device)[:, None]
    cols = torch.arange(n_cols, device=sr.device)[None, :]
    ramp_rows = torch.as_tensor(fov_ramp(lo[0], hi[0]) * (hi[0] / lo[0]), dtype=spec_x.dtype, device=sr.device)
    ramp_cols = torch.as_tensor(fov_ramp(lo[1], hi[1])[:n_cols] * (hi[1] / lo[1]), dtype=spec_x.dtype, device=sr.device)
    measured = (spec_x[:, :, :n_cols] * ramp_rows[:, None] * ramp_cols[None, :])[:, rows_lo, cols]
    delta = torch.zeros_like(spec_y)
    delta[:, rows_hi, cols] = weight * (measured - spec_y[:, rows_hi, cols])
    return (y + torch.fft.irfft2(delta, s=hi)).reshape(*lead, *hi).float()
