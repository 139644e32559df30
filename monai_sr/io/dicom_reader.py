"""Read one DICOM MR series into a RAS volume with true geometry.

The reader is a MONAI :class:`~monai.data.ImageReader`, so ``LoadImage(reader=DicomSeriesReader())``
works, and :func:`load_dicom_series` is the direct door. The input is a folder (searched recursively),
a DICOMDIR or one DICOM file (e.g. an Enhanced MR multi-frame object); when it holds several series
(or stacks: echoes, temporal positions...) one is chosen with ``series=`` (see
:mod:`monai_sr.io.dicom_series`), else the reader refuses with their list.

It differs from MONAI's ``PydicomReader`` on purpose: slices are ordered by their position along the
normal (never by InstanceNumber or file name), the positions are checked (missing slices, unequal steps,
gantry tilt, mixed orientations raise :class:`~monai_sr.errors.GeometryError`; with ``resample=True``
unequal steps and missing slices are interpolated onto a regular grid instead), SpacingBetweenSlices /
SliceThickness are compared with the positions instead of trusted, and missing geometry is an error
naming the file and tag, never a silent identity affine. Pixel data in any transfer syntax that
pydicom's plugins decode (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle) is read;
another one is an :class:`~monai_sr.errors.InputError` naming the file and the syntax.

Array layout: ``(i = column, j = row, k = slice)``; the affine (meta ``"affine"``) is RAS, see
:mod:`monai_sr.geometry`. Meta also carries the source headers (``"dicom_headers"``, DICOM JSON dicts
without pixel data, one per slice in slice order; for a multi-frame object the top-level attributes
plus the frame's geometry and rescale, flattened) for the derived-series writer, and
``"monai_sr_notes"`` (what was tolerated or changed). Header dicts of different slices share their
identical elements: treat them as read-only.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from monai.data import ImageReader, MetaTensor
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataelem import RawDataElement
from pydicom.pixels import apply_rescale
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.io.dicom_series import Frame, find_series, lenient_reading, select_series

__all__ = [
    "DicomSeries",
    "DicomSeriesReader",
    "scan_folder",
    "load_dicom_series",
    "read_slices",
    "series_meta",
    "series_shape",
    "source_headers",
]

logger = logging.getLogger(__name__)

#: Meta keys this reader adds beside MONAI's own.
HEADERS_KEY = "dicom_headers"
FILES_KEY = "dicom_files"
FRAMES_KEY = "dicom_frame_numbers"
NOTES_KEY = "monai_sr_notes"

#: With ``resample=True``, the largest gap (in median steps) that is filled by interpolation.
MAX_RESAMPLE_GAP = 4.0

_GEOMETRY = (
    ("ImagePositionPatient", "PlanePositionSequence"),
    ("ImageOrientationPatient", "PlaneOrientationSequence"),
    ("PixelSpacing", "PixelMeasuresSequence"),
)
_PIXEL_DATA = 0x7FE00010
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


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


def scan_folder(
    folder: str | os.PathLike, *, series: str | int | None = None, resample: bool = False
) -> DicomSeries:
    """Find the series ``series`` names (or the only one) under ``folder`` and return it in slice order.

    ``folder`` may also be a DICOMDIR or one DICOM file. Files that are not DICOM are skipped with a
    note; a DICOM file that cannot be parsed is an error naming it (a damaged slice must not silently
    vanish). Several series without a choice are refused with their list (:class:`InputError`).
    """
    folder = Path(folder)
    candidates, notes = find_series(folder)
    chosen = select_series(candidates, series, path=folder)
    notes = list(notes)
    if len(candidates) > 1:
        notes.append(f"read series {chosen.selector} ({chosen.description or 'no description'}) of {len(candidates)}")
    with lenient_reading():
        return _order_slices(folder, chosen.frames, notes, resample=resample)


def _require(frame: Frame, keyword: str, sequence: str):
    value = frame.attr(sequence, keyword)
    if value is None or value == "":
        where = f" ({sequence} of the functional groups, or top level)" if frame.index is not None else ""
        raise GeometryError(f"missing {keyword}{where}: cannot place {frame.label} in patient space", path=frame.path)
    return value


def _floats(value, n: int, frame: Frame, keyword: str) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"unreadable {keyword} {value!r} in {frame.label}", path=frame.path) from exc
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise GeometryError(f"{keyword} must hold {n} numbers, got {list(value)} in {frame.label}", path=frame.path)
    return v


def _order_slices(folder: Path, frames: list[Frame], notes: list[str], *, resample: bool = False) -> DicomSeries:
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
    _check_decodable(frames, notes)
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
        _check_spacing_tags(f0, step, notes)
    return series


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


def _check_spacing_tags(frame: Frame, step: float, notes: list[str]) -> None:
    """Compare SpacingBetweenSlices with the measured step; the positions win, a mismatch is noted."""
    sbs = frame.attr("PixelMeasuresSequence", "SpacingBetweenSlices")
    if sbs is not None and abs(float(sbs) - step) > max(0.1, 0.05 * step):
        notes.append(
            f"SpacingBetweenSlices {float(sbs):g} mm contradicts the slice positions (step {step:.4g} mm); "
            f"the positions are used"
        )
    thk = frame.attr("PixelMeasuresSequence", "SliceThickness")
    if thk is not None and float(thk) > step * 1.05 + 0.1:
        notes.append(f"SliceThickness {float(thk):g} mm exceeds the slice step {step:.4g} mm (overlapping slices)")


# --- pixel data -------------------------------------------------------------------------------------


def _syntax(ds: pydicom.Dataset, path: Path, notes: list[str]) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    # No file meta (an old ACR-NEMA style file): the syntax pydicom read the dataset with.
    implicit, little = ds.original_encoding
    if not little:
        raise InputError("no Transfer Syntax UID in the file meta and big endian data: cannot decode", path=path)
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ts
    notes.append(f"{path.name}: no Transfer Syntax UID in the file meta; read as {ts.name}")
    return ts


def _check_decodable(frames: list[Frame], notes: list[str]) -> None:
    """Refuse before reading any voxel when a file's pixel data cannot be decoded here."""
    from pydicom.pixels import get_decoder

    seen = set()
    for f in frames:
        if id(f.dataset) in seen:
            continue
        seen.add(id(f.dataset))
        ds = f.dataset
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(
                f"expected a greyscale image, SamplesPerPixel is {ds.SamplesPerPixel} "
                f"({ds.get('PhotometricInterpretation', '?')})",
                path=f.path,
            )
        image_type = ds.get("ImageType") or []
        if "MOSAIC" in [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]:
            raise InputError(
                "Siemens mosaic (the slices of a volume tiled in one image) is not read here; "
                "convert it with dcm2niix first",
                path=f.path,
            )
        ts = _syntax(ds, f.path, notes)
        if ts in _NATIVE_LE:
            continue
        try:
            decoder = get_decoder(ts)
        except NotImplementedError as exc:
            raise InputError(f"pixel data in transfer syntax '{ts.name}' ({ts}) cannot be decoded: no decoder exists for it", path=f.path) from exc
        if not decoder.is_available:
            raise InputError(
                f"pixel data in transfer syntax '{ts.name}' ({ts}) cannot be decoded: install one of "
                f"{'; '.join(decoder.missing_dependencies)}",
                path=f.path,
            )


