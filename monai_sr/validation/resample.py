"""Bring a volume onto another volume's grid, with the index map taken from the two affines.

Voxel ``v`` of the destination grid sits at millimetre position ``A_dst @ v``, which is the fractional
index ``inv(A_src) @ A_dst @ v`` of the source grid (:func:`monai_sr.geometry.index_map`).
:func:`resample_to_grid` samples the source there with :func:`scipy.ndimage.affine_transform`
(trilinear for ``order=1``, nearest for ``order=0``; between the outermost voxel centre and the edge
of the field of view the edge value is repeated). Destination voxels outside the source's field of view,
the union of its voxels' extents, get ``cval`` (nan by default, so callers can leave them out of a mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from monai_sr import geometry

__all__ = ["same_grid", "overlap_fraction", "resample_to_grid"]

Progress = Callable[[str, int, int], None]


def same_grid(shape_a: Sequence[int], affine_a: np.ndarray, shape_b: Sequence[int], affine_b: np.ndarray, *, atol: float = 1e-3) -> bool:
    """True when both grids have the same shape and their affines agree to ``atol`` (mm)."""
    return tuple(shape_a) == tuple(shape_b) and bool(np.allclose(np.asarray(affine_a), np.asarray(affine_b), atol=atol))


def overlap_fraction(src_shape: Sequence[int], src_affine: np.ndarray, dst_shape: Sequence[int], dst_affine: np.ndarray, *, points: int = 17) -> float:
    """Fraction of a lattice of up to ``points`` per axis of destination voxels that falls inside the source grid.

    Cheap (at most ``points**3`` positions), to refuse grids that do not overlap before any resampling.
    """
    m = geometry.index_map(dst_affine, src_affine)
    axes = [np.unique(np.linspace(0, n - 1, min(points, n)).round()) for n in dst_shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    idx = m[:3, :3] @ grid + m[:3, 3:4]
    hi = np.asarray(src_shape, dtype=np.float64)[:, None] - 0.5
    inside = np.all((idx >= -0.5) & (idx <= hi), axis=0)
    return float(inside.mean())


def resample_to_grid(
    src: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
    *,
    order: int = 1,
    cval: float = np.nan,
    axis: int = 2,
    slices: Sequence[int] | None = None,
    progress: Progress | None = None,
    stage: str = "resample",
    slab: int = 16,
) -> np.ndarray:
    """Sample ``src`` (3D) at the voxel centres of the grid ``(dst_shape, dst_affine)``.

    Args:
        src, src_affine: source voxels and their affine (same convention as ``dst_affine``).
        order: 1 = trilinear, 0 = nearest (for masks).
        cval: value of destination voxels outside the source's field of view.
        axis: the destination axis worked along in slabs (progress counts slices along it).
        slices: only these destination slices along ``axis``; the result then has ``len(slices)`` along it.
    Returns:
        float32 array of ``dst_shape`` (or fewer slices).
    """
    m = geometry.index_map(dst_affine, src_affine)
    src = np.asarray(src, dtype=np.float32)
    ones = np.ones(src.shape, dtype=np.uint8)
    ks = list(range(int(dst_shape[axis]))) if slices is None else [int(k) for k in slices]
    out_shape = list(dst_shape)
    out_shape[axis] = len(ks)
    out = np.empty(out_shape, dtype=np.float32)
    # Runs of consecutive slices go through affine_transform together.
    runs: list[tuple[int, int, int]] = []  # (first destination slice, count, position in out)
    for pos, k in enumerate(ks):
        if runs and runs[-1][0] + runs[-1][1] == k and runs[-1][1] < slab:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, runs[-1][2])
        else:
            runs.append((k, 1, pos))
    done = 0
    for k0, count, pos in runs:
        shape = list(dst_shape)
        shape[axis] = count
        offset = m[:3, 3] + m[:3, axis] * k0
        block = ndimage.affine_transform(src, m[:3, :3], offset=offset, output_shape=tuple(shape), order=order, mode="nearest", prefilter=False)
        # Inside the field of view = inside some source voxel's extent, [-0.5, n - 0.5) per axis.
        inside = ndimage.affine_transform(ones, m[:3, :3], offset=offset, output_shape=tuple(shape), order=0, mode="grid-constant", cval=0)
        block[inside == 0] = cval
        index = [slice(None)] * 3
        index[axis] = slice(pos, pos + count)
        out[tuple(index)] = block
        done += count
        if progress is not None:
            progress(stage, done, len(ks))
    return out
