"""Write a derived MR series in the source's study (DESIGN.md, "The derived DICOM series").

Two formats (:class:`DicomFormat`): Classic MR Image Storage, one file per slice (the default,
:mod:`monai_sr.io.dicom.classic`), or Enhanced MR Image Storage, one multi-frame object
(:mod:`monai_sr.io.dicom.enhanced`). Both are Explicit VR Little Endian and share everything below
(the plan of :mod:`monai_sr.io.dicom.derived`):

* same patient, study and frame of reference as the source (copied from the source headers that the
  reader keeps in meta, never re-read from disk);
* a new Series Instance UID and new SOP Instance UIDs; ImageType ``DERIVED\\SECONDARY\\<value 3 of the
  source>``; a Derivation Description and a Source Image Sequence naming the slices each one came from
  (with Referenced Frame Number when the source was a multi-frame object);
* geometry recomputed from the output affine (:func:`monai_sr.geometry.dicom_slice_geometry`), except each
  slice's position: with as many slices as the source, a source slice's own measured position moved
  in-plane by the field-of-view rule, so an unevenly stepped series stays as measured; else the affine's
  regular grid (:func:`monai_sr.io.dicom.derived.output_positions`);
* signed 16-bit pixels with Rescale Slope / Intercept, so the float result keeps its units;
* window recomputed from the output; command-set (group 0000) and private elements never copied;
* the software named in the equipment module; the scanner kept in the Contributing Equipment Sequence.

:class:`DerivedSeriesWriter` writes slice by slice with a slice or two in memory (the inference can hand
over each slice as it is made); :func:`write_derived_series` is its whole-volume convenience. Classic
files are written without a pydicom Dataset per slice: the shared header is encoded once and only the
elements that change are encoded per slice (see :class:`~monai_sr.io.dicom.classic.ClassicSlices`).
"""

from __future__ import annotations

import difflib
import enum
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from monai_sr.errors import InputError, OutputError
from monai_sr.io.atomic import atomic_output, check_output_free, pause_point
from monai_sr.io.dicom.classic import ClassicSlices
from monai_sr.io.dicom.derived import estimate_window, peak_of, plan_derived_series, slope_for_peak

__all__ = ["write_derived_series", "DerivedSeriesWriter", "DicomFormat", "as_dicom_format"]


class DicomFormat(str, enum.Enum):
    """How a derived series is stored: one Classic MR object per slice, or one Enhanced MR multi-frame object."""

    CLASSIC = "classic"
    ENHANCED = "enhanced"