def _native_frame(frame: Frame) -> np.ndarray | None:
    """Stored values of an uncompressed little-endian frame straight from the file bytes; None if not native."""
    ds = frame.dataset
    ts = ds.file_meta.TransferSyntaxUID
    bits = int(ds.BitsAllocated)
    if ts not in _NATIVE_LE or bits not in (8, 16, 32):
        return None
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols = int(ds.Rows), int(ds.Columns)
    nbytes = rows * cols * dtype.itemsize
    offset = (frame.index or 0) * nbytes
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if isinstance(raw, RawDataElement) and raw.value is None:
        with open(frame.path, "rb") as fh:
            fh.seek(raw.value_tell + offset)
            buf = fh.read(nbytes)
    else:
        buf = bytes(raw.value[offset : offset + nbytes]) if raw.value is not None else b""
    if len(buf) < nbytes:
        raise InputError(f"damaged DICOM file: pixel data of {frame.label} is truncated ({len(buf)} of {nbytes} bytes)", path=frame.path)
    arr = np.frombuffer(buf, dtype=dtype).reshape(rows, cols)
    stored = int(ds.get("BitsStored", bits))
    if stored < bits:  # high bits are not part of the value: sign-extend or mask, as pydicom does
        shift = bits - stored
        arr = (arr << shift) >> shift if signed else arr & dtype.type((1 << stored) - 1)
    return arr


