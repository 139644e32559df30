"""Scale and geometry from spacing, on MetaTensors.

* :func:`apply_sr_geometry` is the only place that turns "the network made the grid ``scale`` times finer"
  into an output affine; it calls :func:`monai_sr.geometry.scaled_affine` and nothing else recomputes it.
  :class:`SRGeometry` / :class:`SRGeometryd` wrap it as MONAI transforms and also divide the slice
  thickness when the scale crosses slices (DESIGN.md).
* :func:`scale_from_spacing` turns a spacing and a target spacing into integer factors per axis, with an
  explicit policy for ratios that are not integers (:class:`RatioPolicy`).
* :func:`acquisition_geometry` collects what a volume says about its acquisition: spacing (from the
  affine), slice thickness and gap, 2D or 3D (from the DICOM headers the reader keeps in meta).

Slice thickness travels in meta under :data:`SLICE_THICKNESS_KEY` (mm) once a transform has changed it;
before that it is read from the source DICOM headers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, StrEnum, look_up_option

from monai_sr import geometry
from monai_sr.checks import check_scale

__all__ = [
    "SLICE_THICKNESS_KEY",
    "RatioPolicy",
    "AcquisitionGeometry",
    "acquisition_geometry",
    "scale_from_spacing",
    "sr_slice_thickness",
    "apply_sr_geometry",
    "SRGeometry",
    "SRGeometryd",
]

#: Meta key of the slice thickness (mm) after a transform changed it (LR simulation, through-plane SR).
SLICE_THICKNESS_KEY = "slice_thickness"


class RatioPolicy(StrEnum):
    """What :func:`scale_from_spacing` does with a spacing ratio that is not an integer (beyond ``tol``).

    * ``exact``: refuse with a ValueError naming the axis and the ratio (the default: a silent change of
      the field of view or the spacing is worse than an error).
    * ``round``: the nearest integer (at least 1; a tie goes up: 4.5 -> 5, a grid finer than asked); the
      spacing reached may differ from the target (7 / 0.86 = 8.14 -> 8: 0.875 mm instead of 0.86 mm).
    * ``floor``: the integer below (at least 1); the spacing reached is never finer than asked.
    """

    EXACT = "exact"
    ROUND = "round"
    FLOOR = "floor"


def scale_from_spacing(
    spacing: Sequence[float], target_spacing: Sequence[float] | float, *, policy: str = "exact", tol: float = 0.01
) -> tuple[int, ...]:
    """Integer factors ``s`` per axis such that ``spacing / s`` is ``target_spacing`` (a finer grid).

    ``s = spacing / target_spacing`` for super-resolution; for the opposite direction (how many fine voxels
    make one coarse voxel, e.g. to simulate a low-resolution scan) swap the arguments:
    ``scale_from_spacing(target_spacing, spacing)``.

    Args:
        spacing: voxel size in mm per axis (e.g. :func:`monai_sr.geometry.spacing_from_affine`).
        target_spacing: wanted voxel size per axis (a scalar for all axes); ``<= spacing`` on every axis.
        policy: :class:`RatioPolicy` for ratios further than ``tol`` (relative) from an integer.
        tol: relative tolerance that absorbs rounded header values (0.9766 / 0.4883 counts as 2).

    Raises:
        ValueError naming the axis and the ratio: a target coarser than the spacing, a non-positive or
        non-finite spacing, or (policy ``exact``) a ratio that is not an integer.
    """
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    tg = np.broadcast_to(np.asarray(target_spacing, dtype=np.float64), sp.shape) if np.ndim(target_spacing) == 0 else (
        np.asarray(target_spacing, dtype=np.float64).ravel()
    )
    if tg.shape != sp.shape:
        raise ValueError(f"target_spacing {list(np.atleast_1d(target_spacing))} must have {sp.size} values (one per axis)")
    pol = look_up_option(policy, RatioPolicy)
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    out = []
    for axis, (a, b) in enumerate(zip(sp, tg)):
        if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
            raise ValueError(f"axis {axis}: spacing {a:g} mm and target spacing {b:g} mm must be positive and finite")
        ratio = a / b
        nearest = max(int(np.floor(ratio + 0.5)), 1)  # half up: 4.5 -> 5 (Python's round() would give 4)
        if ratio < 1 - tol:
            raise ValueError(
                f"axis {axis}: target spacing {b:g} mm is coarser than the spacing {a:g} mm (ratio {ratio:.4g}); "
                "swap the arguments to get a coarsening factor"
            )
        if abs(ratio - nearest) <= tol * ratio:
            out.append(int(nearest))
        elif pol == RatioPolicy.EXACT:
            raise ValueError(
                f"axis {axis}: spacing ratio {a:g} / {b:g} = {ratio:.4g} mm/mm is not an integer "
                f"(policy 'exact'; use 'round' or 'floor' to accept {nearest} or {max(int(np.floor(ratio)), 1)})"
            )
        elif pol == RatioPolicy.ROUND:
            out.append(int(nearest))
        else:
            out.append(max(int(np.floor(ratio)), 1))
    return tuple(out)


@dataclass(frozen=True)
class AcquisitionGeometry:
    """What a volume says about how it was acquired.

    Attributes:
        spacing: voxel size in mm per spatial axis, from the affine.
        slice_axis: the spatial axis across slices (2 for a DICOM series read by monai_sr), or None.
        slice_thickness: nominal thickness in mm (meta :data:`SLICE_THICKNESS_KEY`, else DICOM
            SliceThickness), or None when unknown.
        slice_gap: ``spacing[slice_axis] - slice_thickness`` in mm (negative: overlapping slices), or None.
        acquisition_type: DICOM MRAcquisitionType ``"2D"`` or ``"3D"``, or None when absent.
        spacing_between_slices_tag: the SpacingBetweenSlices header value (mm) as written, or None. The
            spacing used everywhere is the one from the affine (the reader checked the tag against the
            slice positions); this is kept to report header inconsistencies.
    """

    spacing: tuple[float, ...]
    slice_axis: int | None
    slice_thickness: float | None
    slice_gap: float | None
    acquisition_type: str | None
    spacing_between_slices_tag: float | None


def _header_float(ds, keyword: str) -> float | None:
    v = ds.get(keyword) if ds is not None else None
    return None if v in (None, "") else float(v)


def acquisition_geometry(img: MetaTensor, *, slice_axis: int | None = 2) -> AcquisitionGeometry:
    """Read spacing (from the affine), slice thickness / gap and 2D/3D acquisition from ``img``'s meta.

    ``slice_axis`` is the spatial axis across slices (monai_sr's DICOM reader puts slices on axis 2);
    pass None for a volume without slices (then thickness and gap are None).
    """
    if not isinstance(img, MetaTensor):
        raise ValueError(f"acquisition_geometry needs a MetaTensor (it reads the affine), got {type(img).__name__}")
    n_spatial = img.ndim - 1
    if slice_axis is not None and not 0 <= slice_axis < n_spatial:
        raise ValueError(f"slice_axis {slice_axis} is not a spatial axis of a {n_spatial}D image")
    from monai_sr.io.dicom.headers import source_headers  # io imports are heavier; only when needed

    spacing = tuple(float(v) for v in geometry.spacing_from_affine(np.asarray(img.affine))[:n_spatial])
    headers = source_headers(img.meta)
    ds0 = headers[0] if headers else None
    thickness = img.meta.get(SLICE_THICKNESS_KEY)
    thickness = float(thickness) if thickness is not None else _header_float(ds0, "SliceThickness")
    acq = ds0.get("MRAcquisitionType") if ds0 is not None else None
    acq = str(acq).upper() if acq not in (None, "") else None
    if slice_axis is None:
        thickness = None
    gap = None if thickness is None or slice_axis is None else spacing[slice_axis] - thickness
    return AcquisitionGeometry(
        spacing=spacing,
        slice_axis=slice_axis,
        slice_thickness=thickness,
        slice_gap=gap,
        acquisition_type=acq,
        spacing_between_slices_tag=_header_float(ds0, "SpacingBetweenSlices"),
    )


def sr_slice_thickness(thickness: float | None, scale: Sequence[int], slice_axis: int | None) -> float | None:
    """Slice thickness after SR by ``scale``: divided by the factor across slices (DESIGN.md), else kept."""
    if thickness is None or slice_axis is None:
        return thickness
    return float(thickness) / int(scale[slice_axis])


def apply_sr_geometry(output: torch.Tensor, source: MetaTensor, scale: Sequence[int]) -> MetaTensor:
    """Wrap ``output`` (channel-first, spatial shape = source's times ``scale``) with the source's meta
    and the field-of-view-preserving affine.

    Args:
        output: tensor ``(C, *spatial)``.
        source: the MetaTensor the output was computed from (channel-first, RAS affine).
        scale: integer factor per spatial axis.

    Returns:
        MetaTensor with ``affine = scaled_affine(source.affine, scale)``, ``spatial_shape`` updated, and
        the rest of the source's meta (e.g. the DICOM headers) carried over.
    """
    scale = tuple(int(s) for s in scale)
    in_shape = tuple(source.shape[1:])
    if len(scale) != len(in_shape):
        raise ValueError(f"scale {scale} must have one factor per spatial axis of the input {in_shape}")
    expected = tuple(n * s for n, s in zip(in_shape, scale))
    if tuple(output.shape[1:]) != expected:
        raise ValueError(f"output spatial shape {tuple(output.shape[1:])} is not input {in_shape} times scale {scale}")
    affine = geometry.scaled_affine(np.asarray(source.affine, dtype=np.float64), scale)
    meta = dict(source.meta)
    meta[MetaKeys.AFFINE] = affine
    meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(expected)
    data = output.as_tensor() if isinstance(output, MetaTensor) else output
    return MetaTensor(data, meta=meta)


class SRGeometry(Transform):
    """Give a network's output the geometry DESIGN.md prescribes, through :func:`apply_sr_geometry`.

    ``SRGeometry(scale)(output, source)`` returns ``output`` as a MetaTensor with the source's meta, the
    field-of-view-preserving affine (:func:`monai_sr.geometry.scaled_affine`), ``spatial_shape`` and,
    when ``scale`` crosses slices (``scale[slice_axis] > 1``), the slice thickness divided by that
    factor in ``meta["slice_thickness"]`` (mm; the source's value comes from its meta or its DICOM
    SliceThickness; nothing is stored when neither is known).

    ``source`` may be left out when ``output`` still carries the source's meta (a MetaTensor that went
    through the network keeps its input's meta, including the input's affine): the source grid is then
    ``output``'s spatial shape divided by ``scale``.

    Args:
        scale: integer factor per spatial axis (an int for all axes).
        slice_axis: the spatial axis across slices (2 for a DICOM series read by monai_sr); None: the
            thickness is never touched.

    Examples::

        sr = SRGeometry((1, 1, 2))(net(lr)[0], lr)   # affine, shape and slice thickness of the SR volume
    """

    def __init__(self, scale: Sequence[int] | int, *, slice_axis: int | None = 2) -> None:
        self.scale = check_scale(scale)
        if slice_axis is not None and not (isinstance(slice_axis, (int, np.integer)) and slice_axis >= 0):
            raise ValueError(f"slice_axis must be a non-negative int or None, got {slice_axis!r}")
        self.slice_axis = slice_axis

    def __call__(self, output: torch.Tensor, source: MetaTensor | None = None) -> MetaTensor:
        n_spatial = output.ndim - 1
        scale = self.scale * n_spatial if len(self.scale) == 1 else self.scale
        if len(scale) != n_spatial:
            raise ValueError(f"scale {list(self.scale)} has {len(scale)} values for a {n_spatial}D output {tuple(output.shape)}")
        if source is None:
            if not isinstance(output, MetaTensor):
                raise ValueError("SRGeometry needs the source MetaTensor when the output is a plain tensor")
            lr_shape = []
            for axis, (n, s) in enumerate(zip(output.shape[1:], scale)):
                if n % s:
                    raise ValueError(f"output axis {axis} of size {n} is not divisible by scale {s}")
                lr_shape.append(n // s)
            # A zero-stride stand-in: the source's shape and meta without allocating its voxels.
            source = MetaTensor(torch.zeros(1).expand(output.shape[0], *lr_shape), meta=dict(output.meta))
        if not isinstance(source, MetaTensor):
            raise ValueError(f"source must be a MetaTensor (it carries the affine), got {type(source).__name__}")
        out = apply_sr_geometry(output, source, scale)
        if self.slice_axis is not None and self.slice_axis < n_spatial and scale[self.slice_axis] > 1:
            thickness = acquisition_geometry(source, slice_axis=self.slice_axis).slice_thickness
            new = sr_slice_thickness(thickness, scale, self.slice_axis)
            if new is not None:
                out.meta[SLICE_THICKNESS_KEY] = new
        return out


class SRGeometryd(MapTransform):
    """Dictionary twin of :class:`SRGeometry`: ``d[key] = SRGeometry(scale)(d[key], d[source_key])``.

    ``source_key`` None: each output carries its source's meta (see :class:`SRGeometry`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: Sequence[int] | int,
        *,
        source_key: Hashable | None = None,
        slice_axis: int | None = 2,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SRGeometry(scale, slice_axis=slice_axis)
        self.source_key = source_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        source = d[self.source_key] if self.source_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], source)
        return d
