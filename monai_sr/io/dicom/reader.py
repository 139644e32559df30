"""Read one DICOM MR series into a RAS volume with true geometry.

The reader is a MONAI :class:`~monai.data.ImageReader`, so ``LoadImage(reader=DicomSeriesReader())``
works, and :func:`load_dicom_series` is the direct door. The input is a folder (searched recursively),
a DICOMDIR or one DICOM file (e.g. an Enhanced MR multi-frame object); when it holds several series
(or stacks: echoes, temporal positions...) one is chosen with ``series=`` (see
:mod:`monai_sr.io.dicom.discover`), else the reader refuses with their list.

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
identical elements: treat them as read-only. The meta keys: :mod:`monai_sr.meta`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader, MetaTensor
from monai.utils import MetaKeys, SpaceKeys

from monai_sr.errors import InputError
from monai_sr.io.dicom.discover import SeriesCandidate, find_series, select_series
from monai_sr.io.dicom.frames import is_dicom_input, lenient_reading
from monai_sr.io.dicom.headers import series_headers
from monai_sr.io.dicom.pixels import stack_pixels
from monai_sr.io.dicom.stack import DicomSeries, order_slices, series_affine, series_shape
from monai_sr.meta import FILES_KEY, FRAMES_KEY, HEADERS_KEY, NOTES_KEY

__all__ = [
    "DicomSeriesReader",
    "scan_folder",
    "order_series",
    "load_dicom_series",
    "read_slices",
    "series_meta",
]

logger = logging.getLogger(__name__)


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
    return order_series(folder, candidates, notes, series=series, resample=resample)


def order_series(
    folder: str | os.PathLike,
    candidates: Sequence[SeriesCandidate],
    notes: Sequence[str],
    *,
    series: str | int | None = None,
    resample: bool = False,
) -> DicomSeries:
    """The candidate ``series`` names among ``candidates`` (what :func:`find_series` found under ``folder``,
    with its ``notes``) in slice order, checked; the scan itself is not repeated."""
    folder = Path(folder)
    chosen = select_series(candidates, series, path=folder)
    notes = list(notes)
    if len(candidates) > 1:
        notes.append(f"read series {chosen.selector} ({chosen.description or 'no description'}) of {len(candidates)}")
    with lenient_reading():
        return order_slices(folder, chosen.frames, notes, resample=resample)


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
            along the normal) instead of refusing it; the notes name the output slices filled by
            interpolation and the source files each lies between (the others lie within 0.01 mm of a
            source slice).

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
            volume = stack_pixels(img)
        return volume, series_meta(img)


def series_meta(series: DicomSeries) -> dict:
    """The MetaTensor meta of the series' volume (affine, shape, source headers, files, notes): what
    :meth:`DicomSeriesReader.get_data` returns beside the voxels, made without reading any pixels."""
    with lenient_reading(), _gc_paused():
        affine = series_affine(series)
        headers = series_headers(series)
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
            return np.ascontiguousarray(stack_pixels(series)[:, :, start:stop])
        return stack_pixels(series, start, stop)


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
