"""Write a derived MR series in the source's study (DESIGN.md, "The derived DICOM series").

Two formats (:class:`DicomFormat`): Classic MR Image Storage, one file per slice (the default), or
Enhanced MR Image Storage, one multi-frame object (:mod:`monai_sr.io.enhanced_mr`). Both are Explicit VR
Little Endian and share everything below:

* same patient, study and frame of reference as the source (copied from the source headers that the
  reader keeps in meta, never re-read from disk);
* a new Series Instance UID and new SOP Instance UIDs; ImageType ``DERIVED\\SECONDARY\\<value 3 of the
  source>``; a Derivation Description and a Source Image Sequence naming the slices each one came from
  (with Referenced Frame Number when the source was a multi-frame object);
* geometry recomputed from the output affine (:func:`monai_sr.geometry.dicom_slice_geometry`);
* signed 16-bit pixels with Rescale Slope / Intercept, so the float result keeps its units;
* window recomputed from the output; command-set (group 0000) and private elements never copied;
* the software named in the equipment module; the scanner kept in the Contributing Equipment Sequence.

:class:`DerivedSeriesWriter` writes slice by slice with a slice or two in memory (the inference can hand
over each slice as it is made); :func:`write_derived_series` is its whole-volume convenience. Classic
files are written without a pydicom Dataset per slice: the shared header is encoded once and only the
elements that change are encoded per slice (see ``_ClassicSlices``).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import enum
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from monai_sr import __version__, geometry
from monai_sr.errors import InputError, OutputError
from monai_sr.io.atomic import atomic_output, check_output_free

__all__ = [
    "write_derived_series", "DerivedSeriesWriter", "choose_rescale", "estimate_window", "DicomFormat",
    "as_dicom_format", "SOFTWARE_NAME",
]

SOFTWARE_NAME = "monai_sr"

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


#: Attributes copied from the source as they are, in either format: SOP common, patient, study,
#: series identity that stays, frame of reference, acquisition number.
_COPIED = (
    # SOP Common
    "SpecificCharacterSet", "TimezoneOffsetFromUTC",
    # Patient
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "OtherPatientIDsSequence", "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    # General Study / Patient Study
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription", "PatientAge", "PatientSize", "PatientWeight",
    # General Series (the parts that stay) / Frame of Reference
    "Laterality", "BodyPartExamined", "PatientPosition", "ProtocolName",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    "AcquisitionNumber",
)

#: Classic only: the General Acquisition dates and the MR Image module that the derived slices still
#: describe (the Enhanced MR IOD keeps acquisition parameters in functional groups that are optional
#: for a DERIVED image, so they are not repeated there).
_COPIED_CLASSIC = (
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName", "AngioFlag",
    "RepetitionTime", "EchoTime", "InversionTime", "NumberOfAverages", "ImagingFrequency", "ImagedNucleus",
    "EchoNumbers", "MagneticFieldStrength", "NumberOfPhaseEncodingSteps", "EchoTrainLength", "PercentSampling",
    "PercentPhaseFieldOfView", "PixelBandwidth", "ReceiveCoilName", "TransmitCoilName", "AcquisitionMatrix",
    "InPlanePhaseEncodingDirection", "FlipAngle", "VariableFlipAngleFlag", "SAR", "dBdt", "TriggerTime",
    "HeartRate", "CardiacNumberOfImages", "TemporalPositionIdentifier", "NumberOfTemporalPositions",
)

# Purpose of Reference for the Source Image Sequence (CID 7202).
_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
# Purpose of Reference for the Contributing Equipment Sequence (CID 7005).
_ACQUISITION_EQUIPMENT = ("109101", "DCM", "Acquisition Equipment")

_INT16_RANGE = 32000.0  # stay a little inside int16 so rounding never wraps


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def ds_value(value: float) -> DSfloat:
    """A DS value that fits the 16-character limit (pydicom formats it)."""
    return DSfloat(float(value), auto_format=True)


def choose_rescale(volume: np.ndarray) -> tuple[float, float]:
    """Rescale ``(slope, intercept)`` for storing float ``volume`` as int16 with the most precision.

    Intercept is 0 and the slope maps the largest magnitude to about 32000, so negative values survive
    and nothing wraps. The slope is returned already rounded to its 16-character DS form: stored
    integers use exactly the slope written to the file.
    """
    return slope_for_peak(_peak(np.asarray(volume))), 0.0


def slope_for_peak(peak: float) -> float:
    """The DS-rounded Rescale Slope that maps magnitude ``peak`` to about 32000 (1 for an all-zero image)."""
    if peak == 0.0:
        return 1.0
    slope = _ds_rounded(peak / _INT16_RANGE)
    while peak / slope > 32767:  # rounding to 16 characters may have shrunk the slope
        slope = _ds_rounded(slope * 1.0001)
    return slope


def _ds_rounded(value: float) -> float:
    """``value`` as it reads back from its DS string (a DSfloat keeps the unrounded float)."""
    return float(str(ds_value(value)))


def estimate_window(volume: np.ndarray) -> tuple[float, float]:
    """Window (centre, width) from the 0.5 and 99.5 percentiles, in output (rescaled) units; width >= 1."""
    sample = volume.ravel(order="K")[:: max(1, volume.size // 1_000_000)]  # a view of any contiguous array
    lo, hi = np.percentile(sample, [0.5, 99.5])
    width = max(float(hi - lo), 1.0)
    return float((hi + lo) / 2.0), width


def _source_slices(k: int, n_out: int, n_in: int) -> list[int]:
    """Input slice indices output slice ``k`` was made from (the one or two nearest by the FOV rule)."""
    if n_in == n_out:
        return [k]
    s = n_out / n_in
    x = (k + 0.5) / s - 0.5
    lo, hi = int(np.floor(x)), int(np.ceil(x))
    return sorted({min(max(lo, 0), n_in - 1), min(max(hi, 0), n_in - 1)})


@dataclass
class DerivedPlan:
    """What both formats need, worked out once from the geometry and the source headers (no pixels)."""

    shape: tuple[int, int, int]  # (column, row, slice) of the result
    affine: np.ndarray  # 4x4 RAS
    source_headers: list[Dataset]
    source_frames: list[int | None] | None  # 1-based frame of each source header in a multi-frame source
    slope: float | None  # one Rescale Slope for every slice; None: each slice its own
    intercept: float
    window: tuple[float, float] | None  # (centre, width); None: estimated from the slices written
    spacing: np.ndarray
    thickness: float | None
    common: Dataset  # patient, study, series, frame of reference, equipment, SOP common

    def sources(self, k: int) -> list[int]:
        """The source slice indices output slice ``k`` came from."""
        return _source_slices(k, self.shape[2], len(self.source_headers))


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
    peak = _peak(vol)
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
    is estimated; nothing grows with the number of slices (tests/io/test_writer_streaming.py).

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
                from monai_sr.io.enhanced_mr import EnhancedMRFrames

                self._sink = EnhancedMRFrames(self.plan, tmp)
            else:
                self._sink = _ClassicSlices(self.plan, tmp, placeholder_window=self._sample is not None)
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
        self._done[k] = True
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


def plan_derived_series(
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    source_headers: Sequence[Dataset | dict],
    derivation: str,
    window: tuple[float, float] | None = None,
    slope: float | None = None,
    series_description: str | None = None,
    series_number: int | None = None,
    slice_thickness: float | None = None,
    source_frames: Sequence[int | None] | None = None,
) -> DerivedPlan:
    """Check the inputs and build the parts both formats share (see :class:`DerivedSeriesWriter`)."""
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"expected a 3D volume (column, row, slice), got shape {shape}")
    if not source_headers:
        raise InputError("a derived DICOM series needs the source DICOM headers; the input was not DICOM")
    affine = geometry.check_affine(affine)
    headers = [h if isinstance(h, Dataset) else Dataset.from_json(h) for h in source_headers]
    frames = None
    if source_frames is not None and any(f is not None for f in source_frames):
        frames = [None if f is None else int(f) for f in source_frames]
        if len(frames) != len(headers):
            raise InputError(f"{len(frames)} source frame numbers for {len(headers)} source headers")
    if window is not None:
        centre, width = (float(v) for v in window)
        if not (np.isfinite(centre) and np.isfinite(width)):
            raise InputError(f"window {window} is not finite")
        window = (centre, max(width, 1.0))
    src0 = headers[0]
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    image_type = ["DERIVED", "SECONDARY", *([str(v) for v in src0.get("ImageType", [])][2:] or ["OTHER"])]
    description = series_description or f"{src0.get('SeriesDescription', '')} {derivation.split('(')[0].strip()}".strip()

    base = Dataset()
    for keyword in _COPIED:
        if keyword in src0:
            base[keyword] = src0[keyword]
    base.Modality = "MR"
    base.SeriesInstanceUID = generate_uid()
    base.SeriesNumber = int(series_number if series_number is not None else int(src0.get("SeriesNumber", 0) or 0) + 1000)
    base.SeriesDescription = description[:64]
    base.SeriesDate, base.SeriesTime = date, time
    base.ContentDate, base.ContentTime = date, time
    base.InstanceCreationDate, base.InstanceCreationTime = date, time
    base.ImageType = image_type
    base.DerivationDescription = derivation[:1024]
    base.Manufacturer = SOFTWARE_NAME
    base.ManufacturerModelName = SOFTWARE_NAME
    base.SoftwareVersions = __version__
    base.ContributingEquipmentSequence = DicomSequence([_contributing_scanner(src0)])
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PositionReferenceIndicator"):
        base.setdefault(keyword, "")  # type 2: present, possibly empty
    thickness = slice_thickness if slice_thickness is not None else src0.get("SliceThickness")
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = shape[1], shape[0]
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 1
    base.BurnedInAnnotation = "NO"
    base.LossyImageCompression = src0.get("LossyImageCompression", "00")
    return DerivedPlan(
        shape=shape, affine=affine, source_headers=headers, source_frames=frames,
        slope=slope, intercept=0.0, window=window,
        spacing=geometry.spacing_from_affine(affine),
        thickness=None if thickness in (None, "") else float(thickness), common=base,
    )


def stored_plane(plane: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Float ``plane`` (column, row) as the stored int16 (row, column) array for this rescale."""
    stored = np.rint((plane.T - intercept) / slope)
    return np.clip(stored, -32768, 32767).astype("<i2")