def _decoded_frame(frame: Frame, cache: dict) -> np.ndarray:
    """Stored values of a frame decoded by pydicom (compressed, big endian, deflated...)."""
    ds = frame.dataset
    arr = cache.get(id(ds))
    if arr is None:
        try:
            arr = ds.pixel_array
        except Exception as exc:
            ts = ds.file_meta.TransferSyntaxUID
            raise InputError(
                f"pixel data in transfer syntax '{ts.name}' cannot be decoded ({type(exc).__name__}: {exc})", path=frame.path
            ) from exc
        cache.clear()  # one file at a time: memory stays at one decoded object
        cache[id(ds)] = arr
    if frame.index is None:
        if arr.ndim != 2:
            raise InputError(f"expected one frame per file, pixel data has shape {arr.shape}", path=frame.path)
        return arr
    return arr[frame.index] if arr.ndim == 3 else arr


def _frame_values(frame: Frame, cache: dict) -> np.ndarray:
    """Real values (Modality LUT / Pixel Value Transformation applied) of a frame, ``(row, column)``.

    Stored integers come back as they are when there is no rescale (the caller casts them), else float64.
    """
    arr = _native_frame(frame)
    if arr is None:
        arr = _decoded_frame(frame, cache)
    ds = frame.dataset
    if frame.index is None and "ModalityLUTSequence" in ds:
        return np.asarray(apply_rescale(arr, ds), dtype=np.float64)
    slope, intercept = frame.rescale()
    if slope == 1.0 and intercept == 0.0:
        return arr
    out = arr.astype(np.float64)
    out *= slope
    out += intercept
    return out


