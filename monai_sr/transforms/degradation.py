"""Simulate how MRI loses resolution, and the noise and artefacts that come with it.

Every transform here is an array transform with a dict twin (``...d``); the random ones (``Rand...``) sample
their parameters with their own ``R`` and call the deterministic one. A MetaTensor goes in and a MetaTensor
comes out; when the grid changes its affine is :func:`monai_sr.geometry.coarsened_affine` of the input's.

**Where low-resolution voxels sit.** A low-resolution (LR) grid ``s`` times coarser covers the same field of
view: LR voxel ``j`` sits at high-resolution (HR) index ``(j + 0.5) * s - 0.5`` (DESIGN.md; the HR grid is
:func:`monai_sr.geometry.scaled_affine` of the LR grid). Every resampler below samples there.

**In-plane (frequency and phase encoding).** A scanner with a ``s`` times smaller matrix over the same field
of view measures the central part of k-space; the image is the inverse FFT of that truncated k-space (a sinc
point-spread function). :func:`fourier_resample` does exactly that; :class:`SimulateLowResolution` adds an
optional k-space window (:class:`KSpaceWindow`: Hamming, Hann, Tukey; the filters scanners apply against
ringing) and partial Fourier (only a fraction of the phase-encoding lines measured, the rest zero-filled; the
image is then the magnitude, as a scanner without homodyne / POCS reconstruction shows it).

**Through-plane (2D multi-slice).** A 2D acquisition excites slices of a given thickness: each LR slice is the
HR signal weighted by the slice profile (:class:`SliceProfile`: Gaussian of FWHM = thickness, rectangular of
width = thickness, or a measured profile) centred on the LR slice centre. Thickness smaller than the slice
spacing leaves a gap; larger means overlapping slices. In a 3D acquisition the slice direction is a second
phase-encoding direction, so it is k-space truncated like the in-plane axes (``slice_axis=None``).

**Noise and artefacts.** :class:`RicianNoise` (magnitude of complex Gaussian noise at a given SNR),
:class:`GibbsRinging` (k-space truncation without downsampling), :class:`BiasField` (smooth multiplicative
field).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.utils import StrEnum, look_up_option

from monai_sr import geometry
from monai_sr.transforms._common import (
    DictTwin,
    RandDictTwin,
    RandomFromDeterministic,
    as_numpy,
    check_channel_first,
    wrap_like,
)
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.spacing import SLICE_THICKNESS_KEY, RatioPolicy, scale_from_spacing

__all__ = [
    "fourier_resample",
    "KSpaceTruncation",
    "KSpaceWindow",
    "SliceProfile",
    "kspace_window",
    "slice_profile_weights",
    "SimulateLowResolution",
    "SimulateLowResolutiond",
    "RandSimulateLowResolution",
    "RandSimulateLowResolutiond",
    "rician_sigma",
    "RicianNoise",
    "RicianNoised",
    "RandRicianNoise",
    "RandRicianNoised",
    "GibbsRinging",
    "GibbsRingingd",
    "RandGibbsRinging",
    "RandGibbsRingingd",
    "BiasField",
    "BiasFieldd",
    "RandBiasField",
    "RandBiasFieldd",
]


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
    ``axes`` are spatial axes (0 = first spatial axis). A MetaTensor comes back with the affine
    :func:`monai_sr.geometry.coarsened_affine` of the input's: the input is the field-of-view-preserving
    ``factors``-times finer grid of the output. (:class:`SimulateLowResolution` adds windows, partial
    Fourier and slice profiles.)

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
        if isinstance(img, MetaTensor):
            full = [1] * (np.asarray(img.affine).shape[0] - 1)
            for f, ax in zip(self.factors, self.axes):
                full[ax] = f
            return wrap_like(out, img, affine=geometry.coarsened_affine(np.asarray(img.affine, np.float64), full))
        if isinstance(img, torch.Tensor):
            return torch.as_tensor(out)
        return out


# ----------------------------------------------------------------------------------------------------------
# Low-resolution simulation
# ----------------------------------------------------------------------------------------------------------


class KSpaceWindow(StrEnum):
    """Filter applied over the measured k-space band (``u = |k| / k_max``).

    ``none``: rectangular (sharpest, most ringing); ``hamming``: ``0.54 + 0.46 cos(pi u)``; ``hann``:
    ``0.5 + 0.5 cos(pi u)``; ``tukey``: flat up to ``u = 1 - alpha``, then a cosine taper to 0.
    """

    NONE = "none"
    HAMMING = "hamming"
    HANN = "hann"
    TUKEY = "tukey"


class SliceProfile(StrEnum):
    """Shape of a 2D acquisition's slice profile: ``gaussian`` (FWHM = slice thickness) or ``rect`` (width =
    slice thickness). A measured profile is passed as an array instead (see :class:`SimulateLowResolution`)."""

    GAUSSIAN = "gaussian"
    RECT = "rect"


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


def _kspace_axis(
    x: np.ndarray, axis: int, n_out: int, *, window: str, alpha: float, partial_fourier: float
) -> np.ndarray:
    """Complex k-space truncation of ``x`` along ``axis`` to ``n_out`` samples (cell-centred; see the module
    docstring), with a window over the kept band and partial Fourier on its positive side."""
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


def slice_profile_weights(
    n_hr: int,
    factor: int,
    *,
    profile: str | np.ndarray = "gaussian",
    thickness: float | None = None,
    profile_spacing: float = 1.0,
) -> np.ndarray:
    """Weights ``W`` (``n_hr / factor`` by ``n_hr``) that turn HR slices into LR slices: ``lr = W @ hr``.

    LR slice ``j`` is centred at HR index ``c = (j + 0.5) * factor - 0.5``; HR slice ``i`` gets the profile's
    value at offset ``i - c``. All lengths are in HR voxels.

    Args:
        n_hr: number of HR slices (a multiple of ``factor``).
        factor: integer coarsening factor.
        profile: ``"gaussian"`` (FWHM = ``thickness``, sampled at the HR slice positions), ``"rect"``
            (width = ``thickness``; each HR slice weighs the fraction of its cell inside the slab, so a
            thickness of ``factor`` is the plain block mean), or a 1D array of a measured profile with
            samples ``profile_spacing`` apart, centred on its middle sample (linearly interpolated, zero
            outside).
        thickness: FWHM or width in HR voxels; default ``factor`` (contiguous slices, no gap).

    Rows are normalised to sum 1 (a constant stays constant, also at the ends of the volume where the
    profile is cut off).
    """
    check_positive_int(factor, "factor")
    if n_hr % factor or n_hr < 1:
        raise ValueError(f"{n_hr} slices are not a positive multiple of the factor {factor}")
    t = float(factor if thickness is None else thickness)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"slice thickness (FWHM) must be > 0, got {thickness}")
    centres = geometry.index_of_output_in_input(np.arange(n_hr // factor), 1.0 / factor)  # (j + 0.5) s - 0.5
    off = np.arange(n_hr)[None, :] - centres[:, None]
    if isinstance(profile, str):
        kind = look_up_option(profile, SliceProfile)
        if kind == SliceProfile.GAUSSIAN:
            w = np.exp(-4.0 * np.log(2.0) * (off / t) ** 2)
            w[np.abs(off) > 3.0 * t] = 0.0
        else:
            w = np.clip(np.minimum(off + 0.5, t / 2) - np.maximum(off - 0.5, -t / 2), 0.0, 1.0)
    else:
        p = check_profile(profile)
        if not (np.isfinite(profile_spacing) and profile_spacing > 0):
            raise ValueError(f"profile_spacing must be > 0, got {profile_spacing}")
        pos = (np.arange(p.size) - (p.size - 1) / 2.0) * profile_spacing
        w = np.interp(off, pos, p, left=0.0, right=0.0)
    total = w.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("the slice profile is narrower than the HR slice spacing: no HR slice falls inside it")
    return w / total


def check_positive_int(v: Any, name: str) -> int:
    """``int(v)``; ValueError naming ``name`` and the value when it is not a positive integer."""
    ok = isinstance(v, (int, np.integer, float, np.floating)) and not isinstance(v, bool) and float(v) == int(v) and v >= 1
    if not ok:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_profile(profile: Any) -> np.ndarray:
    """A measured slice profile as a 1D float64 array; ValueError on a bad one."""
    p = np.asarray(profile, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.max() <= 0:
        raise ValueError(f"a measured slice profile must be a 1D array of >= 2 finite non-negative values, got {profile!r}")
    return p


def _spacing(img: Any, n_spatial: int) -> np.ndarray:
    """Spacing from the affine of a MetaTensor; a plain array or tensor counts as 1 mm voxels."""
    if isinstance(img, MetaTensor):
        return geometry.spacing_from_affine(np.asarray(img.affine, np.float64))[:n_spatial]
    return np.ones(n_spatial)


def _factors(factors: Sequence[int] | int, n_spatial: int) -> tuple[int, ...]:
    f = (factors,) * n_spatial if np.isscalar(factors) else tuple(factors)
    if len(f) != n_spatial:
        raise ValueError(f"factors {list(f)} must have {n_spatial} values, one per spatial axis")
    return tuple(check_positive_int(v, "factors") for v in f)


class SimulateLowResolution:
    """Simulate the low-resolution scan of an HR volume, axis by axis, the way MRI acquires it.

    In-plane axes (all spatial axes but ``slice_axis``) are k-space truncated (sinc PSF) with an optional
    :class:`KSpaceWindow` and partial Fourier along ``phase_axis``; ``slice_axis`` (2D multi-slice) is
    weighted by the :class:`SliceProfile` of ``slice_thickness`` (see the module docstring and
    :func:`slice_profile_weights`). Output voxel ``j`` sits at input index ``(j + 0.5) * s - 0.5``, so a
    MetaTensor comes back with affine ``geometry.coarsened_affine(affine, factors)`` and, when there is a
    ``slice_axis``, ``meta["slice_thickness"]`` in mm.

    Args:
        factors: integer coarsening factor per spatial axis (an int for all axes); exclusive with
            ``target_spacing``.
        target_spacing: LR voxel size in mm per axis; factors come from the input's affine via
            :func:`monai_sr.transforms.spacing.scale_from_spacing` with ``spacing_policy``.
        spacing_policy: :class:`~monai_sr.transforms.spacing.RatioPolicy` for non-integer spacing ratios.
        slice_axis: spatial axis across 2D slices; None for a 3D acquisition (all axes k-space truncated).
        slice_profile: ``"gaussian"``, ``"rect"`` or a measured profile (1D array, samples
            ``profile_spacing`` mm apart, centred on the middle sample).
        slice_thickness: mm; FWHM of the Gaussian, width of the rect. Default: the LR slice spacing (no
            gap). Smaller than the LR spacing leaves a gap of ``spacing - thickness``. For a measured
            profile it is only recorded in meta.
        profile_spacing: mm between the samples of a measured profile; default the HR slice spacing.
        kspace_window: :class:`KSpaceWindow` over the measured band of the in-plane axes.
        tukey_alpha: taper fraction of the Tukey window, in (0, 1].
        partial_fourier: fraction of the phase-encoding lines measured, in [0.5, 1]. Below 1 the output is
            the magnitude of the zero-filled reconstruction.
        phase_axis: the in-plane axis partial Fourier applies to; default the first axis that is not
            ``slice_axis``.

    A plain array or tensor has no geometry: its voxels count as 1 mm.

    Examples::

        # 1 mm isotropic HR -> 2D multi-slice scan, 1 x 1 mm in-plane resampled to 2 x 2, 4 mm slices 3 mm thick
        lr = SimulateLowResolution((2, 2, 4), slice_axis=2, slice_thickness=3.0)(hr)
    """

    def __init__(
        self,
        factors: Sequence[int] | int | None = None,
        *,
        target_spacing: Sequence[float] | float | None = None,
        spacing_policy: str = RatioPolicy.EXACT,
        slice_axis: int | None = None,
        slice_profile: str | Sequence[float] | np.ndarray = SliceProfile.GAUSSIAN,
        slice_thickness: float | None = None,
        profile_spacing: float | None = None,
        kspace_window: str = KSpaceWindow.NONE,
        tukey_alpha: float = 0.5,
        partial_fourier: float = 1.0,
        phase_axis: int | None = None,
    ) -> None:
        if (factors is None) == (target_spacing is None):
            raise ValueError(f"give exactly one of factors ({factors!r}) and target_spacing ({target_spacing!r})")
        if factors is not None:
            for v in (factors,) if np.isscalar(factors) else factors:
                check_positive_int(v, "factors")
        if target_spacing is not None:
            ts = np.atleast_1d(np.asarray(target_spacing, dtype=np.float64))
            if not np.all(np.isfinite(ts) & (ts > 0)):
                raise ValueError(f"target_spacing must be positive mm, got {target_spacing!r}")
        self.spacing_policy = look_up_option(spacing_policy, RatioPolicy)
        if slice_axis is not None and not (isinstance(slice_axis, (int, np.integer)) and 0 <= slice_axis):
            raise ValueError(f"slice_axis must be a spatial axis index (>= 0) or None, got {slice_axis!r}")
        if isinstance(slice_profile, str):
            self.slice_profile: str | np.ndarray = look_up_option(slice_profile, SliceProfile)
        else:
            self.slice_profile = check_profile(slice_profile)
        if slice_thickness is not None and not (np.isfinite(slice_thickness) and slice_thickness > 0):
            raise ValueError(f"slice_thickness (the profile's FWHM) must be > 0 mm, got {slice_thickness!r}")
        if profile_spacing is not None and not (np.isfinite(profile_spacing) and profile_spacing > 0):
            raise ValueError(f"profile_spacing must be > 0 mm, got {profile_spacing!r}")
        self.kspace_window = look_up_option(kspace_window, KSpaceWindow)
        if not 0 < tukey_alpha <= 1:
            raise ValueError(f"tukey_alpha must be in (0, 1], got {tukey_alpha!r}")
        if not 0.5 <= partial_fourier <= 1:
            raise ValueError(f"partial_fourier must be in [0.5, 1], got {partial_fourier!r}")
        if phase_axis is not None and (phase_axis == slice_axis or not 0 <= phase_axis):
            raise ValueError(f"phase_axis must be an in-plane spatial axis (not slice_axis {slice_axis}), got {phase_axis!r}")
        self.factors, self.target_spacing = factors, target_spacing
        self.slice_axis, self.slice_thickness, self.profile_spacing = slice_axis, slice_thickness, profile_spacing
        self.tukey_alpha, self.partial_fourier, self.phase_axis = float(tukey_alpha), float(partial_fourier), phase_axis

    def resolve_factors(self, img: Any) -> tuple[int, ...]:
        """The integer factors for ``img`` (from ``target_spacing`` and its affine when given)."""
        n = check_channel_first(img, type(self).__name__)
        if self.target_spacing is None:
            return _factors(self.factors, n)
        if not isinstance(img, MetaTensor):
            raise ValueError("target_spacing needs a MetaTensor input (the spacing comes from its affine)")
        return scale_from_spacing(self.target_spacing, _spacing(img, n), policy=self.spacing_policy)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        factors = self.resolve_factors(img)
        n = len(factors)
        if self.slice_axis is not None and self.slice_axis >= n:
            raise ValueError(f"slice_axis {self.slice_axis} is not a spatial axis of a {n}D image")
        for axis, (size, f) in enumerate(zip(img.shape[1:], factors)):
            if size % f:
                raise ValueError(f"spatial axis {axis} has size {size}, not divisible by factor {f}")
        in_plane = [a for a in range(n) if a != self.slice_axis]
        phase = self.phase_axis if self.phase_axis is not None else (in_plane[0] if in_plane else None)
        if self.partial_fourier < 1 and phase not in in_plane:
            raise ValueError(f"phase_axis {phase} is not an in-plane axis of a {n}D image")
        spacing = _spacing(img, n)
        x = as_numpy(img)
        meta: dict = {}
        if self.slice_axis is not None:
            a, f = self.slice_axis, factors[self.slice_axis]
            thickness = self.slice_thickness if self.slice_thickness is not None else f * float(spacing[a])
            w = slice_profile_weights(
                x.shape[a + 1],
                f,
                profile=self.slice_profile,
                thickness=thickness / spacing[a],
                profile_spacing=(self.profile_spacing or spacing[a]) / spacing[a],
            )
            x = np.moveaxis(np.tensordot(w, x, axes=([1], [a + 1])), 0, a + 1)
            meta[SLICE_THICKNESS_KEY] = float(thickness)
        filtered = self.kspace_window != KSpaceWindow.NONE
        xc = x
        for a in in_plane:
            pf = self.partial_fourier if a == phase else 1.0
            if factors[a] > 1 or filtered or pf < 1:
                xc = _kspace_axis(
                    xc, a + 1, x.shape[a + 1] // factors[a], window=self.kspace_window, alpha=self.tukey_alpha, partial_fourier=pf
                )
        x = np.abs(xc) if self.partial_fourier < 1 else np.real(xc)
        affine = None
        if isinstance(img, MetaTensor):
            full = list(factors) + [1] * (np.asarray(img.affine).shape[0] - 1 - n)
            affine = geometry.coarsened_affine(np.asarray(img.affine, np.float64), full)
        return wrap_like(x, img, affine=affine, meta=meta if isinstance(img, MetaTensor) else None)


class SimulateLowResolutiond(DictTwin):
    """Dictionary twin of :class:`SimulateLowResolution` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SimulateLowResolution(*args, **kwargs)