class PlaneStore:
    """Float ``(column, row)`` planes to stored int16 ``(row, column)``, in two reused buffers.

    One strided pass turns the plane into a row-major float copy (its peak and the window sample are
    taken there), then divide, round and cast work on contiguous memory. The result equals
    :func:`stored_plane`; a value that int16 cannot hold raises instead of being clipped.
    """

    def __init__(self, columns: int, rows: int) -> None:
        self.rows = np.empty((rows, columns), dtype=np.float64)
        self.scaled = np.empty_like(self.rows)
        self.stored = np.empty((rows, columns), dtype="<i2")

    def load(self, plane: np.ndarray) -> float:
        """Copy ``plane`` in; return its largest magnitude (InputError when not finite)."""
        np.copyto(self.rows, plane.T)
        peak = max(float(self.rows.max()), -float(self.rows.min())) if self.rows.size else 0.0
        if not np.isfinite(peak):
            raise InputError("result has non-finite values; nothing written")
        return peak

    def store(self, slope: float, k: int) -> np.ndarray:
        """The loaded plane as int16 for ``slope`` (intercept 0); ``rows`` keeps the float copy."""
        scaled = np.divide(self.rows, slope, out=self.scaled)
        np.rint(scaled, out=scaled)
        if scaled.size and max(float(scaled.max()), -float(scaled.min())) > 32767:
            raise OutputError(f"slice {k} exceeds the peak given for the rescale; not clipped")
        np.copyto(self.stored, scaled, casting="unsafe")
        return self.stored


