"""The one home of affine math.

Conventions used everywhere in monai_sr:

* An affine is a 4x4 ``numpy`` float64 array that maps a voxel index ``(i, j, k, 1)`` to millimetres
  in **RAS** patient coordinates (the MONAI / NIfTI convention), unless a function says ``lps``.
* For a DICOM series read by :mod:`monai_sr.io.dicom.reader`, index ``i`` runs along a row (the column
  index, direction ``ImageOrientationPatient[0:3]``), ``j`` down a column (the row index, direction
  ``ImageOrientationPatient[3:6]``) and ``k`` across slices, ordered by position along the normal.
* Spacing is derived from the affine (:func:`spacing_from_affine`), never stored beside it.
* Super-resolution by integer factors ``s`` keeps the field of view: output voxel ``j`` sits at input
  index ``(j + 0.5) / s - 0.5`` (:func:`scaled_affine`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monai_sr.checks import check_scale
from monai_sr.errors import GeometryError

__all__ = [
    "LPS_RAS_FLIP",
    "check_affine",
    "lps_to_ras",
    "ras_to_lps",
    "spacing_from_affine",
    "affine_from_dicom",
    "dicom_slice_geometry",
    "slice_normal",
    "scaled_affine",
    "coarsened_affine",
    "index_of_output_in_input",
    "check_slice_positions",
    "index_map",
    "offsets_from_grid",
    "slice_positions",
]

#: Flips x and y: turns an LPS affine into RAS and back (it is its own inverse).
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

_ORTHO_TOL = 1e-3


def check_affine(affine: np.ndarray | Sequence, *, orthogonal: bool = True) -> np.ndarray:
    """Return ``affine`` as a 4x4 float64 array after checking it.

    Raises :class:`GeometryError` on a shape other than 4x4, a last row other than ``[0, 0, 0, 1]``,
    a singular matrix, non-finite values or (when ``orthogonal``) axes that are not perpendicular
    (a gantry tilt or a shear; cosine above 1e-3).
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError("affine has non-finite values")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise GeometryError(f"affine last row must be [0, 0, 0, 1], got {a[3].tolist()}")
    norms = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(norms < 1e-9):
        raise GeometryError(f"affine is singular (axis lengths {norms.tolist()})")
    if orthogonal:
        unit = a[:3, :3] / norms
        gram = unit.T @ unit
        off = np.abs(gram - np.eye(3)).max()
        if off > _ORTHO_TOL:
            raise GeometryError(f"affine axes are not orthogonal (largest cosine {off:.4g}): sheared or tilted grid")
    return a


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert an LPS affine (DICOM patient coordinates) to RAS. Returns a new array."""
    return LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64)


def ras_to_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a RAS affine to LPS (DICOM patient coordinates). Returns a new array."""
    return LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64)


def spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each index axis: the column norms of the 3x3 part."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def slice_normal(iop: Sequence[float]) -> np.ndarray:
    """Unit normal (LPS) of a slice with ImageOrientationPatient ``iop``: row direction x column direction."""
    row, col = _unit_iop(iop)
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def _unit_iop(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray([float(x) for x in iop], dtype=np.float64)
    if v.shape != (6,):
        raise GeometryError(f"ImageOrientationPatient must have 6 values, got {len(v)}")
    row, col = v[:3], v[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(f"ImageOrientationPatient has a zero vector: {v.tolist()}")
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > _ORTHO_TOL:
        raise GeometryError(f"ImageOrientationPatient row and column are not perpendicular: {v.tolist()}")
    return row, col


def affine_from_dicom(
    iop: Sequence[float],
    first_ipp: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float] | float,
) -> np.ndarray:
    """Build the RAS affine of a DICOM slice stack.

    Args:
        iop: ImageOrientationPatient, row direction then column direction (LPS).
        first_ipp: ImagePositionPatient (LPS, mm) of the first slice in stack order.
        pixel_spacing: PixelSpacing ``[between rows, between columns]`` in mm.
        slice_step: LPS vector from one slice's IPP to the next (mm), or a scalar distance along the
            normal (for a single slice, where no step can be measured).

    Returns:
        4x4 RAS affine for index ``(i = column, j = row, k = slice)``.
    """
    row, col = _unit_iop(iop)
    dr, dc = (float(x) for x in pixel_spacing)  # between rows, between columns
    if dr <= 0 or dc <= 0:
        raise GeometryError(f"PixelSpacing must be positive, got {[dr, dc]}")
    step = np.asarray(slice_step, dtype=np.float64)
    if step.ndim == 0:
        step = np.cross(row, col) * float(step)
    lps = np.eye(4)
    lps[:3, 0] = row * dc  # i moves along a row, one column at a time
    lps[:3, 1] = col * dr  # j moves down a column, one row at a time
    lps[:3, 2] = step
    lps[:3, 3] = np.asarray([float(x) for x in first_ipp], dtype=np.float64)
    return lps_to_ras(lps)


def dicom_slice_geometry(affine: np.ndarray, k: int) -> tuple[list[float], list[float], list[float]]:
    """DICOM geometry of slice ``k`` of a volume with RAS ``affine`` (index order column, row, slice).

    Returns:
        ``(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)`` as float lists: the LPS
        position of voxel ``(0, 0, k)``, the unit row and column directions (LPS), and
        ``[between rows, between columns]`` in mm.
    """
    lps = ras_to_lps(check_affine(affine))
    ipp = lps @ np.array([0.0, 0.0, float(k), 1.0])
    sp = spacing_from_affine(lps)
    row = lps[:3, 0] / sp[0]
    col = lps[:3, 1] / sp[1]
    return ipp[:3].tolist(), [*row.tolist(), *col.tolist()], [float(sp[1]), float(sp[0])]


def _scale_tuple(scale: Sequence[int] | int, ndim: int) -> np.ndarray:
    """The factors as a float array of length ``ndim``, checked by :func:`monai_sr.checks.check_scale`."""
    return np.asarray(check_scale(scale, ndim), dtype=np.float64)


def scaled_affine(affine: np.ndarray, scale: Sequence[int] | int) -> np.ndarray:
    """Affine of a volume super-resolved by integer ``scale`` per axis, keeping the field of view.

    Output voxel ``j`` sits at input index ``(j + 0.5) / s - 0.5``, so
    ``A' = A @ diag(1/s, 1)`` with the translation moved by ``A[:3, :3] @ ((1/s - 1) / 2)``.
    Works for any convention (RAS or LPS): it only composes index maps.
    """
    a = np.asarray(affine, dtype=np.float64)
    s = _scale_tuple(scale, a.shape[0] - 1)
    out = a.copy()
    out[:-1, :-1] = a[:-1, :-1] / s
    out[:-1, -1] = a[:-1, -1] + a[:-1, :-1] @ ((1.0 / s - 1.0) / 2.0)
    return out


def coarsened_affine(affine: np.ndarray, scale: Sequence[int] | int) -> np.ndarray:
    """Inverse of :func:`scaled_affine`: the affine of the grid that ``scale`` times coarser covers the same
    field of view (``scaled_affine(coarsened_affine(A, s), s) == A``)."""
    a = np.asarray(affine, dtype=np.float64)
    s = _scale_tuple(scale, a.shape[0] - 1)
    out = a.copy()
    out[:-1, :-1] = a[:-1, :-1] * s
    out[:-1, -1] = a[:-1, -1] - out[:-1, :-1] @ ((1.0 / s - 1.0) / 2.0)
    return out


def cropped_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a sub-volume whose first voxel is voxel ``start`` (one index per spatial axis) of the
    grid of ``affine``: same axes and spacing, the origin moved to that voxel's centre."""
    a = np.asarray(affine, dtype=np.float64)
    start = np.asarray(start, dtype=np.float64)
    if start.shape != (a.shape[0] - 1,):
        raise ValueError(f"start {start.tolist()} must have one index per spatial axis ({a.shape[0] - 1})")
    out = a.copy()
    out[:-1, -1] = a[:-1, :-1] @ start + a[:-1, -1]
    return out


def index_of_output_in_input(j: np.ndarray | int, s: int) -> np.ndarray:
    """Input index (fractional) at which output index ``j`` of an ``s``-times finer grid sits."""
    return (np.asarray(j, dtype=np.float64) + 0.5) / s - 0.5


def check_slice_positions(
    positions: Sequence[float], *, rel_tol: float = 0.05, abs_tol: float = 0.1, path: str | None = None
) -> float:
    """Check that sorted slice positions along the normal are equally spaced and return the step (mm).

    Real files round positions (differences of ~0.1 mm are normal), so a step may deviate from the
    median by ``max(abs_tol, rel_tol * median)``. Raises :class:`GeometryError` naming the slices on
    duplicated positions, missing slices (a gap of about twice the step) or unequal spacing.
    """
    p = np.asarray(positions, dtype=np.float64)
    if p.size < 2:
        raise GeometryError("a volume needs at least two slices to measure the slice spacing", path=path)
    d = np.diff(p)
    step = float(np.median(d))
    if np.any(d < abs_tol * 0.5):
        bad = int(np.argmin(d))
        raise GeometryError(f"duplicated slice position {p[bad]:.3f} mm (slices {bad} and {bad + 1})", path=path)
    tol = max(abs_tol, rel_tol * step)
    off = np.abs(d - step) > tol
    if np.any(off):
        bad = int(np.flatnonzero(off)[0])
        ratio = d[bad] / step
        kind = "missing slice(s)" if abs(ratio - round(ratio)) < 0.1 and ratio > 1.5 else "unequal slice spacing"
        raise GeometryError(
            f"{kind}: step {d[bad]:.3f} mm between slices {bad} and {bad + 1} (at {p[bad]:.3f} mm), "
            f"median step {step:.3f} mm",
            path=path,
        )
    return step


def offsets_from_grid(affine: np.ndarray, positions_lps: np.ndarray) -> np.ndarray:
    """Signed distance (mm) of each LPS position ``positions_lps[k]`` (e.g. a DICOM slice's
    ImagePositionPatient) from the position of voxel ``(0, 0, k)`` of the RAS ``affine``, along the unit
    direction of index axis 2: how far measured slices lie off the regular grid an affine describes."""
    lps = ras_to_lps(check_affine(affine, orthogonal=False))
    p = np.asarray(positions_lps, dtype=np.float64).reshape(-1, 3)
    axis = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    grid = lps[:3, 3] + np.outer(np.arange(len(p), dtype=np.float64), lps[:3, 2])
    return (p - grid) @ axis


def index_map(from_affine: np.ndarray, to_affine: np.ndarray) -> np.ndarray:
    """4x4 map from voxel indices of one grid to (fractional) voxel indices of another: index -> mm -> index.

    ``index_map(A, B) @ (i, j, k, 1)`` is where voxel ``(i, j, k)`` of the grid with affine ``A`` falls in
    the grid with affine ``B`` (both in the same convention), i.e. ``inv(B) @ A``.
    """
    a = check_affine(from_affine, orthogonal=False)
    b = check_affine(to_affine, orthogonal=False)
    return np.linalg.solve(b, a)


def slice_positions(affine: np.ndarray, shape: Sequence[int], axis: int) -> np.ndarray:
    """Position (mm) of each slice centre along the unit normal of the slices across index ``axis``.

    The normal is the cross product of the two in-plane axis directions, pointing towards increasing
    ``axis`` index, so positions increase with the slice index; for a DICOM series read by
    :mod:`monai_sr.io.dicom.reader` and ``axis=2`` they differ from ImagePositionPatient . normal only by a
    constant. The slice centre is the voxel at the middle of the other two axes.
    """
    a = check_affine(affine, orthogonal=False)
    if axis not in (0, 1, 2) or len(shape) != 3:
        raise ValueError(f"axis must be 0, 1 or 2 of a 3D shape, got axis {axis} and shape {list(shape)}")
    u, v = (ax for ax in range(3) if ax != axis)
    normal = np.cross(a[:3, u], a[:3, v])
    normal /= np.linalg.norm(normal)
    if float(normal @ a[:3, axis]) < 0:
        normal = -normal
    idx = np.zeros((4, int(shape[axis])))
    idx[u] = (shape[u] - 1) / 2.0
    idx[v] = (shape[v] - 1) / 2.0
    idx[axis] = np.arange(shape[axis])
    idx[3] = 1.0
    return normal @ (a @ idx)[:3]