def _check_range(r: Sequence[float] | None, name: str, lo: float, hi: float, *, open_lo: bool = False) -> tuple[float, float] | None:
    if r is None:
        return None
    v = tuple(float(x) for x in r)
    bad_lo = (lambda x: x <= lo) if open_lo else (lambda x: x < lo)
    if len(v) != 2 or v[0] > v[1] or bad_lo(v[0]) or v[1] > hi:
        bound = "(" if open_lo else "["
        raise ValueError(f"{name} must be (low, high) with low <= high inside {bound}{lo}, {hi}], got {r!r}")
    return v


class RandSimulateLowResolution(RandomFromDeterministic):
    """Sample a low-resolution acquisition, then apply :class:`SimulateLowResolution`.

    Sampled (each only when its range/choices are given): ``slice_thickness`` uniformly in
    ``slice_thickness_range`` (mm), ``partial_fourier`` uniformly in ``partial_fourier_range``, and the
    ``kspace_window`` among ``kspace_windows``. Every other keyword goes to :class:`SimulateLowResolution`
    unchanged. The transform applies with probability ``prob``.

    Examples::

        t = RandSimulateLowResolution((1, 1, 4), slice_axis=2, slice_thickness_range=(2.0, 4.0)).set_random_state(0)
    """

    def __init__(
        self,
        factors: Sequence[int] | int | None = None,
        *,
        prob: float = 1.0,
        slice_thickness_range: Sequence[float] | None = None,
        partial_fourier_range: Sequence[float] | None = None,
        kspace_windows: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(prob)
        self.fixed = dict(kwargs, factors=factors)
        SimulateLowResolution(**self.fixed)  # check the fixed arguments now
        self.slice_thickness_range = _check_range(slice_thickness_range, "slice_thickness_range", 0.0, np.inf, open_lo=True)
        self.partial_fourier_range = _check_range(partial_fourier_range, "partial_fourier_range", 0.5, 1.0)
        self.kspace_windows = [look_up_option(w, KSpaceWindow) for w in kspace_windows] if kspace_windows else None
        if kspace_windows is not None and not self.kspace_windows:
            raise ValueError(f"kspace_windows must name at least one window, got {kspace_windows!r}")

    def _sample(self) -> dict:
        p = dict(self.fixed)
        if self.slice_thickness_range:
            p["slice_thickness"] = float(self.R.uniform(*self.slice_thickness_range))
        if self.partial_fourier_range:
            p["partial_fourier"] = float(self.R.uniform(*self.partial_fourier_range))
        if self.kspace_windows:
            p["kspace_window"] = self.kspace_windows[int(self.R.randint(len(self.kspace_windows)))]
        return p

    def _deterministic(self, **params: Any) -> SimulateLowResolution:
        return SimulateLowResolution(**params)


class RandSimulateLowResolutiond(RandDictTwin):
    """Dictionary twin of :class:`RandSimulateLowResolution` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandSimulateLowResolution(*args, **kwargs), allow_missing_keys)


# ----------------------------------------------------------------------------------------------------------
# Rician noise
# ----------------------------------------------------------------------------------------------------------


def rician_sigma(x: np.ndarray | torch.Tensor, snr: float, *, foreground_threshold: float = 0.1) -> float:
    """Noise level ``sigma`` that gives ``x`` the signal-to-noise ratio ``snr``.

    **Definition.** ``SNR = mean foreground signal / sigma``: the mean of the noise-free image over its
    foreground (voxels above ``foreground_threshold`` times :func:`~monai_sr.transforms.intensity.robust_max`,
    the 99.5th percentile), divided by the standard deviation ``sigma`` of the Gaussian noise in each of the
    real and imaginary channels. In a bright flat region of level ``A`` with ``A / sigma`` large, the
    magnitude image then has a standard deviation close to ``sigma`` and a mean close to
    ``sqrt(A**2 + sigma**2)``.
    """
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be > 0, got {snr!r}")
    if not 0 <= foreground_threshold < 1:
        raise ValueError(f"foreground_threshold must be in [0, 1), got {foreground_threshold!r}")
    a = as_numpy(x)
    fg = a[a > foreground_threshold * robust_max(a)]
    level = float(fg.mean()) if fg.size else 0.0
    if level <= 0:
        raise ValueError("the image has no positive foreground: an SNR cannot define the noise level")
    return level / float(snr)


class RicianNoise:
    """Rician noise at a given SNR: ``|x + n_re + i n_im|`` with ``n_re, n_im ~ N(0, sigma)``.

    ``sigma`` is :func:`rician_sigma` (``SNR = mean foreground signal / sigma``, see there); the noise is
    drawn from ``numpy.random.default_rng(seed)``, so the same ``seed`` gives the same noise. A MetaTensor
    comes back with ``meta["rician_sigma"]``.

    Examples::

        noisy = RicianNoise(snr=20, seed=0)(img)
    """

    def __init__(self, snr: float, *, seed: int = 0, foreground_threshold: float = 0.1) -> None:
        if not (np.isfinite(snr) and snr > 0):
            raise ValueError(f"snr must be > 0, got {snr!r}")
        if not 0 <= foreground_threshold < 1:
            raise ValueError(f"foreground_threshold must be in [0, 1), got {foreground_threshold!r}")
        self.snr, self.seed, self.foreground_threshold = float(snr), int(seed), float(foreground_threshold)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        x = as_numpy(img)
        sigma = rician_sigma(x, self.snr, foreground_threshold=self.foreground_threshold)
        noise = np.random.default_rng(self.seed).normal(0.0, sigma, (2, *x.shape))
        out = np.hypot(x + noise[0], noise[1])
        return wrap_like(out, img, meta={"rician_sigma": sigma} if isinstance(img, MetaTensor) else None)


class RicianNoised(DictTwin):
    """Dictionary twin of :class:`RicianNoise` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RicianNoise(*args, **kwargs)


class RandRicianNoise(RandomFromDeterministic):
    """Sample an SNR uniformly in ``snr_range`` and a noise seed, then apply :class:`RicianNoise`
    (with probability ``prob``). Not MONAI's ``RandRicianNoise``, whose level is relative to the image's
    standard deviation rather than an SNR."""

    def __init__(self, snr_range: Sequence[float] = (10.0, 50.0), *, prob: float = 1.0, foreground_threshold: float = 0.1) -> None:
        super().__init__(prob)
        self.snr_range = _check_range(snr_range, "snr_range", 0.0, np.inf, open_lo=True)
        RicianNoise(1.0, foreground_threshold=foreground_threshold)
        self.foreground_threshold = foreground_threshold

    def _sample(self) -> dict:
        return {
            "snr": float(self.R.uniform(*self.snr_range)),
            "seed": int(self.R.randint(2**31 - 1)),
            "foreground_threshold": self.foreground_threshold,
        }

    def _deterministic(self, **params: Any) -> RicianNoise:
        return RicianNoise(params.pop("snr"), **params)


class RandRicianNoised(RandDictTwin):
    """Dictionary twin of :class:`RandRicianNoise` (same arguments after ``keys``); all keys get the same
    SNR and seed."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandRicianNoise(*args, **kwargs), allow_missing_keys)


# ----------------------------------------------------------------------------------------------------------
# Gibbs ringing
# ----------------------------------------------------------------------------------------------------------


class GibbsRinging:
    """Gibbs ringing: keep the central ``keep`` fraction of k-space (``|k| <= keep * n / 2``) along ``axes``
    and zero the rest, without changing the grid (an acquisition with a smaller matrix, zero-filled back
    to this one). ``keep = 1`` is the identity.

    Args:
        keep: fraction in (0, 1] of the k-space extent kept per axis.
        axes: spatial axes (default all).
    """

    def __init__(self, keep: float, *, axes: Sequence[int] | None = None) -> None:
        if not (np.isfinite(keep) and 0 < keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {keep!r}")
        if axes is not None and any(not isinstance(a, (int, np.integer)) or a < 0 for a in axes):
            raise ValueError(f"axes must be spatial axis indices (>= 0), got {axes!r}")
        self.keep, self.axes = float(keep), None if axes is None else tuple(int(a) for a in axes)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        n = check_channel_first(img, type(self).__name__, spatial=(1, 2, 3))
        axes = range(n) if self.axes is None else self.axes
        x = as_numpy(img).astype(np.complex128)
        for a in axes:
            if a >= n:
                raise ValueError(f"axis {a} is not a spatial axis of a {n}D image")
            size = x.shape[a + 1]
            k = np.fft.fftfreq(size, d=1.0 / size)
            shape = [1] * x.ndim
            shape[a + 1] = size
            mask = (np.abs(k) <= self.keep * size / 2).reshape(shape)
            x = np.fft.ifft(np.fft.fft(x, axis=a + 1) * mask, axis=a + 1)
        return wrap_like(np.real(x), img)


class GibbsRingingd(DictTwin):
    """Dictionary twin of :class:`GibbsRinging` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = GibbsRinging(*args, **kwargs)


class RandGibbsRinging(RandomFromDeterministic):
    """Sample ``keep`` uniformly in ``keep_range``, then apply :class:`GibbsRinging` (probability ``prob``)."""

    def __init__(self, keep_range: Sequence[float] = (0.5, 0.9), *, axes: Sequence[int] | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.keep_range = _check_range(keep_range, "keep_range", 0.0, 1.0, open_lo=True)
        GibbsRinging(1.0, axes=axes)
        self.axes = axes

    def _sample(self) -> dict:
        return {"keep": float(self.R.uniform(*self.keep_range)), "axes": self.axes}

    def _deterministic(self, **params: Any) -> GibbsRinging:
        return GibbsRinging(params.pop("keep"), **params)


class RandGibbsRingingd(RandDictTwin):
    """Dictionary twin of :class:`RandGibbsRinging` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandGibbsRinging(*args, **kwargs), allow_missing_keys)


# ----------------------------------------------------------------------------------------------------------
# Bias field
# ----------------------------------------------------------------------------------------------------------


def bias_exponents(spatial_dims: int, order: int) -> list[tuple[int, ...]]:
    """Exponents of the monomials of total degree ``<= order`` in ``spatial_dims`` variables, in the order
    :class:`BiasField` pairs them with its coefficients (lexicographic)."""
    return [e for e in product(range(order + 1), repeat=spatial_dims) if sum(e) <= order]


class BiasField:
    """Multiply by a smooth bias field ``exp(sum_m c_m * prod_a u_a ** e_ma)``.

    ``u_a = (2 i + 1) / n_a - 1`` is the position of voxel centre ``i`` across the field of view, in
    ``(-1, 1)``: the HR and LR grids of one field of view (DESIGN.md) see the same field at the same point.
    ``coefficients`` pair with :func:`bias_exponents` ``(spatial_dims, order)`` (``c`` for the constant
    term first); all zeros is the identity.
    """

    def __init__(self, coefficients: Sequence[float], *, order: int = 3) -> None:
        self.order = check_positive_int(order, "order") if order != 0 else 0
        c = np.asarray(coefficients, dtype=np.float64)
        if c.ndim != 1 or not np.all(np.isfinite(c)):
            raise ValueError(f"coefficients must be a 1D sequence of finite numbers, got {coefficients!r}")
        self.coefficients = c

    def field(self, spatial_shape: Sequence[int]) -> np.ndarray:
        """The multiplicative field on a grid of ``spatial_shape``."""
        exps = bias_exponents(len(spatial_shape), self.order)
        if len(exps) != self.coefficients.size:
            raise ValueError(
                f"{self.coefficients.size} coefficients given; a {len(spatial_shape)}D field of order {self.order} "
                f"needs {len(exps)}"
            )
        u = [(2.0 * np.arange(n) + 1.0) / n - 1.0 for n in spatial_shape]
        grids = np.meshgrid(*u, indexing="ij")
        log = np.zeros(tuple(spatial_shape))
        for c, e in zip(self.coefficients, exps):
            if c:
                log += c * np.prod([g**p for g, p in zip(grids, e)], axis=0)
        return np.exp(log)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        check_channel_first(img, type(self).__name__)
        return wrap_like(as_numpy(img) * self.field(img.shape[1:])[None], img)


class BiasFieldd(DictTwin):
    """Dictionary twin of :class:`BiasField` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = BiasField(*args, **kwargs)


class RandBiasField(RandomFromDeterministic):
    """Sample coefficients uniformly in ``coeff_range`` (the constant term stays 0), then apply
    :class:`BiasField` (probability ``prob``). Unlike MONAI's ``RandBiasField`` it has a deterministic
    twin and a field defined over the field of view (the same on HR and LR grids)."""

    def __init__(
        self, *, spatial_dims: int = 3, order: int = 3, coeff_range: Sequence[float] = (-0.2, 0.2), prob: float = 1.0
    ) -> None:
        super().__init__(prob)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        check_positive_int(order, "order")
        r = tuple(float(v) for v in coeff_range)
        if len(r) != 2 or r[0] > r[1] or not np.all(np.isfinite(r)):
            raise ValueError(f"coeff_range must be (low, high) with low <= high, got {coeff_range!r}")
        self.spatial_dims, self.order, self.coeff_range = spatial_dims, int(order), r

    def _sample(self) -> dict:
        c = self.R.uniform(*self.coeff_range, size=len(bias_exponents(self.spatial_dims, self.order)))
        c[0] = 0.0  # the constant term would only rescale the intensities
        return {"coefficients": c.tolist(), "order": self.order}

    def _deterministic(self, **params: Any) -> BiasField:
        return BiasField(params.pop("coefficients"), **params)


class RandBiasFieldd(RandDictTwin):
    """Dictionary twin of :class:`RandBiasField` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandBiasField(*args, **kwargs), allow_missing_keys)