def source_item_content(plan: DerivedPlan, i: int) -> Dataset:
    """One Source Image Sequence item: source slice ``i`` (and its frame, for a multi-frame source)."""
    src = plan.source_headers[i]
    item = Dataset()
    item.ReferencedSOPClassUID = src.SOPClassUID
    item.ReferencedSOPInstanceUID = src.SOPInstanceUID
    frame = plan.source_frames[i] if plan.source_frames else None
    if frame is not None:
        item.ReferencedFrameNumber = frame
    item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*_SOURCE_PURPOSE)])
    return item


def source_references(plan: DerivedPlan, k: int) -> DicomSequence:
    """Source Image Sequence items for output slice ``k``."""
    return DicomSequence([source_item_content(plan, i) for i in plan.sources(k)])


def file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    """File meta for an Explicit VR Little Endian object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dataset.validate_file_meta(meta, enforce_standard=True)
    return meta


WINDOW_EXPLANATION = "monai_sr: 0.5-99.5 percentile"


def real_world_mapping(slope: float, intercept: float) -> Dataset:
    """The MR-native statement of the rescale (the classic MR IOD has no Modality LUT module)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = -32768
    item.RealWorldValueLastValueMapped = 32767
    for keyword in ("RealWorldValueFirstValueMapped", "RealWorldValueLastValueMapped"):
        item[keyword].VR = "SS"  # "US or SS": signed, as the stored pixels (Pixel Representation 1)
    item.RealWorldValueSlope = float(slope)
    item.RealWorldValueIntercept = float(intercept)
    item.LUTExplanation = "signal intensity in the source series' units"
    item.LUTLabel = "MR_SIGNAL"
    # UCUM "{arbitrary}"-style unitless code: MR magnitude has no physical unit.
    item.MeasurementUnitsCodeSequence = DicomSequence([code_item("1", "UCUM", "no units")])
    return item


