"""Self-supervised through-plane super-resolution pairs (SMORE-style), from the input volume itself.

A 2D multi-slice MR volume is sharp in-plane and coarse across slices: slice spacing ``d`` and slice
thickness ``t`` (a slice profile of FWHM ``t``). Its in-plane slices are the only high-resolution data we
have of this very subject, so the pairs come from them: each in-plane slice is degraded along one of
its in-plane axes the way the scanner degraded the slice axis (the slice profile, then decimation by
the through-plane factor ``s``), and a 2D network with ``scale`` ``(1, s)`` learns to undo it
(coarse along one axis -> fine). At inference
:class:`~monai_sr.inference.orthogonal.OrthogonalPlanesInferer` applies that network to the planes
that hold the slice axis and fuses the two orthogonal stacks by their mean.

**Orientation (what the network sees).** For a network of ``scale (1, s)`` the coarse axis is the
*second* plane axis, for ``(s, 1)`` the first (``coarse_axis`` below, ``up_axis`` in the inferer). The
inferer cuts the volume along each spatial axis ``a != lr_axis`` and hands the network planes whose
axes are ``(other fine axis, lr_axis)`` for ``(1, s)``; a training pair's image is ``(1, fine, coarse)``
with the coarse axis at the same place. ``tests/training/test_through_plane.py`` checks that a pair
made from a high-resolution plane equals, voxel for voxel, the plane the inferer feeds the network when
the whole volume was degraded along its slice axis.

**Geometry of a pair.** The degradation is
:class:`~monai_sr.transforms.lowres.SimulateLowResolution` with ``factors`` ``s`` on the coarse axis
and ``slice_axis`` = that axis (:func:`~monai_sr.transforms.lowres.slice_profile_weights`): LR
voxel ``j`` is centred at HR index ``(j + 0.5) s - 0.5`` (the field-of-view rule of DESIGN.md, the one
the inferer's output affine assumes) and weighs the HR pixels by the slice profile around it.

**Units of the profile.** Thickness is given relative to the LR slice spacing: a pair degrades with a
profile of FWHM ``s * t / d`` HR pixels. When the in-plane spacing equals ``d / s`` (the usual target:
4 mm slices with 1 mm pixels, x4) that is exactly the scanner's profile in mm; otherwise it keeps the
ratio of thickness to spacing, which is what the network has to invert on the output grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor

from monai_sr.errors import ModelError
from monai_sr.inference.base import network_scale
from monai_sr.training.crops import augment_pair, crop_weights, draw_crop, volume_planes
from monai_sr.transforms.lowres import SimulateLowResolution, SliceProfile
from monai_sr.transforms.spacing import acquisition_geometry

__all__ = [
    "cubic_along",
    "validate_through_plane",
    "through_plane_factor",
    "degrade_plane",
    "ThroughPlaneStack",
    "ThroughPlanePairs",
    "ThroughPlanePairMaker",
    "profile_thickness_px",
    "ThroughPlaneFactor",
    "through_plane_factor_from_spacing",
    "HeadInit",
    "load_heads",
    "rescale_through_plane_network",
]


def through_plane_factor(network: torch.nn.Module) -> tuple[int, int]:
    """``(s, coarse_axis)`` of a 2D network that upsamples one plane axis (scale ``(1, s)`` -> axis 1,
    ``(s, 1)`` -> axis 0); ModelError otherwise (the same rule as the orthogonal-planes inferer)."""
    s = network_scale(network)
    if len(s) != 2 or min(s) != 1 or (s[0] > 1 and s[1] > 1):
        raise ModelError(f"through-plane SR needs a 2D network with scale (1, s) or (s, 1), got scale {s}")
    return (s[1], 1) if s[0] == 1 else (s[0], 0)


def profile_thickness_px(factor: int, *, slice_spacing: float | None = None, slice_thickness: float | None = None) -> float:
    """FWHM (or width) of the slice profile in HR pixels of a pair: ``factor * thickness / spacing``;
    ``factor`` (contiguous slices, no gap) when the thickness or spacing is unknown."""
    if slice_spacing is None or slice_thickness is None:
        return float(factor)
    if not (slice_spacing > 0 and slice_thickness > 0):
        raise ValueError(f"slice spacing {slice_spacing} and thickness {slice_thickness} mm must be > 0")
    return float(factor) * float(slice_thickness) / float(slice_spacing)


def degrade_plane(
    plane: np.ndarray, factor: int, *, coarse_axis: int = 1, thickness: float | None = None, profile: str | np.ndarray = "gaussian"
) -> tuple[np.ndarray, np.ndarray]:
    """One pair from an HR plane ``(..., a, b)`` (leading axes: a stack of planes).

    The plane is cut at the end of ``coarse_axis`` (0 or 1 of the last two axes) to a multiple of
    ``factor``; returns ``(lr, hr)`` float32 with ``lr`` ``factor`` times smaller along that axis.
    ``thickness``: profile FWHM / width in HR pixels (default ``factor``), see
    :func:`~monai_sr.transforms.lowres.slice_profile_weights`.
    """
    x = np.asarray(plane, dtype=np.float32)
    if x.ndim < 2 or coarse_axis not in (0, 1):
        raise ValueError(f"need planes (..., a, b) and coarse_axis 0 or 1, got shape {x.shape}, axis {coarse_axis}")
    axis = x.ndim - 2 + coarse_axis
    n = (x.shape[axis] // factor) * factor
    if n == 0:
        raise ValueError(f"a plane of {x.shape[axis]} pixels along the coarse axis is shorter than the factor {factor}")
    hr = np.take(x, np.arange(n), axis=axis) if n != x.shape[axis] else x
    lead = hr.reshape(-1, *hr.shape[-2:])  # channel-first for SimulateLowResolution: planes as channels
    factors = [1, 1]
    factors[coarse_axis] = factor
    degrade = SimulateLowResolution(factors, slice_axis=coarse_axis, slice_profile=profile, slice_thickness=thickness)
    lr = np.asarray(degrade(lead), dtype=np.float32).reshape(*hr.shape[:-2], *degrade_shape(hr.shape[-2:], factors))
    return lr, np.ascontiguousarray(hr, dtype=np.float32)


def degrade_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(n) // int(f) for n, f in zip(shape, factors))


@dataclass
class ThroughPlaneStack:
    """HR planes and their degraded twins, coarse along the *last* axis.

    ``hr``: ``(n, a, b)`` (may be a view of a volume); ``lr``: ``(n, a, b / factor)`` float32.
    """

    hr: np.ndarray
    lr: np.ndarray
    factor: int

    @classmethod
    def from_volume(
        cls,
        volume: np.ndarray,
        *,
        plane_axis: int,
        coarse_axis: int,
        factor: int,
        thickness: float | None = None,
        profile: str | np.ndarray = "gaussian",
    ) -> ThroughPlaneStack:
        """Planes of ``volume`` ``(X, Y, Z)`` cut along ``plane_axis``, degraded along the spatial axis
        ``coarse_axis`` (``!= plane_axis``) with the profile of ``thickness`` HR pixels."""
        if plane_axis == coarse_axis or {plane_axis, coarse_axis} - {0, 1, 2}:
            raise ValueError(f"plane_axis {plane_axis} and coarse_axis {coarse_axis} must be two different axes of a volume")
        fine = 3 - plane_axis - coarse_axis
        planes = np.transpose(np.asarray(volume, dtype=np.float32), (plane_axis, fine, coarse_axis))
        lr, hr = degrade_plane(planes, factor, coarse_axis=1, thickness=thickness, profile=profile)
        return cls(hr=hr, lr=lr, factor=factor)


class ThroughPlanePairs:
    """A pair source for :func:`monai_sr.training.internal.fit_on_volume`: random aligned crops from
    :class:`ThroughPlaneStack` s, laid out for a network whose coarse plane axis is ``coarse_axis``.

    Each draw picks a stack (weighted by its number of crop positions), a plane, an LR position; crops
    with less than ``min_foreground`` of HR pixels above ``foreground_level`` are redrawn (up to
    ``max_tries``; :func:`monai_sr.training.crops.draw_crop`). Augmentation (both images alike, keeping the
    field-of-view alignment; :func:`monai_sr.training.crops.augment_pair`): flips of either axis and an
    intensity factor in ``[1 - jitter, 1 + jitter]`` (the degradation is linear). No transposes: the two
    axes are not interchangeable.

    Args:
        stacks: planes coarse along their last axis.
        lr_size: LR crop ``(fine, coarse)`` in LR pixels (an int: square); the HR crop is
            ``(fine, coarse * factor)``.
        coarse_axis: 1 for a network of scale ``(1, s)``, 0 for ``(s, 1)`` (pairs are transposed).

    Examples::

        pairs = ThroughPlanePairs(stacks, lr_size=32, seed=0)
        lr, hr = pairs.batch(8)   # (8, 1, 32, 32), (8, 1, 32, 128) for factor 4
    """

    def __init__(
        self,
        stacks: Sequence[ThroughPlaneStack],
        *,
        lr_size: int | Sequence[int] = 32,
        coarse_axis: int = 1,
        seed: int = 0,
        min_foreground: float = 0.2,
        foreground_level: float = 0.1,
        jitter: float = 0.1,
        max_tries: int = 20,
    ) -> None:
        size = (int(lr_size),) * 2 if np.isscalar(lr_size) else tuple(int(v) for v in lr_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"lr_size must be a positive int or (fine, coarse), got {lr_size!r}")
        if coarse_axis not in (0, 1):
            raise ValueError(f"coarse_axis must be 0 or 1, got {coarse_axis!r}")
        factors = {s.factor for s in stacks}
        if len(factors) != 1:
            raise ValueError(f"stacks must share one factor, got {sorted(factors)}")
        # planes smaller than the crop (a small input): the crop shrinks to the smallest plane
        fits = list(stacks)
        size = (min(size[0], min(s.lr.shape[1] for s in fits)), min(size[1], min(s.lr.shape[2] for s in fits)))
        self.stacks = fits
        self.lr_size, self.factor, self.coarse_axis = size, factors.pop(), coarse_axis
        self.weights = crop_weights([s.hr for s in fits], size, (1, self.factor))
        self.min_foreground, self.foreground_level, self.jitter, self.max_tries = min_foreground, foreground_level, jitter, max_tries
        self.rng = np.random.default_rng(seed)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        (p, q), f = self.lr_size, self.factor
        c = draw_crop(
            self.rng, [s.hr for s in self.stacks], (p, q), (1, f), weights=self.weights,
            min_foreground=self.min_foreground, foreground_level=self.foreground_level, max_tries=self.max_tries,
        )
        s = self.stacks[c.source]
        return s.lr[c.k, c.i : c.i + p, c.j : c.j + q], s.hr[c.k, c.i : c.i + p, f * c.j : f * (c.j + q)]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented pair ``(lr, hr)``: ``(p, q)`` and ``(p, f q)`` (transposed for coarse_axis 0)."""
        lr, hr = augment_pair(self.rng, *self._draw(), transpose=False, jitter=self.jitter)
        if self.coarse_axis == 0:
            lr, hr = lr.T, hr.T
        return np.ascontiguousarray(lr, np.float32), np.ascontiguousarray(hr, np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs: ``(n, 1, *lr)`` and ``(n, 1, *hr)`` float32."""
        pairs = [self.sample() for _ in range(n)]
        return np.stack([a for a, _ in pairs])[:, None], np.stack([b for _, b in pairs])[:, None]

    @classmethod
    def from_input(
        cls,
        image: MetaTensor,
        network: torch.nn.Module,
        *,
        lr_axis: int = 2,
        slice_thickness: float | None = None,
        profile: str | np.ndarray = SliceProfile.GAUSSIAN,
        lr_size: int | Sequence[int] = 32,
        seed: int = 0,
        **kwargs,
    ) -> ThroughPlanePairs:
        """Pairs from the in-plane slices of the input volume ``image`` ``(1, X, Y, Z)`` (normalised, RAS
        affine), whose coarse axis is ``lr_axis``, for ``network`` (scale ``(1, s)`` or ``(s, 1)``).

        The profile's thickness is ``slice_thickness`` (mm) if given, else the header's (meta
        ``slice_thickness`` or DICOM SliceThickness via
        :func:`~monai_sr.transforms.spacing.acquisition_geometry`), else the slice spacing (no gap);
        it is converted to pair pixels by :func:`profile_thickness_px`. Every in-plane slice is degraded
        along each of its two axes (the two plane stacks of the inferer).
        """
        factor, coarse = through_plane_factor(network)
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected a single-channel volume (1, X, Y, Z), got shape {tuple(image.shape)}")
        geo = acquisition_geometry(image, slice_axis=lr_axis)
        thickness = slice_thickness if slice_thickness is not None else geo.slice_thickness
        t_px = profile_thickness_px(factor, slice_spacing=geo.spacing[lr_axis], slice_thickness=thickness)
        vol = image.as_tensor()[0].detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)[0]
        in_plane = [a for a in range(3) if a != lr_axis]
        stacks = [
            ThroughPlaneStack.from_volume(vol, plane_axis=lr_axis, coarse_axis=c, factor=factor, thickness=t_px, profile=profile)
            for c in in_plane
        ]
        return cls(stacks, lr_size=lr_size, coarse_axis=coarse, seed=seed, **kwargs)


class ThroughPlanePairMaker:
    """``make_pair(volume, rng, patch) -> {"image", "label"}`` for
    :class:`monai_sr.training.datasets.RandomPairDataset`: through-plane pairs from an isotropic HR
    volume ``(X, Y, Z)``.

    Each call picks a plane axis and a coarse axis among the other two (all six combinations), a plane,
    degrades the crop's whole rows (:func:`degrade_plane`, so the profile is never cut at a crop border) and
    cuts an aligned crop of ``patch`` LR pixels per side: image ``(1, patch, patch)``, label
    ``(1, patch, factor * patch)`` for ``coarse_axis`` 1 (transposed for 0), as float32 tensors. Crops
    with foreground below ``min_foreground`` are redrawn (up to ``max_tries``).

    Args:
        factor: through-plane factor ``s``.
        thickness: profile FWHM / width in HR pixels (default ``factor``).
        profile: :class:`~monai_sr.transforms.lowres.SliceProfile` or a measured profile.
        coarse_axis: the network's coarse plane axis (1 for scale ``(1, s)``).
    """

    def __init__(
        self,
        factor: int = 4,
        *,
        thickness: float | None = None,
        profile: str | np.ndarray = "gaussian",
        coarse_axis: int = 1,
        min_foreground: float = 0.2,
        foreground_level: float = 0.1,
        max_tries: int = 10,
    ) -> None:
        self.factor, self.thickness, self.profile, self.coarse_axis = int(factor), thickness, profile, coarse_axis
        self.min_foreground, self.foreground_level, self.max_tries = min_foreground, foreground_level, max_tries

    def slice_pair(self, hr: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """The pair of a whole HR plane ``(fine, coarse)`` (validation): degraded along its second axis."""
        lr, hr = degrade_plane(hr, self.factor, thickness=self.thickness, profile=self.profile)
        return self._as_pair(lr, hr)

    def _as_pair(self, lr: np.ndarray, hr: np.ndarray) -> dict[str, torch.Tensor]:
        if self.coarse_axis == 0:
            lr, hr = lr.T, hr.T
        return {
            "image": torch.from_numpy(np.ascontiguousarray(lr[None], np.float32)),
            "label": torch.from_numpy(np.ascontiguousarray(hr[None], np.float32)),
        }

    def __call__(self, volume: np.ndarray, rng: np.random.Generator, patch: int) -> dict[str, torch.Tensor]:
        f, p = self.factor, int(patch)
        combos = [(a, c) for a in range(3) for c in range(3) if a != c and volume.shape[3 - a - c] >= p and volume.shape[c] >= f * p]
        if not combos:
            raise ValueError(f"volume {volume.shape} has no plane for an LR patch of {p} at factor {f}")
        planes = [volume_planes(volume, a, 3 - a - c, c) for a, c in combos]  # (fine, coarse): views
        crop = draw_crop(
            rng, planes, (p, p), (1, f), vary_phase=True,  # vary the LR grid's phase along the coarse axis
            min_foreground=self.min_foreground, foreground_level=self.foreground_level, max_tries=self.max_tries,
        )
        i, j, start = crop.i, crop.j, crop.start
        plane = planes[crop.source][crop.k]
        # whole rows are degraded (the profile acts along them only), so it is never cut at the crop's border
        lr_rows, hr_rows = degrade_plane(plane[i : i + p, start:], f, thickness=self.thickness, profile=self.profile)
        return self._as_pair(lr_rows[:, j : j + p], hr_rows[:, f * j : f * (j + p)])


# --------------------------------------------------------------------------------------------------
# The through-plane factor of an input, from its spacing, and a network built for it
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughPlaneFactor:
    """The through-plane factor chosen for an input (:func:`through_plane_factor_from_spacing`).

    Attributes:
        factor: integer ``s``: the output has ``s`` times as many slices (same field of view).
        ratio: slice spacing / target spacing, before the policy made it an integer.
        slice_spacing: the input's spacing along ``lr_axis`` (mm).
        target_spacing: the spacing asked for (mm; the mean in-plane spacing unless given).
        output_spacing: ``slice_spacing / factor`` (mm), the output's slice spacing.
        policy: the :class:`~monai_sr.transforms.spacing.RatioPolicy` that turned ``ratio`` into ``factor``.
    """

    factor: int
    ratio: float
    slice_spacing: float
    target_spacing: float
    output_spacing: float
    policy: str

    @property
    def exact(self) -> bool:
        """True when the ratio was an integer (within the tolerance)."""
        return abs(self.ratio - self.factor) <= 0.01 * self.ratio

    def note(self) -> str:
        """One line for the result's notes: the factor, how it was chosen and the output slice spacing."""
        how = (f"ratio {self.slice_spacing:.4g} / {self.target_spacing:.4g} = {self.ratio:.3g}"
               + ("" if self.exact else f", not an integer: policy '{self.policy}' takes {self.factor}"))
        return (f"through-plane factor x{self.factor} from the spacing ({how}): output slice spacing "
                f"{self.slice_spacing:.4g} / {self.factor} = {self.output_spacing:.4g} mm"
                + ("" if self.exact else f" (target {self.target_spacing:.4g} mm)"))


def through_plane_factor_from_spacing(
    spacing: Sequence[float],
    lr_axis: int = 2,
    *,
    target_spacing: float | None = None,
    policy: str = "round",
    tol: float = 0.05,
    min_factor: int = 2,
    max_factor: int = 10,
) -> ThroughPlaneFactor:
    """The through-plane factor ``s`` of a volume of voxel size ``spacing`` whose slices are along
    ``lr_axis``: :func:`~monai_sr.transforms.spacing.scale_from_spacing` of the slice spacing against
    ``target_spacing`` (default: the mean of the two in-plane spacings, i.e. near-isotropic output), with
    ``policy`` for a ratio that is not an integer (``"round"``: 7 / 0.86 = 8.14 -> 8, output slice spacing
    7 / 8 = 0.875 mm; ``"floor"``; ``"exact"`` refuses).

    Raises:
        InputError: a slice spacing too close to the target for through-plane SR (``s < min_factor``: the
            volume is already near-isotropic, or the slices are thinner than the pixels), or so coarse that
            ``s > max_factor`` (nothing between the slices is left to recover; give a coarser
            ``target_spacing``), naming the spacings and the ratio.
    """
    from monai_sr.errors import InputError
    from monai_sr.transforms.spacing import scale_from_spacing

    sp = [float(v) for v in spacing]
    if len(sp) != 3 or lr_axis not in (0, 1, 2):
        raise ValueError(f"need three spacings and lr_axis 0, 1 or 2, got spacing {sp} and lr_axis {lr_axis!r}")
    d = sp[lr_axis]
    target = float(np.mean([sp[a] for a in range(3) if a != lr_axis])) if target_spacing is None else float(target_spacing)
    if not (np.isfinite(d) and np.isfinite(target) and d > 0 and target > 0):
        raise InputError(f"slice spacing {d:g} mm and target spacing {target:g} mm must be positive and finite")
    ratio = d / target
    spacing_text = "x".join(f"{v:.4g}" for v in sp)
    if ratio < min_factor - 0.5:
        raise InputError(
            f"slice spacing {d:.4g} mm is only {ratio:.3g} times the target {target:.4g} mm (voxels {spacing_text} mm, "
            f"slice axis {lr_axis}): through-plane SR needs a ratio of at least {min_factor} (the volume is "
            "already near-isotropic or its slices are along another axis)"
        )
    try:
        factor = scale_from_spacing([d], [target], policy=policy, tol=tol)[0]
    except ValueError as err:
        raise InputError(f"voxels {spacing_text} mm, slice axis {lr_axis}: {err}") from None
    if factor < min_factor:
        raise InputError(
            f"slice spacing {d:.4g} mm / target {target:.4g} mm = {ratio:.3g} gives x{factor} by policy '{policy}': "
            f"through-plane SR needs at least x{min_factor}"
        )
    if factor > max_factor:
        raise InputError(
            f"slice spacing {d:.4g} mm is {ratio:.3g} times the target {target:.4g} mm (voxels {spacing_text} mm): "
            f"x{factor} is beyond x{max_factor}, too thick for through-plane SR to recover; give a coarser target spacing"
        )
    return ThroughPlaneFactor(factor=int(factor), ratio=float(ratio), slice_spacing=d, target_spacing=target,
                              output_spacing=d / factor, policy=str(policy))


class HeadInit:
    """How :func:`rescale_through_plane_network` initialises a head of a new factor: ``"pretrained"`` (a
    head trained for that factor on the frozen body, from ``heads``; ``"phase"`` for a factor it lacks),
    ``"phase"`` (the pretrained head's sub-pixel filters interpolated linearly to the new sub-pixel offsets)
    or ``"zero"`` (the interpolation residual alone: the network starts as bicubic interpolation)."""

    PRETRAINED = "pretrained"
    PHASE = "phase"
    ZERO = "zero"


def load_heads(path) -> dict[int, dict[str, torch.Tensor]]:
    """Heads per factor from a file of ``{"<s>.weight", "<s>.bias"}`` tensors
    (``scripts/train_through_plane_heads.py``), read with ``torch.load(..., weights_only=True)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged or pickled-object file: one line naming it
        raise ModelError(f"cannot read the through-plane heads: {err}", path=path) from None
    if not isinstance(state, dict):
        raise ModelError("through-plane heads: expected a dict of tensors", path=path)
    heads: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        factor, _, name = str(key).partition(".")
        if not (factor.isdigit() and name in ("weight", "bias") and isinstance(value, torch.Tensor)):
            raise ModelError(f"through-plane heads: unexpected entry {key!r}", path=path)
        heads.setdefault(int(factor), {})[name] = value
    return heads


def _phase_offsets(s: int) -> np.ndarray:
    """Offsets of the ``s`` sub-pixels of an LR pixel, in LR pixels (the FOV rule): ``(k + 0.5) / s - 0.5``."""
    return (np.arange(s) + 0.5) / s - 0.5


def _phase_matrix(old: int, new: int) -> torch.Tensor:
    """``(new, old)`` weights: linear interpolation in sub-pixel offset (linear extrapolation past the ends)."""
    xo, xn = _phase_offsets(old), _phase_offsets(new)
    m = np.zeros((new, old))
    if old == 1:
        m[:, 0] = 1.0
        return torch.from_numpy(m)
    for i, x in enumerate(xn):
        j = int(np.clip(np.searchsorted(xo, x) - 1, 0, old - 2))
        t = (x - xo[j]) / (xo[j + 1] - xo[j])
        m[i, j], m[i, j + 1] = 1.0 - t, t
    return torch.from_numpy(m)


def rescale_through_plane_network(
    network: torch.nn.Module, factor: int, *, head_init: str = HeadInit.PHASE, heads: dict | None = None
) -> torch.nn.Module:
    """``network`` (a 2D :class:`~monai_sr.networks.SRUNet` of scale ``(1, s0)`` or ``(s0, 1)``) rebuilt
    for ``(1, factor)`` / ``(factor, 1)``: the same network when ``factor == s0``, else a copy whose body
    keeps every pretrained weight and whose sub-pixel head (the one layer whose shape depends on the
    factor) is re-initialised by ``head_init`` (:class:`HeadInit`; ``heads``: ``{s: {"weight", "bias"}}``
    from :func:`load_heads` for ``"pretrained"``). The residual interpolation follows the new factor. The per-volume fit (:class:`~monai_sr.training.internal.ThroughPlaneFit`) then trains
    the whole network for the new factor.
    """
    import copy

    s0, coarse = through_plane_factor(network)
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if factor == s0:
        return network
    head = getattr(network, "head", None)
    if not isinstance(head, torch.nn.Conv2d) or not hasattr(network, "_scale_list"):
        raise ModelError(
            f"{type(network).__name__} has no sub-pixel 'head' (Conv2d) to rebuild for x{factor}; "
            "only SRUNet-like networks can change their through-plane factor"
        )
    if head_init not in (HeadInit.PRETRAINED, HeadInit.PHASE, HeadInit.ZERO):
        raise ValueError(f"head_init must be 'pretrained', 'phase' or 'zero', got {head_init!r}")
    out_ch = head.out_channels // s0
    new = copy.deepcopy(network)
    conv = torch.nn.Conv2d(head.in_channels, out_ch * factor, head.kernel_size, stride=head.stride,
                           padding=head.padding, dilation=head.dilation, bias=head.bias is not None,
                           padding_mode=head.padding_mode).to(head.weight.device, head.weight.dtype)
    trained = (heads or {}).get(factor) if head_init == HeadInit.PRETRAINED else None
    with torch.no_grad():
        if trained is not None:
            if tuple(trained["weight"].shape) != tuple(conv.weight.shape):
                raise ModelError(f"the pretrained x{factor} head has shape {tuple(trained['weight'].shape)}, "
                                 f"the network needs {tuple(conv.weight.shape)}")
            conv.weight.copy_(trained["weight"])
            if conv.bias is not None:
                conv.bias.copy_(trained["bias"])
        elif head_init == HeadInit.ZERO:
            conv.weight.zero_()
            if conv.bias is not None:
                conv.bias.zero_()
        else:  # channel c * s + k is sub-pixel k of output channel c (pixel_shuffle with one factor > 1)
            m = _phase_matrix(s0, factor).to(head.weight.dtype)
            w = head.weight.reshape(out_ch, s0, -1)
            conv.weight.copy_(torch.einsum("no,cod->cnd", m, w).reshape(conv.weight.shape))
            if conv.bias is not None:
                conv.bias.copy_((head.bias.reshape(out_ch, s0) @ m.T).reshape(-1))
    new.head = conv
    scale = (1, factor) if coarse == 1 else (factor, 1)
    new.scale = scale
    new._scale_list = list(scale)
    new._scale_factor = [float(v) for v in scale]
    return new


def cubic_along(lr: np.ndarray, factor: int, axis: int = 1) -> np.ndarray:
    """Cubic B-spline interpolation of ``lr`` by ``factor`` along ``axis`` with the field-of-view rule
    (output pixel ``j`` at input index ``(j + 0.5) / s - 0.5``: ``grid_mode=True``); the through-plane
    baseline of the training scripts."""
    from scipy import ndimage

    zoom = [1.0] * lr.ndim
    zoom[axis] = float(factor)
    return ndimage.zoom(lr, zoom, order=3, mode="mirror", grid_mode=True)


def validate_through_plane(net: torch.nn.Module, val: torch.utils.data.Dataset, factor: int) -> tuple[float, float]:
    """Mean PSNR (``data_range=1``) of ``net`` and of :func:`cubic_along` over the pairs of ``val`` (e.g. a
    :class:`~monai_sr.training.datasets.SliceDataset` of held-out slabs: ``{"image": (1, H, W / factor),
    "label": (1, H, W)}``), under ``torch.inference_mode``; ``net``'s train/eval mode is restored."""
    from monai_sr.validation.metrics import psnr

    was_training = net.training
    net.eval()
    nets, cub = [], []
    with torch.inference_mode():
        for n in range(len(val)):
            pair = val[n]
            x, y = pair["image"], pair["label"][0].numpy()
            nets.append(psnr(net(x[None])[0, 0].numpy(), y, data_range=1.0))
            cub.append(psnr(cubic_along(x[0].numpy(), factor), y, data_range=1.0))
    net.train(was_training)
    return float(np.mean(nets)), float(np.mean(cub))
