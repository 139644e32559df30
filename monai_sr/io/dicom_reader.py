"""Read one DICOM MR series from a folder into a RAS volume with true geometry.

The reader is a MONAI :class:`~monai.data.ImageReader`, so ``LoadImage(reader=DicomSeriesReader())``
works, and :func:`load_dicom_series` is the direct door. It differs from MONAI's ``PydicomReader`` on
purpose: slices are ordered by their position along the normal (never by InstanceNumber or file name),
the positions are checked (missing slices, unequal steps, gantry tilt, mixed orientations raise
:class:`~monai_sr.errors.GeometryError`), SpacingBetweenSlices / SliceThickness are compared with the
positions instead of trusted, and missing geometry is an error naming the file and tag, never a silent
identity affine.

Array layout: ``(i = column, j = row, k = slice)``; the affine (meta ``"affine"``) is RAS, see
:mod:`monai_sr.geometry`. Meta also carries the source headers (``"dicom_headers"``, DICOM JSON
dicts without pixel data, in slice order) for the derived-series writer, and ``"monai_sr_notes"`` (what was tolerated).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from monai.data import ImageReader, MetaTensor
from monai.utils import MetaKeys, SpaceKeys
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError

__all__ = ["DicomSeries", "DicomSeriesReader", "scan_folder", "load_dicom_series", "source_headers"]

logger = logging.getLogger(__name__)

#: Meta keys this reader adds beside MONAI's own.
HEADERS_KEY = "dicom_headers"
FILES_KEY = "dicom_files"
NOTES_KEY = "monai_sr_notes"

_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


@dataclass
class DicomSeries:
    """One series found in a folder: its datasets (pixel data deferred) in slice order, and notes."""

    folder: Path
    datasets: list[pydicom.Dataset]
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def _is_dicom_file(path: Path) -> bool:
    """True when the file has the DICOM preamble marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_folder(folder: str | os.PathLike) -> DicomSeries:
    """Find the one image series in ``folder`` (not recursive) and return it in slice order.

    Files that are not DICOM are skipped with a note; a DICOM file that cannot be parsed is an error
    naming it (a damaged slice must not silently vanish). Several series in the folder are refused
    with their list.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such file or folder", path=folder)
    if not folder.is_dir():
        raise InputError("expected a folder holding one DICOM series", path=folder)
    entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not entries:
        raise InputError("folder is empty: no DICOM files to read", path=folder)

    notes: list[str] = []
    by_series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    skipped = 0
    for path in entries:
        if path.stat().st_size == 0:
            notes.append(f"skipped empty file {path.name}")
            skipped += 1
            continue
        try:
            # defer_size: the pixel data stays on disk until the series is chosen and checked.
            ds = pydicom.dcmread(path, defer_size="4 KB")
        except InvalidDicomError:
            skipped += 1
            notes.append(f"skipped non-DICOM file {path.name}")
            continue
        except Exception as exc:  # pydicom raises many types on damaged files
            if _is_dicom_file(path):
                raise InputError(f"damaged DICOM file ({type(exc).__name__}: {exc})", path=path) from exc
            skipped += 1
            notes.append(f"skipped non-DICOM file {path.name}")
            continue
        if "PixelData" not in ds:
            notes.append(f"skipped {path.name}: no pixel data ({ds.get('SOPClassUID', 'unknown SOP class')})")
            continue
        uid = str(ds.get("SeriesInstanceUID", "")) or "<no SeriesInstanceUID>"
        by_series.setdefault(uid, []).append((path, ds))

    if not by_series:
        raise InputError(f"no DICOM image files found ({len(entries)} file(s) checked, {skipped} not DICOM)", path=folder)
    if len(by_series) > 1:
        listing = "; ".join(
            f"{uid} (series {items[0][1].get('SeriesNumber', '?')}, "
            f"'{items[0][1].get('SeriesDescription', '')}', {len(items)} files)"
            for uid, items in by_series.items()
        )
        raise InputError(f"folder holds {len(by_series)} series, expected one: {listing}", path=folder)

    (items,) = by_series.values()
    for note in notes:
        logger.info("%s: %s", folder, note)
    return _order_slices(folder, items, notes)


def _require(ds: pydicom.Dataset, tag: str, path: Path):
    value = ds.get(tag)
    if value is None or value == "":
        raise GeometryError(f"missing {tag}: cannot place the slice in patient space", path=path)
    return value


def _order_slices(folder: Path, items: list[tuple[Path, pydicom.Dataset]], notes: list[str]) -> DicomSeries:
    """Sort by position along the normal and check orientation, matrix and spacing consistency."""
    path0, ds0 = items[0]
    for tag in _GEOMETRY_TAGS:
        _require(ds0, tag, path0)
    iop0 = np.asarray([float(v) for v in ds0.ImageOrientationPatient])
    normal = geometry.slice_normal(iop0)
    keyed = []
    for path, ds in items:
        for tag in _GEOMETRY_TAGS:
            _require(ds, tag, path)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(iop - iop0).max() > 1e-4:
            raise GeometryError(
                f"mixed orientations in one series: {iop.round(5).tolist()} differs from {iop0.round(5).tolist()} "
                f"of {path0.name}",
                path=path,
            )
        if (ds.Rows, ds.Columns) != (ds0.Rows, ds0.Columns):
            raise GeometryError(f"matrix {ds.Rows}x{ds.Columns} differs from {ds0.Rows}x{ds0.Columns} of {path0.name}", path=path)
        if np.abs(np.asarray(ds.PixelSpacing, float) - np.asarray(ds0.PixelSpacing, float)).max() > 1e-4:
            raise GeometryError(f"PixelSpacing {list(ds.PixelSpacing)} differs from {list(ds0.PixelSpacing)}", path=path)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        keyed.append((float(ipp @ normal), path, ds))
    keyed.sort(key=lambda t: t[0])
    positions = [k[0] for k in keyed]
    files = [k[1] for k in keyed]
    datasets = [k[2] for k in keyed]
    if len(datasets) > 1:
        step = geometry.check_slice_positions(positions, path=str(folder))
        ipps = np.asarray([[float(v) for v in d.ImagePositionPatient] for d in datasets])
        along = ipps[-1] - ipps[0]
        cos = abs(float(along @ normal)) / max(float(np.linalg.norm(along)), 1e-12)
        if cos < np.cos(np.deg2rad(0.5)):
            tilt = float(np.rad2deg(np.arccos(min(cos, 1.0))))
            raise GeometryError(f"slices are stacked {tilt:.2f} degrees off their normal (gantry tilt or shear)", path=folder)
        _check_spacing_tags(datasets[0], step, files[0], notes)
    return DicomSeries(folder=folder, datasets=datasets, files=files, notes=notes)


def _check_spacing_tags(ds: pydicom.Dataset, step: float, path: Path, notes: list[str]) -> None:
    """Compare SpacingBetweenSlices with the measured step; the positions win, a mismatch is noted."""
    sbs = ds.get("SpacingBetweenSlices")
    if sbs not in (None, "") and abs(float(sbs) - step) > max(0.1, 0.05 * step):
        notes.append(
            f"SpacingBetweenSlices {float(sbs):g} mm contradicts the slice positions (step {step:.4g} mm); "
            f"the positions are used"
        )
    thk = ds.get("SliceThickness")
    if thk not in (None, "") and float(thk) > step * 1.05 + 0.1:
        notes.append(f"SliceThickness {float(thk):g} mm exceeds the slice step {step:.4g} mm (overlapping slices)")


def _pixels(series: DicomSeries) -> np.ndarray:
    """Stack the slices as float32 ``(column, row, slice)`` with the Modality LUT (rescale) applied."""
    ds0 = series.datasets[0]
    out = np.empty((int(ds0.Columns), int(ds0.Rows), len(series.datasets)), dtype=np.float32)
    for k, (path, ds) in enumerate(zip(series.files, series.datasets)):
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(f"expected a greyscale image, SamplesPerPixel is {ds.SamplesPerPixel}", path=path)
        try:
            arr = ds.pixel_array
        except Exception as exc:
            raise InputError(f"damaged DICOM file: pixel data cannot be decoded ({type(exc).__name__}: {exc})", path=path) from exc
        if arr.ndim != 2:
            raise InputError(f"expected one frame per file, pixel data has shape {arr.shape}", path=path)
        # pydicom's Modality LUT: RescaleSlope / RescaleIntercept (or a LUT), per slice.
        out[:, :, k] = np.asarray(apply_rescale(arr, ds), dtype=np.float32).T
    return out


def _affine(series: DicomSeries) -> np.ndarray:
    ds0 = series.datasets[0]
    if len(series.datasets) > 1:
        first = np.asarray([float(v) for v in ds0.ImagePositionPatient])
        last = np.asarray([float(v) for v in series.datasets[-1].ImagePositionPatient])
        step: np.ndarray | float = (last - first) / (len(series.datasets) - 1)
    else:
        thk = ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0
        step = float(thk)
        series.notes.append(f"single slice: slice spacing taken from the header ({step:g} mm)")
    return geometry.affine_from_dicom(ds0.ImageOrientationPatient, ds0.ImagePositionPatient, ds0.PixelSpacing, step)


def _header_json(ds: pydicom.Dataset) -> dict:
    """The header without pixel data as a DICOM JSON model dict (PS3.18 F), to travel in meta.

    JSON rather than a Dataset: MONAI's transforms copy, collate and byte-swap meta, which they can do
    with plain dicts and lists but not with pydicom objects. ``pydicom.Dataset.from_json`` restores it.
    """
    hdr = pydicom.Dataset()
    for elem in ds:
        if elem.tag.group not in (0x0000, 0x7FE0):  # command set and pixel data do not travel
            hdr.add(elem)
    return hdr.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=lambda _elem: "")


class DicomSeriesReader(ImageReader):
    """MONAI ImageReader for a folder holding one DICOM series (see the module docstring).

    Examples::

        from monai.transforms import LoadImage
        img = LoadImage(reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)("series/")
        img.affine      # RAS, index (column, row, slice)
    """

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and Path(names[0]).is_dir()

    def read(self, data: Sequence[os.PathLike] | os.PathLike, **kwargs) -> DicomSeries:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        if len(names) != 1:
            raise InputError(f"expected one series folder, got {len(names)} paths")
        return scan_folder(names[0])

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        volume = _pixels(img)
        affine = _affine(img)
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(volume.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "filename_or_obj": str(img.folder),
            HEADERS_KEY: [_header_json(ds) for ds in img.datasets],
            FILES_KEY: [str(p) for p in img.files],
            NOTES_KEY: list(img.notes),
        }
        return volume, meta


def load_dicom_series(folder: str | os.PathLike) -> MetaTensor:
    """Read the one series in ``folder``; returns a channel-first float32 MetaTensor ``(1, X, Y, Z)``.

    Raises :class:`InputError` (empty folder, no DICOM, damaged file, several series) or
    :class:`GeometryError` (missing tags, missing slices, unequal spacing, tilt, mixed orientations).
    """
    reader = DicomSeriesReader()
    volume, meta = reader.get_data(reader.read(folder))
    return MetaTensor(volume[None], meta=meta)


def source_headers(meta: dict) -> list[pydicom.Dataset]:
    """The source slice headers (Datasets, slice order) from a volume's meta; [] when it was not DICOM."""
    return [pydicom.Dataset.from_json(h) for h in meta.get(HEADERS_KEY, [])]
