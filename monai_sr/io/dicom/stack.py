"""Put a series' frames in slice order and check that they form one regular grid.

Slices are ordered by their position along the normal (never by InstanceNumber or file name). Mixed
orientations, matrices or pixel spacings, gantry tilt, positions off one line, missing slices and unequal
steps raise :class:`~monai_sr.errors.GeometryError`; with ``resample=True`` unequal steps and missing
slices get a regular grid to interpolate onto instead. SpacingBetweenSlices / SliceThickness are compared
with the positions, not trusted; missing geometry is an error naming the file and tag. The affine of the
ordered stack: :func:`series_affine` (RAS, see :mod:`monai_sr.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from monai_sr import geometry
from monai_sr.errors import GeometryError
from monai_sr.io.dicom.frames import Frame, check_decodable

__all__ = ["DicomSeries", "order_slices", "series_affine", "series_shape", "MAX_RESAMPLE_GAP"]

#: With ``resample=True``, the largest gap (in median steps) that is filled by interpolation.
MAX_RESAMPLE_GAP = 4.0

_GEOMETRY = (
    ("ImagePositionPatient", "PlanePositionSequence"),
    ("ImageOrientationPatient", "PlaneOrientationSequence"),
    ("PixelSpacing", "PixelMeasuresSequence"),
)


@dataclass
class DicomSeries:
    """One series chosen under ``folder``: its frames (pixel data deferred) in slice order, and notes.

    ``positions`` are the frames' positions (mm) along the slice normal; ``grid`` the positions of the
    regular slices to interpolate when the series is resampled (None when it is read as it is).
    """

    folder: Path
    frames: list[Frame]
    notes: list[str] = field(default_factory=list)
    positions: np.ndarray | None = None
    grid: np.ndarray | None = None

    @property
    def datasets(self) -> list[pydicom.Dataset]:
        """The header of each slice's file (a multi-frame file's once per frame)."""
        return [f.dataset for f in self.frames]

    @property
    def files(self) -> list[Path]:
        return [f.path for f in self.frames]


def _require(frame: Frame, keyword: str, sequence: str):
    value = frame.attr(sequence, keyword)
    if value is None or value == "":
        where = f" ({sequence} of the functional groups, or top level)" if frame.index is not None else ""
        raise GeometryError(f"missing {keyword}{where}: cannot place {frame.label} in patient space", path=frame.path)
    return value


_TAGS = {"ImagePositionPatient": "(0020,0032)", "ImageOrientationPatient": "(0020,0037)", "PixelSpacing": "(0028,0030)"}


def _floats(value, n: int, frame: Frame, keyword: str) -> np.ndarray:
    tag = _TAGS.get(keyword, "")
    try:
        v = np.asarray([float(x) for x in (value if not isinstance(value, (str, bytes)) else [value])], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"unreadable {keyword} {tag} {str(value)[:60]!r} in {frame.label}", path=frame.path) from exc
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise GeometryError(f"{keyword} {tag} must hold {n} finite numbers, got {v.tolist()} in {frame.label}",
                            path=frame.path)
    if keyword == "PixelSpacing" and np.any(v <= 0):
        raise GeometryError(f"PixelSpacing {tag} is {v.tolist()} in {frame.label}: spacing must be positive",
                            path=frame.path)
    if keyword == "ImageOrientationPatient":
        row, col = v[:3], v[3:]
        norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
        if min(norms) < 0.99 or max(norms) > 1.01:
            raise GeometryError(f"ImageOrientationPatient {tag} in {frame.label} holds direction vectors of length "
                                f"{norms[0]:.4g} and {norms[1]:.4g}, not unit vectors", path=frame.path)
        cos = abs(float(row @ col)) / (norms[0] * norms[1])
        if cos > 1e-3:
            raise GeometryError(f"ImageOrientationPatient {tag} in {frame.label}: row and column directions are not "
                                f"perpendicular (cosine {cos:.4g})", path=frame.path)
    return v


def order_slices(folder: Path, frames: list[Frame], notes: list[str], *, resample: bool = False) -> DicomSeries:
    """Sort by position along the normal; check orientation, matrix, spacing, decodability and steps."""
    f0 = frames[0]
    geo = []
    for f in frames:
        ipp, iop, ps = (_require(f, kw, seq) for kw, seq in _GEOMETRY)
        geo.append((_floats(ipp, 3, f, "ImagePositionPatient"), _floats(iop, 6, f, "ImageOrientationPatient"),
                    _floats(ps, 2, f, "PixelSpacing")))
    ipp0, iop0, ps0 = geo[0]
    normal = geometry.slice_normal(iop0)
    shape0 = (f0.dataset.get("Rows"), f0.dataset.get("Columns"))
    for f, (_, iop, ps) in zip(frames, geo):
        if np.abs(iop - iop0).max() > 1e-4:
            raise GeometryError(
                f"mixed orientations in one series: {iop.round(5).tolist()} in {f.label} differs from "
                f"{iop0.round(5).tolist()} in {f0.label}",
                path=f.path,
            )
        shape = (f.dataset.get("Rows"), f.dataset.get("Columns"))
        if shape != shape0:
            raise GeometryError(f"matrix {shape[0]}x{shape[1]} differs from {shape0[0]}x{shape0[1]} of {f0.label}", path=f.path)
        if np.abs(ps - ps0).max() > 1e-4:
            raise GeometryError(f"PixelSpacing {ps.tolist()} in {f.label} differs from {ps0.tolist()}", path=f.path)
    check_decodable(frames, notes)
    order = np.argsort([float(g[0] @ normal) for g in geo], kind="stable")
    frames = [frames[i] for i in order]
    ipps = np.asarray([geo[i][0] for i in order])
    positions = ipps @ normal
    series = DicomSeries(folder=folder, frames=frames, notes=notes, positions=positions)
    if len(frames) > 1:
        _check_stacking(folder, ipps, normal, float(ps0.min()))
        try:
            # positions rounded to 0.1 mm in the headers make steps differ by up to 0.1 mm: accepted
            step = geometry.check_slice_positions(positions, abs_tol=0.15, path=str(folder))
        except GeometryError as exc:
            if not resample:
                raise GeometryError(f"{exc.cause}; resample=True (--resample) interpolates onto a regular grid", path=folder) from exc
            series.grid, step = _regular_grid(folder, positions, exc)
            notes.append(
                f"resampled {len(positions)} slices at unequal positions (steps {np.diff(positions).min():.3f} to "
                f"{np.diff(positions).max():.3f} mm) onto {len(series.grid)} slices every {step:.4f} mm along the normal "
                f"(linear interpolation between neighbouring slices, positions from ImagePositionPatient)"
            )
            notes.append(_filled_note(frames, positions, series.grid))
        _check_spacing_tags(f0, step, notes)
    return series


#: A resampled slice this close (mm) to a source slice is that slice (the other one weighs at most 0.5%).
AT_SOURCE_MM = 0.01


def _ranges(ks: list[int]) -> str:
    out, k0 = [], None
    for i, k in enumerate(ks):
        if k0 is None:
            k0 = k
        if i + 1 == len(ks) or ks[i + 1] != k + 1:
            out.append(str(k0) if k0 == k else f"{k0}-{k}")
            k0 = None
    return ", ".join(out)


def _filled_note(frames: list[Frame], positions: np.ndarray, grid: np.ndarray, shown: int = 4) -> str:
    """Which slices of the resampled grid were filled by interpolation (0-based output slice numbers),
    with the source slices the first few lie between; the others lie within AT_SOURCE_MM of one."""
    filled = []
    for k, t in enumerate(grid):
        if np.abs(positions - t).min() > AT_SOURCE_MM:
            hi = int(np.clip(np.searchsorted(positions, t), 1, len(positions) - 1))
            filled.append((k, t, hi - 1, hi))
    at_source = len(grid) - len(filled)
    if not filled:
        return f"--resample: every one of the {len(grid)} slices lies within {AT_SOURCE_MM} mm of a source slice"
    detail = "; ".join(
        f"{k} at {t:.3f} mm between {frames[lo].label} ({positions[lo]:.3f}) and {frames[hi].label} ({positions[hi]:.3f})"
        for k, t, lo, hi in filled[:shown])
    more = f"; and {len(filled) - shown} more" if len(filled) > shown else ""
    return (f"--resample filled {len(filled)} of {len(grid)} slices by interpolation, output slice(s) "
            f"{_ranges([k for k, *_ in filled])} (0-based; positions in mm along the normal): {detail}{more}; "
            f"the other {at_source} lie within {AT_SOURCE_MM} mm of a source slice")


def _check_stacking(folder: Path, ipps: np.ndarray, normal: np.ndarray, pixel: float) -> None:
    """Refuse a stack whose slices do not follow the normal: gantry tilt / shear, or positions off one line."""
    along = ipps[-1] - ipps[0]
    length = float(np.linalg.norm(along))
    if length < 1e-6:
        return  # all on one position: check_slice_positions names the duplicates
    cos = abs(float(along @ normal)) / length
    if cos < np.cos(np.deg2rad(0.5)):
        tilt = float(np.rad2deg(np.arccos(min(cos, 1.0))))
        raise GeometryError(
            f"slices are stacked {tilt:.2f} degrees off their normal (gantry tilt or shear); "
            f"such a stack is not resampled (it needs an in-plane shear, which would change the images)",
            path=folder,
        )
    d = ipps - ipps[0]
    u = along / length
    off = np.linalg.norm(d - np.outer(d @ u, u), axis=1)
    if off.max() > 0.5 * pixel:
        k = int(np.argmax(off))
        raise GeometryError(
            f"slice positions do not lie on one line: slice {k} is {off[k]:.3f} mm off the line through the first "
            f"and last slice (several stacks or a moved table?)",
            path=folder,
        )


def _regular_grid(folder: Path, positions: np.ndarray, reason: GeometryError) -> tuple[np.ndarray, float]:
    """Positions of a regular grid from the first to the last slice, at about the median step."""
    d = np.diff(positions)
    step = float(np.median(d))
    if d.min() < 0.05:
        raise GeometryError(
            f"{reason.cause}; cannot resample: two slices share a position (a repeated slice, or several stacks "
            f"that need splitting)",
            path=folder,
        )
    if d.max() > MAX_RESAMPLE_GAP * step:
        raise GeometryError(
            f"{reason.cause}; cannot resample: a gap of {d.max():.3f} mm is more than {MAX_RESAMPLE_GAP:g} times the "
            f"median step ({step:.3f} mm), too much to fill by interpolation",
            path=folder,
        )
    n = int(round((positions[-1] - positions[0]) / step)) + 1
    grid = np.linspace(positions[0], positions[-1], n)
    return grid, float(grid[1] - grid[0])


_SPACING_TAGS = {"SpacingBetweenSlices": "(0018,0088)", "SliceThickness": "(0018,0050)"}


def _spacing_tag(frame: Frame, keyword: str) -> float | str | None:
    """``keyword`` (SpacingBetweenSlices / SliceThickness) of ``frame`` in mm: None when absent, the raw
    text when it is not one finite positive number."""
    value = frame.attr("PixelMeasuresSequence", keyword)
    if value is None:
        return None
    try:
        mm = float(value)
    except (TypeError, ValueError):
        return str(value)[:40]
    return mm if np.isfinite(mm) and mm > 0 else str(value)[:40]


def _check_spacing_tags(frame: Frame, step: float, notes: list[str]) -> None:
    """Compare SpacingBetweenSlices with the measured step; the positions win, a mismatch is noted (an
    unreadable value too: it is not used)."""
    sbs = _spacing_tag(frame, "SpacingBetweenSlices")
    if isinstance(sbs, str):
        notes.append(f"SpacingBetweenSlices (0018,0088) {sbs!r} is not a positive number; the slice positions are used")
    elif sbs is not None and abs(sbs - step) > max(0.1, 0.05 * step):
        notes.append(
            f"SpacingBetweenSlices {sbs:g} mm contradicts the slice positions (step {step:.4g} mm); "
            f"the positions are used"
        )
    thk = _spacing_tag(frame, "SliceThickness")
    if isinstance(thk, str):
        notes.append(f"SliceThickness (0018,0050) {thk!r} is not a positive number")
    elif thk is not None and thk > step * 1.05 + 0.1:
        notes.append(f"SliceThickness {thk:g} mm exceeds the slice step {step:.4g} mm (overlapping slices)")


def series_affine(series: DicomSeries) -> np.ndarray:
    f0 = series.frames[0]
    iop, ipp0, ps = f0.iop(), [float(v) for v in f0.ipp()], f0.pixel_spacing()
    if series.grid is not None:
        step: np.ndarray | float = float(series.grid[1] - series.grid[0])
    elif len(series.frames) > 1:
        first = np.asarray(ipp0)
        last = np.asarray([float(v) for v in series.frames[-1].ipp()])
        step = (last - first) / (len(series.frames) - 1)
    else:
        step = None
        for keyword, tag in _SPACING_TAGS.items():  # the first one present is the slice spacing
            value = _spacing_tag(f0, keyword)
            if isinstance(value, str):
                raise GeometryError(f"{keyword} {tag} is {value!r} in {f0.label}, the only slice: its slice spacing "
                                    "must be one positive number", path=f0.path)
            if value is not None:
                step = value
                break
        if step is None:
            step = 1.0
            series.notes.append("single slice without SpacingBetweenSlices or SliceThickness: slice spacing taken as 1 mm")
        else:
            series.notes.append(f"single slice: slice spacing taken from the header ({step:g} mm)")
    return geometry.affine_from_dicom(iop, ipp0, ps, step)


def series_shape(series: DicomSeries) -> tuple[int, int, int]:
    """``(columns, rows, slices)`` of the series' volume, without reading pixels."""
    ds0 = series.frames[0].dataset
    n = len(series.grid) if series.grid is not None else len(series.frames)
    return int(ds0.Columns), int(ds0.Rows), n
