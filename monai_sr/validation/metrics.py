"""Image-quality metrics for MRI with an explicit data range and an optional mask.

MRI has no fixed intensity range, so every metric takes ``data_range`` explicitly (never 255). SSIM is
MONAI's (:func:`monai.metrics.regression.compute_ssim_and_cs`, Gaussian window 11, sigma 1.5) computed
per 2D slice, its map averaged inside the mask.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics.regression import compute_ssim_and_cs
from scipy import ndimage

__all__ = ["psnr", "ssim", "head_mask"]


def _check(pred: np.ndarray, ref: np.ndarray, data_range: float) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")


def psnr(pred: np.ndarray, ref: np.ndarray, *, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``, MSE over ``mask`` if given."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    _check(pred, ref, data_range)
    err = (pred - ref) ** 2
    mse = float(err[mask.astype(bool)].mean() if mask is not None else err.mean())
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(
    pred: np.ndarray, ref: np.ndarray, *, data_range: float, mask: np.ndarray | None = None, axis: int = 2
) -> float:
    """Mean structural similarity of the 2D slices along ``axis``, averaged inside ``mask``.

    The SSIM map is valid only where the 11x11 window fits, so the mask is cropped to match it.
    """
    pred, ref = np.asarray(pred, np.float32), np.asarray(ref, np.float32)
    _check(pred, ref, data_range)
    p = torch.from_numpy(np.moveaxis(pred, axis, 0)).unsqueeze(1).contiguous()
    r = torch.from_numpy(np.moveaxis(ref, axis, 0)).unsqueeze(1).contiguous()
    smap, _ = compute_ssim_and_cs(p, r, spatial_dims=2, kernel_size=[11, 11], kernel_sigma=[1.5, 1.5], data_range=data_range)
    smap = smap[:, 0].numpy()
    if mask is None:
        return float(smap.mean())
    m = np.moveaxis(np.asarray(mask, bool), axis, 0)
    crop = (m.shape[1] - smap.shape[1]) // 2, (m.shape[2] - smap.shape[2]) // 2
    m = m[:, crop[0] : crop[0] + smap.shape[1], crop[1] : crop[1] + smap.shape[2]]
    return float(smap[m].mean())


def head_mask(ref: np.ndarray, *, fraction: float = 0.1) -> np.ndarray:
    """Foreground of a head MRI: voxels above ``fraction`` of the 99th percentile, holes filled per slice,
    slightly dilated so edges count."""
    ref = np.asarray(ref, np.float32)
    thr = fraction * float(np.percentile(ref, 99))
    mask = ref > thr
    mask = ndimage.binary_closing(mask, iterations=2)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_dilation(mask, iterations=2)
