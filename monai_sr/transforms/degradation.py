"""Simulate how MRI loses resolution.

In-plane, an MR scanner with a smaller acquisition matrix over the same field of view measures the
central part of k-space; the image is the inverse FFT of that truncated k-space. :func:`fourier_resample`
does exactly that, with voxel centres placed by the field-of-view rule of DESIGN.md (output voxel ``j``
at input index ``(j + 0.5) * n_in / n_out - 0.5``), so the affine from
:func:`monai_sr.geometry.scaled_affine` stays true. The same function zero-fills k-space to upsample
(ideal sinc interpolation), which serves as a classical baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["fourier_resample", "KSpaceTruncation"]


def _resample_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = x.shape[axis]
    if n_out == n_in:
        return x
    spec = np.fft.fft(x, axis=axis)
    k = np.fft.fftfreq(n_in, d=1.0 / n_in)  # signed integer frequencies
    r = n_in / n_out
    # Phase ramp: a shift by (r - 1) / 2 input voxels puts output voxel centres where the FOV rule says.
    ramp = np.exp(1j * np.pi * k * (r - 1.0) / n_in)
    shape = [1] * x.ndim
    shape[axis] = n_in
    spec = spec * ramp.reshape(shape)
    n_keep = min(n_in, n_out)
    half = n_keep // 2
    # Keep |k| < n_keep / 2; the unpaired Nyquist bin of an even size is dropped so the result stays real.
    keep_pos = (n_keep + 1) // 2  # 0 .. keep_pos-1
    idx_in = np.r_[np.arange(keep_pos), np.arange(n_in - half + (n_keep % 2 == 0), n_in)]
    idx_out = np.r_[np.arange(keep_pos), np.arange(n_out - half + (n_keep % 2 == 0), n_out)]
    out_shape = list(x.shape)
    out_shape[axis] = n_out
    out = np.zeros(out_shape, dtype=np.complex128)
    sl_in = [slice(None)] * x.ndim
    sl_out = [slice(None)] * x.ndim
    sl_in[axis] = idx_in
    sl_out[axis] = idx_out
    out[tuple(sl_out)] = spec[tuple(sl_in)]
    return np.fft.ifft(out, axis=axis).real * (n_out / n_in)


def fourier_resample(x: np.ndarray, shape: Sequence[int], axes: Sequence[int]) -> np.ndarray:
    """Resample ``x`` to ``shape`` along ``axes`` by truncating or zero-filling k-space.

    Args:
        x: real array (any number of dimensions).
        shape: new size for each axis in ``axes``.
        axes: the axes to resample; other axes are untouched.

    Returns:
        float64 array. Down-sampling is what a scanner with a smaller matrix over the same field of view
        reconstructs (sinc point-spread function); up-sampling is ideal band-limited interpolation.
        Intensities keep their units (a constant image stays the same constant).
    """
    if len(shape) != len(axes):
        raise ValueError(f"shape {list(shape)} and axes {list(axes)} must have the same length")
    out = np.asarray(x, dtype=np.float64)
    for n, ax in zip(shape, axes):
        if int(n) < 1:
            raise ValueError(f"output size must be positive, got {n} for axis {ax}")
        out = _resample_axis(out, ax, int(n))
    return out


class KSpaceTruncation:
    """Lower the resolution along ``axes`` by integer ``factors`` the way MRI does (truncated k-space).

    Takes a channel-first array or tensor (``C, *spatial``) whose spatial sizes along ``axes`` are
    divisible by the factors; returns the same type, ``factors`` times smaller along those axes.
    ``axes`` are spatial axes (0 = first spatial axis). The result's affine is
    :func:`monai_sr.geometry.coarsened_affine` of the input's: the input is the field-of-view-preserving
    ``factors``-times finer grid of the output.

    Examples::

        lr = KSpaceTruncation(factors=(2, 2), axes=(0, 1))(hr)  # hr: (1, 180, 216, 60) -> (1, 90, 108, 60)
    """

    def __init__(self, factors: Sequence[int], axes: Sequence[int]) -> None:
        if len(factors) != len(axes):
            raise ValueError(f"factors {list(factors)} and axes {list(axes)} must have the same length")
        for f in factors:
            if int(f) != f or f < 1:
                raise ValueError(f"factors must be positive integers, got {f}")
        self.factors = tuple(int(f) for f in factors)
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
        if isinstance(img, torch.Tensor):
            return torch.as_tensor(out)
        return out
