"""k-space: how MRI lowers resolution in-plane, by measuring only the centre of k-space.

A scanner with a ``s`` times smaller matrix over the same field of view measures the central part of
k-space; the image is the inverse FFT of that truncated k-space (a sinc point-spread function).
:func:`fourier_resample` does exactly that on any axes and :class:`KSpaceTruncation` is its transform on a
channel-first image. :func:`kspace_window` weighs the measured band by a :class:`KSpaceWindow` (Hamming,
Hann, Tukey: the filters scanners apply against ringing); :func:`kspace_truncate_axis` is the complex
truncation with window and partial Fourier that
:class:`~monai_sr.transforms.lowres.SimulateLowResolution` applies per in-plane axis.

**Where low-resolution voxels sit.** A low-resolution (LR) grid ``s`` times coarser covers the same field of
view: LR voxel ``j`` sits at high-resolution (HR) index ``(j + 0.5) * s - 0.5`` (DESIGN.md; the HR grid is
:func:`monai_sr.geometry.scaled_affine` of the LR grid). Every resampler here samples there, and a
MetaTensor comes back with the affine :func:`monai_sr.geometry.coarsened_affine` of the input's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import StrEnum, look_up_option

from monai_sr import geometry
from monai_sr.checks import check_scale
from monai_sr.transforms._common import wrap_like

__all__ = ["fourier_resample", "kept_bins", "fov_ramp", "KSpaceTruncation", "KSpaceWindow", "kspace_window", "kspace_truncate_axis"]


def kept_bins(n_keep: int, n: int) -> np.ndarray:
    """FFT indices (``np.fft`` order) on an ``n``-point axis of the ``n_keep`` central frequencies
    ``|k| < n_keep / 2``: the band an ``n_keep``-point acquisition measures. The unpaired Nyquist bin of an
    even ``n_keep`` is left out, so a real image stays real; bin ``j`` here is bin ``j`` of
    ``kept_bins(n_keep, n_keep)`` on the ``n_keep``-point axis."""
    keep_pos, half = (n_keep + 1) // 2, n_keep // 2
    return np.r_[np.arange(keep_pos), np.arange(n - half + (n_keep % 2 == 0), n)]


def fov_ramp(n_in: int, n_out: int) -> np.ndarray:
    """Phase ramp (complex128, ``np.fft`` order, length ``n_in``) that resampling ``n_in -> n_out`` points
    applies to the input's spectrum: a shift by ``(n_in / n_out - 1) / 2`` input voxels, which puts the
    output voxel centres where the field-of-view rule says."""
    k = np.fft.fftfreq(n_in, d=1.0 / n_in)  # signed integer frequencies
    return np.exp(1j * np.pi * k * (n_in / n_out - 1.0) / n_in)


def _resample_axis(x: torch.Tensor, axis: int, n_out: int) -> torch.Tensor:
    """One axis of :func:`fourier_resample`: FFT, field-of-view phase ramp, keep or zero-fill the central
    bins, inverse FFT; differentiable, on ``x``'s device, complex in ``x``'s precision."""
    n_in = x.shape[axis]
    if n_out == n_in:
        return x
    cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
    shape = [1] * x.ndim
    shape[axis] = n_in
    spec = torch.fft.fft(x, dim=axis) * torch.as_tensor(fov_ramp(n_in, n_out), dtype=cdtype, device=x.device).reshape(shape)
    n_keep = min(n_in, n_out)
    idx_in = torch.as_tensor(kept_bins(n_keep, n_in), device=x.device)
    idx_out = torch.as_tensor(kept_bins(n_keep, n_out), device=x.device)
    out_shape = list(x.shape)
    out_shape[axis] = n_out
    out = torch.zeros(out_shape, dtype=spec.dtype, device=x.device).index_copy(axis, idx_out, spec.index_select(axis, idx_in))
    return torch.fft.ifft(out, dim=axis).real * (n_out / n_in)


def fourier_resample(x: np.ndarray | torch.Tensor, shape: Sequence[int], axes: Sequence[int]) -> np.ndarray | torch.Tensor:
    """Resample ``x`` to ``shape`` along ``axes`` by truncating or zero-filling k-space.

    Args:
        x: real array (any number of dimensions), or a real float tensor.
        shape: new size for each axis in ``axes``.
        axes: the axes to resample; other axes are untouched.

    Returns:
        for an array: a float64 array; for a tensor: a tensor of its dtype on its device, differentiable
        (the same operator, computed with ``torch.fft``; a training loss can go through it).
        Down-sampling is what a scanner with a smaller matrix over the same field of view
        reconstructs (sinc point-spread function); up-sampling is ideal band-limited interpolation.
        Intensities keep their units (a constant image stays the same constant).
    """
    if len(shape) != len(axes):
        raise ValueError(f"shape {list(shape)} and axes {list(axes)} must have the same length")
    is_tensor = isinstance(x, torch.Tensor)
    if is_tensor and not x.is_floating_point():
        raise ValueError(f"fourier_resample needs a real float tensor, got {x.dtype}")
    # One implementation for both: an array goes through torch.fft in float64 (no copy) and comes back.
    out = x if is_tensor else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    for n, ax in zip(shape, axes):
        if int(n) < 1:
            raise ValueError(f"output size must be positive, got {n} for axis {ax}")
        out = _resample_axis(out, ax % out.ndim, int(n))
    return out if is_tensor else out.numpy()


class KSpaceTruncation:
    """Lower the resolution along ``axes`` by integer ``factors`` the way MRI does (truncated k-space).

    Takes a channel-first array or tensor (``C, *spatial``) whose spatial sizes along ``axes`` are
    divisible by the factors; returns the same type, ``factors`` times smaller along those axes.
    ``axes`` are spatial axes (0 = first spatial axis). A MetaTensor comes back with the affine
    :func:`monai_sr.geometry.coarsened_affine` of the input's: the input is the field-of-view-preserving
    ``factors``-times finer grid of the output. (:class:`~monai_sr.transforms.lowres.SimulateLowResolution` adds windows, partial
    Fourier and slice profiles.)

    Examples::

        lr = KSpaceTruncation(factors=(2, 2), axes=(0, 1))(hr)  # hr: (1, 180, 216, 60) -> (1, 90, 108, 60)
    """

    def __init__(self, factors: Sequence[int], axes: Sequence[int]) -> None:
        if len(factors) != len(axes):
            raise ValueError(f"factors {list(factors)} and axes {list(axes)} must have the same length")
        self.factors = check_scale(factors, len(axes), name="factors")
        self.axes = tuple(int(a) for a in axes)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        sizes = []
        for f, ax in zip(self.factors, self.axes):
            n = arr.shape[ax + 1]
            if n % f:
                raise ValueError(f"spatial axis {ax} has size {n}, not divisible by factor {f}")
            sizes.append(n // f)
        out = fourier_resample(arr, sizes, [a + 1 for a in self.axes]).astype(np.float32)
        if isinstance(img, MetaTensor):
            full = [1] * (np.asarray(img.affine).shape[0] - 1)
            for f, ax in zip(self.factors, self.axes):
                full[ax] = f
            return wrap_like(out, img, affine=geometry.coarsened_affine(np.asarray(img.affine, np.float64), full))
        if isinstance(img, torch.Tensor):
            return torch.as_tensor(out)
        return out



class KSpaceWindow(StrEnum):
    """Filter applied over the measured k-space band (``u = |k| / k_max``).

    ``none``: rectangular (sharpest, most ringing); ``hamming``: ``0.54 + 0.46 cos(pi u)``; ``hann``:
    ``0.5 + 0.5 cos(pi u)``; ``tukey``: flat up to ``u = 1 - alpha``, then a cosine taper to 0.
    """

    NONE = "none"
    HAMMING = "hamming"
    HANN = "hann"
    TUKEY = "tukey"


def kspace_window(k: np.ndarray, n_keep: int, window: str = "none", *, alpha: float = 0.5) -> np.ndarray:
    """Weights of :class:`KSpaceWindow` ``window`` at signed integer frequencies ``k`` of a band of ``n_keep``
    frequencies (``|k| < n_keep / 2``)."""
    kind = look_up_option(window, KSpaceWindow)
    u = np.abs(np.asarray(k, dtype=np.float64)) / (n_keep / 2.0)
    if kind == KSpaceWindow.NONE:
        return np.ones_like(u)
    if kind == KSpaceWindow.HAMMING:
        return 0.54 + 0.46 * np.cos(np.pi * u)
    if kind == KSpaceWindow.HANN:
        return 0.5 + 0.5 * np.cos(np.pi * u)
    flat = 1.0 - alpha
    return np.where(u <= flat, 1.0, 0.5 * (1.0 + np.cos(np.pi * (u - flat) / alpha)))


def kspace_truncate_axis(
    x: np.ndarray, axis: int, n_out: int, *, window: str, alpha: float, partial_fourier: float
) -> np.ndarray:
    """Complex k-space truncation of ``x`` along ``axis`` to ``n_out`` samples (cell-centred; see the module
    docstring), with a :func:`kspace_window` over the kept band and, for ``partial_fourier < 1``, only that
    fraction of the band measured (the highest positive lines are zero-filled)."""
    n_in = x.shape[axis]
    spec = np.fft.fft(x, axis=axis)
    k_all = np.fft.fftfreq(n_in, d=1.0 / n_in)
    n_keep = min(n_in, n_out)
    half, keep_pos = n_keep // 2, (n_keep + 1) // 2
    # Signed frequencies kept: |k| < n_keep / 2 (an even band drops its unpaired Nyquist bin, so a real
    # input stays real).
    k = np.r_[np.arange(keep_pos), np.arange(-half + (n_keep % 2 == 0), 0)].astype(np.int64)
    # LR voxel 0 sits at HR index (s - 1) / 2 (DESIGN.md): shift by that before sampling.
    shift = float(geometry.index_of_output_in_input(0, n_out / n_in))
    weight = np.exp(2j * np.pi * k_all[k % n_in] * shift / n_in) * kspace_window(k, n_keep, window, alpha=alpha)
    if partial_fourier < 1.0:
        n_acq = int(np.ceil(partial_fourier * n_keep))
        weight = weight * (k <= np.sort(k)[n_acq - 1])  # the highest positive lines are not measured
    shape = [1] * x.ndim
    shape[axis] = k.size
    out_shape = list(x.shape)
    out_shape[axis] = n_out
    out = np.zeros(out_shape, dtype=np.complex128)
    sl_in, sl_out = [slice(None)] * x.ndim, [slice(None)] * x.ndim
    sl_in[axis], sl_out[axis] = k % n_in, k % n_out
    out[tuple(sl_out)] = spec[tuple(sl_in)] * weight.reshape(shape)
    return np.fft.ifft(out, axis=axis) * (n_out / n_in)