def _path_of(ds: Dataset) -> str | None:
    return getattr(ds, "filename", None) if isinstance(getattr(ds, "filename", None), str) else None


def _contributing_scanner(src: Dataset) -> Dataset:
    item = Dataset()
    item.Manufacturer = src.get("Manufacturer", "")
    for keyword in ("InstitutionName", "StationName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"):
        if keyword in src:
            item[keyword] = src[keyword]
    item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*_ACQUISITION_EQUIPMENT)])
    return item


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


# --- Classic MR: one file per slice, the shared header encoded once -----------------------------------

_PREAMBLE = b"\0" * 128 + b"DICM"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _ITEM_SIZE = 0xFFFEE000, struct.Struct("<HHI")
# Elements that differ between slices, in tag order: the shared header is encoded as the runs between them.
_SOP_INSTANCE, _SOURCE_IMAGES, _INSTANCE_NUMBER, _IPP, _SLICE_LOCATION = (
    0x00080018, 0x00082112, 0x00200013, 0x00200032, 0x00201041)
_WINDOW_CENTRE, _WINDOW_WIDTH, _RESCALE_INTERCEPT, _RESCALE_SLOPE = 0x00281050, 0x00281051, 0x00281052, 0x00281053
_REAL_WORLD, _PIXEL_DATA = 0x00409096, 0x7FE00010
_RWV_SLOPE = struct.pack("<HH2sH", 0x0040, 0x9225, b"FD", 8)


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element (value padded to even length as its VR wants)."""
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _encoded(ds: Dataset, charset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds, charset)
    return fp.getvalue()


def _ds_text(value: float) -> bytes:
    return str(ds_value(value)).encode("ascii")


class _ClassicSlices:
    """Classic MR files: file meta and the shared header encoded once, per slice only what differs."""

    def __init__(self, plan: DerivedPlan, folder: Path, *, placeholder_window: bool) -> None:
        src0 = plan.source_headers[0]
        self.plan, self.folder = plan, folder
        base = Dataset()
        base.update(plan.common)
        for keyword in _COPIED_CLASSIC:
            if keyword in src0:
                base[keyword] = src0[keyword]
        base.SOPClassUID = MRImageStorage
        base.ImageType = [*plan.common.ImageType]
        for keyword in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"):
            base.setdefault(keyword, "")  # type 2 in the MR Image module
        if "ScanningSequence" not in base or "SequenceVariant" not in base:
            raise InputError("source lacks ScanningSequence/SequenceVariant (type 1 in an MR image)", path=_path_of(src0))
        _, iop, pixel_spacing = geometry.dicom_slice_geometry(plan.affine, 0)
        base.ImageOrientationPatient = [ds_value(v) for v in iop]
        base.PixelSpacing = [ds_value(v) for v in pixel_spacing]
        base.SliceThickness = ds_value(plan.thickness) if plan.thickness is not None else ""
        if plan.shape[2] > 1:
            base.SpacingBetweenSlices = ds_value(plan.spacing[2])
        if plan.window is not None:
            base.WindowCenter, base.WindowWidth = ds_value(plan.window[0]), ds_value(plan.window[1])
        base.WindowCenterWidthExplanation = WINDOW_EXPLANATION
        self.placeholder_window = placeholder_window

        per_slice = [_SOP_INSTANCE, _SOURCE_IMAGES, _INSTANCE_NUMBER, _IPP, _SLICE_LOCATION,
                     *((_WINDOW_CENTRE,) if placeholder_window else ()),
                     _RESCALE_INTERCEPT, _RESCALE_SLOPE, _REAL_WORLD, _PIXEL_DATA]
        charset = base._character_set
        bounds = [0, *per_slice, 0xFFFFFFFF]
        self.runs = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            run = Dataset()
            for elem in base:
                if lo <= elem.tag < hi:
                    run.add(elem)
            self.runs.append(_encoded(run, charset))
        if self.runs[-1]:
            raise OutputError("a copied element sorts after Pixel Data")

        meta = file_meta(MRImageStorage, "1.2")
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_file_meta_info(buf, meta, enforce_standard=True)  # adds version and implementation elements
        head = Dataset(), Dataset()
        for elem in meta:
            if elem.tag not in (0x00020000, 0x00020003):
                head[0 if elem.tag < 0x00020003 else 1].add(elem)
        self.meta_runs = (_encoded(head[0], "iso8859"), _encoded(head[1], "iso8859"))

        rwvm = Dataset()
        rwvm.RealWorldValueMappingSequence = DicomSequence([real_world_mapping(0.0, plan.intercept)])
        self.rwvm = _encoded(rwvm, charset)
        self.rwvm_slope_at = self.rwvm.index(_RWV_SLOPE) + len(_RWV_SLOPE)
        purpose = Dataset()
        purpose.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*_SOURCE_PURPOSE)])
        self.purpose = _encoded(purpose, charset)
        self.normal = geometry.slice_normal(iop)
        lps = geometry.ras_to_lps(plan.affine)
        self.origin, self.step = lps[:3, 3].copy(), lps[:3, 2].copy()
        self.planes = PlaneStore(plan.shape[0], plan.shape[1])
        self.pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, self.planes.stored.nbytes)
        self.window_at = np.zeros(plan.shape[2], dtype=np.int64) if placeholder_window else None

    @staticmethod
    def name(k: int) -> str:
        return f"MR{k + 1:05d}.dcm"

    def _sources(self, k: int) -> bytes:
        plan, items = self.plan, []
        for i in plan.sources(k):
            src = plan.source_headers[i]
            content = (_element(0x00081150, b"UI", str(src.SOPClassUID).encode("ascii"))
                       + _element(0x00081155, b"UI", str(src.SOPInstanceUID).encode("ascii")))
            frame = plan.source_frames[i] if plan.source_frames else None
            if frame is not None:
                content += _element(0x00081160, b"IS", str(int(frame)).encode("ascii"))
            content += self.purpose
            items.append(_ITEM_SIZE.pack(0xFFFE, 0xE000, len(content)) + content)
        value = b"".join(items)
        return struct.pack("<HH2sHI", 0x0008, 0x2112, b"SQ", 0, len(value)) + value

    def add(self, k: int, plane: np.ndarray) -> np.ndarray:
        plan = self.plan
        peak = self.planes.load(plane)
        slope = plan.slope if plan.slope is not None else slope_for_peak(peak)
        stored = self.planes.store(slope, k)
        sop_uid = generate_uid().encode("ascii")
        ipp = self.origin + k * self.step
        sop = _element(0x00020003, b"UI", sop_uid)
        meta_value = self.meta_runs[0] + sop + self.meta_runs[1]
        runs = iter(self.runs)
        parts = [_PREAMBLE, struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta_value)), meta_value,
                 next(runs), _element(_SOP_INSTANCE, b"UI", sop_uid),
                 next(runs), self._sources(k),
                 next(runs), _element(_INSTANCE_NUMBER, b"IS", str(k + 1).encode("ascii")),
                 next(runs), _element(_IPP, b"DS", b"\\".join(_ds_text(v) for v in ipp)),
                 next(runs), _element(_SLICE_LOCATION, b"DS", _ds_text(float(np.dot(ipp, self.normal)))),
                 next(runs)]
        if self.window_at is not None:
            self.window_at[k] = sum(len(p) for p in parts)
            parts += [_window_elements(None), next(runs)]
        rwvm = bytearray(self.rwvm)
        rwvm[self.rwvm_slope_at : self.rwvm_slope_at + 8] = struct.pack("<d", float(slope))
        parts += [_element(_RESCALE_INTERCEPT, b"DS", _ds_text(plan.intercept)), next(runs),
                  _element(_RESCALE_SLOPE, b"DS", _ds_text(slope)), next(runs),
                  bytes(rwvm), next(runs), self.pixel_header]
        with open(self.folder / self.name(k), "wb") as f:
            f.write(b"".join(parts))
            f.write(stored.data)
        return self.planes.rows

    def finish(self, window: tuple[float, float] | None) -> list[str]:
        if self.window_at is not None:
            patch = _window_elements(window)
            for k, at in enumerate(self.window_at):
                with open(self.folder / self.name(k), "r+b") as f:
                    f.seek(int(at))
                    f.write(patch)
        return [self.name(k) for k in range(self.plan.shape[2])]

    def close(self) -> None:
        pass


def _window_elements(window: tuple[float, float] | None) -> bytes:
    """Window Center and Width with 16-character values (space padded), so they can be filled in later."""
    centre, width = window if window is not None else (0.0, 1.0)
    return (_element(_WINDOW_CENTRE, b"DS", _ds_text(centre).ljust(16))
            + _element(_WINDOW_WIDTH, b"DS", _ds_text(max(width, 1.0)).ljust(16)))


def _peak(volume: np.ndarray) -> float:
    """Largest magnitude of ``volume`` (two reductions, no temporary); InputError when not finite."""
    peak = max(float(volume.max()), -float(volume.min())) if volume.size else 0.0
    if not np.isfinite(peak):
        raise InputError("result has non-finite values; nothing written")
    return peak
