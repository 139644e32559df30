"""Low resolution: the low-resolution scan of a high-resolution volume, axis by axis, as MRI acquires it.

**In-plane (frequency and phase encoding).** The in-plane axes are k-space truncated
(:mod:`monai_sr.transforms.kspace`: sinc point-spread function) with an optional k-space window and
partial Fourier (only a fraction of the phase-encoding lines measured, the rest zero-filled; the image is
then the magnitude, as a scanner without homodyne / POCS reconstruction shows it).

**Through-plane (2D multi-slice).** A 2D acquisition excites slices of a given thickness: each LR slice is the
HR signal weighted by the slice profile (:class:`SliceProfile`: Gaussian of FWHM = thickness, rectangular of
width = thickness, or a measured profile) centred on the LR slice centre. Thickness smaller than the slice
spacing leaves a gap; larger means overlapping slices. In a 3D acquisition the slice direction is a second
phase-encoding direction, so it is k-space truncated like the in-plane axes (``slice_axis=None``).

LR voxel ``j`` sits at HR index ``(j + 0.5) * s - 0.5`` (DESIGN.md); a MetaTensor comes back with the affine
:func:`monai_sr.geometry.coarsened_affine` of the input's. :class:`SimulateLowResolution` is the array
transform, :class:`SimulateLowResolutiond` its dict twin, ``Rand...`` sample its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.utils import StrEnum, look_up_option

from monai_sr import geometry
from monai_sr.checks import check_positive_int, check_range, check_scale
from monai_sr.transforms._common import DictTwin, RandDictTwin, RandomFromDeterministic, as_numpy, check_channel_first, wrap_like
from monai_sr.transforms.kspace import KSpaceWindow, kspace_truncate_axis
from monai_sr.transforms.spacing import SLICE_THICKNESS_KEY, RatioPolicy, scale_from_spacing

__all__ = [
    "SliceProfile",
    "slice_profile_weights",
    "check_profile",
    "SimulateLowResolution",
    "SimulateLowResolutiond",
    "RandSimulateLowResolution",
    "RandSimulateLowResolutiond",
]


class SliceProfile(StrEnum):
    """Shape of a 2D acquisition's slice profile: ``gaussian`` (FWHM = slice thickness) or ``rect`` (width =
    slice thickness). A measured profile is passed as an array instead (see :class:`SimulateLowResolution`)."""

    GAUSSIAN = "gaussian"
    RECT = "rect"


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
    check_positive_int("factor", factor)
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
    f = check_scale(factors, name="factors")
    f = f * n_spatial if np.isscalar(factors) else f
    if len(f) != n_spatial:
        raise ValueError(f"factors {list(f)} must have {n_spatial} values, one per spatial axis")
    return f


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
            check_scale(factors, name="factors")
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
                xc = kspace_truncate_axis(
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
        self.slice_thickness_range = (
            None if slice_thickness_range is None else check_range("slice_thickness_range", slice_thickness_range, low=0.0, open_low=True)
        )
        self.partial_fourier_range = (
            None if partial_fourier_range is None else check_range("partial_fourier_range", partial_fourier_range, low=0.5, high=1.0)
        )
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