def _pixels(series: DicomSeries, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Stack slices ``start .. stop - 1`` (all by default) as float32 ``(column, row, slice)``,
    interpolated onto ``series.grid`` if set (then the whole grid is read; ``start``/``stop`` must be the
    defaults).

    The array is Fortran-ordered: each slice ``[:, :, k]`` is one contiguous block, as it is in the files.
    """
    ds0 = series.frames[0].dataset
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    cache: dict = {}
    if series.grid is None:
        frames = series.frames[start:stop]
        out = np.empty((len(frames), rows, cols), dtype=np.float32)
        for k, frame in enumerate(frames):
            out[k] = _frame_values(frame, cache)
        return out.transpose(2, 1, 0)
    if (start, stop) != (0, None):
        raise ValueError("a resampled series is read whole")
    out = np.empty((len(series.grid), rows, cols), dtype=np.float32)
    pos = series.positions
    loaded: dict[int, np.ndarray] = {}  # at most the two neighbours of the current grid slice
    for k, t in enumerate(series.grid):
        hi = int(np.clip(np.searchsorted(pos, t), 1, len(pos) - 1))
        lo = hi - 1
        w = float(np.clip((t - pos[lo]) / (pos[hi] - pos[lo]), 0.0, 1.0))
        for idx in list(loaded):
            if idx not in (lo, hi):
                del loaded[idx]
        for idx in (lo, hi):
            if idx not in loaded:
                loaded[idx] = np.asarray(_frame_values(series.frames[idx], cache), dtype=np.float64)
        out[k] = (1.0 - w) * loaded[lo] + w * loaded[hi]
    return out.transpose(2, 1, 0)


def _affine(series: DicomSeries) -> np.ndarray:
    f0 = series.frames[0]
    iop, ipp0, ps = f0.iop(), [float(v) for v in f0.ipp()], f0.pixel_spacing()
    if series.grid is not None:
        step: np.ndarray | float = float(series.grid[1] - series.grid[0])
    elif len(series.frames) > 1:
        first = np.asarray(ipp0)
        last = np.asarray([float(v) for v in series.frames[-1].ipp()])
        step = (last - first) / (len(series.frames) - 1)
    else:
        thk = f0.attr("PixelMeasuresSequence", "SpacingBetweenSlices") or f0.attr("PixelMeasuresSequence", "SliceThickness") or 1.0
        step = float(thk)
        series.notes.append(f"single slice: slice spacing taken from the header ({step:g} mm)")
    return geometry.affine_from_dicom(iop, ipp0, ps, step)


# --- headers ----------------------------------------------------------------------------------------


class _HeaderJSON:
    """Headers as DICOM JSON model dicts (PS3.18 F), to travel in meta, converting each distinct element once.

    JSON rather than a Dataset: MONAI's transforms copy, collate and byte-swap meta, which they can do
    with plain dicts and lists but not with pydicom objects. ``pydicom.Dataset.from_json`` restores it.
    Elements whose raw bytes equal ones already converted (most of a series' header) share that result.
    """

    _SKIP_GROUPS = (0x0000, 0x5200, 0x7FE0)  # command set, functional groups (flattened), pixel data

    def __init__(self) -> None:
        self._cache: dict[tuple, dict] = {}

    @staticmethod
    def _bulk(_elem) -> str:
        return ""

    def element(self, elem) -> dict:
        return elem.to_json_dict(bulk_data_element_handler=self._bulk, bulk_data_threshold=1 << 20)

    def dataset(self, ds: pydicom.Dataset) -> dict:
        out = {}
        charset = ds.get_item(0x00080005)
        # raw bytes, or the converted value (a MultiValue when several): only its text goes in the keys
        charset = None if charset is None else str(charset.value)
        for tag in ds.keys():
            if tag.group in self._SKIP_GROUPS:
                continue
            raw = ds.get_item(tag, keep_deferred=True)
            key = None
            if isinstance(raw, RawDataElement):
                if isinstance(raw.value, bytes):
                    key = (int(tag), raw.VR, raw.value, charset)
            elif raw.VR != "SQ" and raw.VR not in _BINARY_VRS:  # converted already (read by the checks)
                key = (int(tag), raw.VR, str(raw.value), charset)
            if key is not None:
                hit = self._cache.get(key)
                if hit is not None:
                    out[f"{tag:08X}"] = hit
                    continue
            try:
                value = self.element(ds[tag])
            except Exception as exc:  # an unreadable element must not make the image unreadable
                logger.info("header element %s not kept in meta: %s", tag, exc)
                continue
            if key is not None:
                self._cache[key] = value
            out[f"{tag:08X}"] = value
        return out

    def frame(self, frame: Frame, top: dict) -> dict:
        """Flattened header of one frame of a multi-frame object: top level + the frame's functional groups."""
        out = dict(top)
        for sequence, keywords in _FLATTENED:
            for kw in keywords:
                for group in (frame.per_frame, frame.shared):
                    if group is not None and sequence in group and len(group[sequence].value):
                        item = group[sequence].value[0]
                        if kw in item:
                            elem = item[kw]
                            out[f"{elem.tag:08X}"] = self.element(elem)
                            break
        te = frame.attr("MREchoSequence", "EffectiveEchoTime")
        if te is not None:
            out["00180081"] = {"vr": "DS", "Value": [round(float(te), 6)]}
        tr = frame.attr("MRTimingAndRelatedParametersSequence", "RepetitionTime")
        if tr is not None:
            out["00180080"] = {"vr": "DS", "Value": [round(float(tr), 6)]}
        out["00280008"] = {"vr": "IS", "Value": [1]}
        # The classic MR image's Scanning Sequence / Sequence Variant, from the Enhanced MR attributes.
        pulse = str(frame.dataset.get("EchoPulseSequence", "") or "")
        scanning = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(pulse, ["RM"])
        out.setdefault("00180020", {"vr": "CS", "Value": scanning})
        out.setdefault("00180021", {"vr": "CS", "Value": ["NONE"]})
        return out


_BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")

_FLATTENED = (
    ("PlanePositionSequence", ("ImagePositionPatient",)),
    ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
    ("PixelMeasuresSequence", ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")),
    ("PixelValueTransformationSequence", ("RescaleIntercept", "RescaleSlope", "RescaleType")),
    ("FrameVOILUTSequence", ("WindowCenter", "WindowWidth")),
)


def _headers(series: DicomSeries) -> list[dict]:
    conv = _HeaderJSON()
    tops: dict[int, dict] = {}
    headers = []
    for f in series.frames:
        top = tops.get(id(f.dataset))
        if top is None:
            top = tops[id(f.dataset)] = conv.dataset(f.dataset)
        headers.append(top if f.index is None else conv.frame(f, top))
    if series.grid is None:
        return headers
    # Resampled: each grid slice gets its nearest source slice's header at the grid position.
    f0 = series.frames[0]
    normal = geometry.slice_normal([float(v) for v in f0.iop()])
    ipp0 = np.asarray([float(v) for v in f0.ipp()])
    out = []
    for t in series.grid:
        h = dict(headers[int(np.argmin(np.abs(series.positions - t)))])
        ipp = ipp0 + normal * (t - series.positions[0])
        h["00200032"] = {"vr": "DS", "Value": [round(float(v), 5) for v in ipp]}
        h.pop("00201041", None)  # SliceLocation of the source slice no longer applies
        out.append(h)
    return out


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while headers are parsed: pydicom makes many small objects, and full
    collections in between (walking every object of a torch / MONAI process) took as long as the read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class DicomSeriesReader(ImageReader):
    """MONAI ImageReader for a DICOM series (see the module docstring).

    Args:
        series: Series Instance UID or Series Number (``"301:TE=25"`` for one stack) to read when the
            input holds several; None reads the only one and refuses several.
        resample: interpolate a stack with unequal steps or missing slices onto a regular grid (linear
            along the normal) instead of refusing it.

    Examples::

        from monai.transforms import LoadImage
        img = LoadImage(reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)("series/")
        img.affine      # RAS, index (column, row, slice)
    """

    def __init__(self, series: str | int | None = None, *, resample: bool = False) -> None:
        super().__init__()
        self.series = series
        self.resample = bool(resample)

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        from monai_sr.io.dicom_series import is_dicom_input

        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and is_dicom_input(names[0])

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> DicomSeries:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if len(names) != 1:
            raise InputError(f"expected one series folder, DICOMDIR or DICOM file, got {len(names)} paths")
        with _gc_paused():
            return scan_folder(names[0], series=kwargs.get("series", self.series), resample=kwargs.get("resample", self.resample))

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        with lenient_reading(), _gc_paused():
            volume = _pixels(img)
        return volume, series_meta(img)


def series_shape(series: DicomSeries) -> tuple[int, int, int]:
    """``(columns, rows, slices)`` of the volume :func:`_pixels` makes, without reading pixels."""
    ds0 = series.frames[0].dataset
    n = len(series.grid) if series.grid is not None else len(series.frames)
    return int(ds0.Columns), int(ds0.Rows), n


def series_meta(series: DicomSeries) -> dict:
    """The MetaTensor meta of the series' volume (affine, shape, source headers, files, notes): what
    :meth:`DicomSeriesReader.get_data` returns beside the voxels, made without reading any pixels."""
    with lenient_reading(), _gc_paused():
        affine = _affine(series)
        headers = _headers(series)
    meta = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(series_shape(series)),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
        "filename_or_obj": str(series.folder),
        HEADERS_KEY: headers,
        FILES_KEY: [str(p) for p in series.files],
        NOTES_KEY: list(series.notes),
    }
    if any(f.index is not None for f in series.frames):
        meta[FRAMES_KEY] = [None if f.index is None else f.index + 1 for f in series.frames]
    for note in series.notes:
        logger.info("%s: %s", series.folder, note)
    return meta


def read_slices(series: DicomSeries, start: int, stop: int) -> np.ndarray:
    """Slices ``start .. stop - 1`` of the series' volume as float32 ``(column, row, stop - start)``, read
    from the files now (a block of what :func:`load_dicom_series` returns, without reading the rest).
    A resampled series (``series.grid`` set) is read whole and cut."""
    with lenient_reading(), _gc_paused():
        if series.grid is not None:
            return np.ascontiguousarray(_pixels(series)[:, :, start:stop])
        return _pixels(series, start, stop)


def load_dicom_series(
    folder: str | os.PathLike, *, series: str | int | None = None, resample: bool = False
) -> MetaTensor:
    """Read one series under ``folder`` (a folder, DICOMDIR or DICOM file); returns a channel-first float32
    MetaTensor ``(1, X, Y, Z)``. ``series`` and ``resample`` as in :class:`DicomSeriesReader`.

    Raises :class:`InputError` (empty folder, no DICOM, damaged file, undecodable transfer syntax,
    several series and no choice) or :class:`GeometryError` (missing tags, missing slices, unequal
    spacing without ``resample``, tilt, mixed orientations).
    """
    reader = DicomSeriesReader(series, resample=resample)
    volume, meta = reader.get_data(reader.read(folder))
    return MetaTensor(volume[None], meta=meta)


def source_headers(meta: dict) -> list[pydicom.Dataset]:
    """The source slice headers (Datasets, slice order) from a volume's meta; [] when it was not DICOM."""
    return [pydicom.Dataset.from_json(h) for h in meta.get(HEADERS_KEY, [])]