def as_dicom_format(value: str | DicomFormat) -> DicomFormat:
    """The :class:`DicomFormat` named ``value``; :class:`OutputError` naming the choices otherwise."""
    if isinstance(value, DicomFormat):
        return value
    names = [f.value for f in DicomFormat]
    if str(value).lower() in names:
        return DicomFormat(str(value).lower())
    close = difflib.get_close_matches(str(value).lower(), names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise OutputError(f"unknown DICOM format {value!r}; {hint}available: {', '.join(names)}")


def write_derived_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    *,
    source_headers: Sequence[Dataset | dict],
    derivation: str,
    series_description: str | None = None,
    series_number: int | None = None,
    slice_thickness: float | None = None,
    source_frames: Sequence[int | None] | None = None,
    dicom_format: str | DicomFormat = DicomFormat.CLASSIC,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``volume`` as a derived MR series into the new folder ``folder``.

    The whole-volume convenience over :class:`DerivedSeriesWriter`: knowing every voxel, it gives all
    slices one Rescale Slope (from the largest magnitude, :func:`choose_rescale`) and the window from the
    volume's 0.5 / 99.5 percentiles, then streams the slices.

    Args:
        volume: float array ``(column, row, slice)`` in the source's intensity units.
        affine: 4x4 RAS affine of ``volume`` (see :mod:`monai_sr.geometry`).
        folder: output folder; must not exist unless ``overwrite``. Written atomically.
        source_headers: headers of the source slices in slice order: Datasets or DICOM JSON dicts
            (meta ``"dicom_headers"`` of the reader).
        derivation: Derivation Description, e.g. ``"2x in-plane super-resolution (SR-UNet, monai_sr 0.1)"``.
        series_description: defaults to the source's with a suffix saying what was done.
        series_number: defaults to the source's plus 1000.
        slice_thickness: defaults to the source's SliceThickness (in-plane SR keeps it).
        source_frames: for a multi-frame (Enhanced MR) source, the 1-based frame number of each source
            header (meta ``"dicom_frame_numbers"`` of the reader); written as Referenced Frame Number.
        dicom_format: ``"classic"`` (one MR Image Storage file per slice) or ``"enhanced"`` (one
            Enhanced MR Image Storage multi-frame file).
        progress: called with ``(slices_done, slices_total)``.

    Returns:
        The written file paths, in slice order (one path for ``"enhanced"``).
    """
    fmt = as_dicom_format(dicom_format)  # refuse a bad option before any work
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise InputError(f"expected a 3D volume (column, row, slice), got shape {vol.shape}")
    peak = peak_of(vol)
    with DerivedSeriesWriter(
        folder, affine=affine, shape=vol.shape, source_headers=source_headers, derivation=derivation,
        window=estimate_window(vol) if vol.size else None, peak=peak, series_description=series_description,
        series_number=series_number, slice_thickness=slice_thickness, source_frames=source_frames,
        dicom_format=fmt, overwrite=overwrite, progress=progress,
    ) as writer:
        for k in range(vol.shape[2]):
            writer.write_slice(k, vol[:, :, k])
    return writer.files


class DerivedSeriesWriter:
    """Stream a derived MR series slice by slice, holding no more than a slice or two in memory.

    Use it as a context manager::

        with DerivedSeriesWriter(folder, affine=affine, shape=(cols, rows, n), source_headers=headers,
                                 derivation="2x super-resolution (...)", window=(centre, width)) as w:
            for k, plane in slices:          # any order, each k once
                w.write_slice(k, plane)      # float (column, row) array in the source's units
        w.files                              # the written paths, in slice order

    Everything is written into a temporary folder beside ``folder`` and renamed onto it when the block
    ends with every slice written; on an exception, or a slice missing at the end
    (:class:`~monai_sr.errors.OutputError`), nothing is left behind.

    Rescale: with ``peak`` (the largest magnitude any slice will have) every slice gets the one slope of
    :func:`choose_rescale`, and a slice beyond it is refused rather than clipped. Without ``peak`` each
    classic slice gets the slope of its own largest magnitude (Rescale Slope is per instance in the MR
    Image IOD); values are never clipped or wrapped either way. The Enhanced format has one shared
    rescale for all frames (readers apply one), so without ``peak`` its frames wait as float64 in a
    scratch file inside the temporary folder (as int16 with ``peak``) until the slope is known.

    Memory: two float64 planes and one int16 plane, reused, plus a 512 KiB window sample when the window
    is estimated; nothing grows with the number of slices (tests/io/dicom/test_writer_streaming.py).

    Window: ``window=(centre, width)`` in output units, from the caller (the pipeline takes the input's
    0.5 / 99.5 percentiles, which intensity normalisation and its inverse carry to the output's units).
    With ``None`` it is estimated from a bounded sample of every slice written (at most 2**17 values,
    the same share from each slice) and put in when the last slice is in: the classic files are written
    with a fixed-width placeholder that is overwritten in place.

    The other arguments are those of :func:`write_derived_series`; ``shape`` is the result's
    ``(column, row, slice)``.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        affine: np.ndarray,
        shape: Sequence[int],
        source_headers: Sequence[Dataset | dict],
        derivation: str,
        window: tuple[float, float] | None = None,
        peak: float | None = None,
        slice_thickness: float | None = None,
        series_description: str | None = None,
        series_number: int | None = None,
        source_frames: Sequence[int | None] | None = None,
        overwrite: bool = False,
        dicom_format: str | DicomFormat = DicomFormat.CLASSIC,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.format = as_dicom_format(dicom_format)
        if peak is not None and not np.isfinite(peak):
            raise InputError("result has non-finite values; nothing written")
        self.plan = plan_derived_series(
            shape, affine, source_headers=source_headers, derivation=derivation, window=window,
            slope=None if peak is None else slope_for_peak(peak), series_description=series_description,
            series_number=series_number, slice_thickness=slice_thickness, source_frames=source_frames,
        )
        self.folder = Path(folder)
        check_output_free(self.folder, overwrite=overwrite)
        self._overwrite = overwrite
        self._progress = progress
        n = self.plan.shape[2]
        self._done = np.zeros(n, dtype=bool)
        self._sample = None if window is not None else _WindowSample(n)
        self._atomic = None
        self._sink = None
        self._names: list[str] = []

    def __enter__(self) -> DerivedSeriesWriter:
        self._atomic = atomic_output(self.folder, is_dir=True, overwrite=self._overwrite)
        tmp = self._atomic.__enter__()
        try:
            if self.format is DicomFormat.ENHANCED:
                from monai_sr.io.dicom.enhanced import EnhancedMRFrames  # pydicom's code dictionaries: ~40 ms

                self._sink = EnhancedMRFrames(self.plan, tmp)
            else:
                self._sink = ClassicSlices(self.plan, tmp, placeholder_window=self._sample is not None)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    @property
    def files(self) -> list[Path]:
        """The written files in slice order (one for Enhanced); empty until the block has ended well."""
        return [self.folder / name for name in self._names]

    def write_slice(self, k: int, plane: np.ndarray) -> None:
        """Store output slice ``k`` (float ``(column, row)`` array in the source's units)."""
        if self._sink is None:
            raise OutputError("write_slice outside the writer's with-block", path=self.folder)
        n = self.plan.shape[2]
        if not 0 <= int(k) < n:
            raise OutputError(f"slice index {k} outside 0..{n - 1}", path=self.folder)
        if self._done[k]:
            raise OutputError(f"slice {k} written twice", path=self.folder)
        plane = np.asarray(plane)
        if plane.shape != tuple(self.plan.shape[:2]):
            raise InputError(f"slice {k} has shape {plane.shape}, expected (column, row) {tuple(self.plan.shape[:2])}")
        rows = self._sink.add(int(k), plane)  # (row, column) float64, valid until the next call
        if self._sample is not None:
            self._sample.add(rows)
        first = not self._done.any()
        self._done[k] = True
        if first:
            pause_point("writing")  # the tests' kill -9 moment (no effect without $MONAI_SR_TEST_PAUSE)
        if self._progress:
            self._progress(int(self._done.sum()), n)

    def __exit__(self, exc_type, exc, tb) -> bool:
        atomic, self._atomic = self._atomic, None
        sink, self._sink = self._sink, None
        if exc_type is None:
            try:
                missing = np.flatnonzero(~self._done)
                if missing.size:
                    shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if missing.size > 10 else "")
                    raise OutputError(f"{missing.size} of {self._done.size} slices never written ({shown}); "
                                      "nothing kept", path=self.folder)
                window = self._sample.window() if self._sample is not None else None
                names = sink.finish(window)
            except BaseException as err:
                if sink is not None:
                    sink.close()
                atomic.__exit__(type(err), err, err.__traceback__)
                raise
            atomic.__exit__(None, None, None)
            self._names = names
            return False
        if sink is not None:
            sink.close()
        atomic.__exit__(exc_type, exc, tb)
        return False


class _WindowSample:
    """A bounded sample of the written values (the same share of each slice) for the window."""

    CAPACITY = 2**17

    def __init__(self, n_slices: int) -> None:
        self.per_slice = max(1, self.CAPACITY // max(n_slices, 1))
        self.values = np.empty(self.CAPACITY, dtype=np.float32)
        self.count = 0

    def add(self, rows: np.ndarray) -> None:
        flat = rows.reshape(-1)
        picked = flat[:: max(1, -(-flat.size // self.per_slice))][: self.CAPACITY - self.count]
        self.values[self.count : self.count + picked.size] = picked
        self.count += picked.size

    def window(self) -> tuple[float, float]:
        return estimate_window(self.values[: self.count].astype(np.float64))
