"""The plan of a derived MR series, shared by both encodings (:mod:`.classic`, :mod:`.enhanced`).

Worked out once from the output geometry and the source headers, no pixels (:func:`plan_derived_series`):
the position of each output slice (:func:`output_positions`: a source slice's own measured position when
the slices correspond one to one, else the regular grid of the output affine);
same patient, study and frame of reference as the source (copied from the headers the reader keeps in
meta); a new Series Instance UID; ImageType ``DERIVED\\SECONDARY\\<value 3 of the source>``; a Derivation
Description; the software named in the equipment module, the scanner kept in the Contributing Equipment
Sequence. Also here: the rescale policy (signed 16-bit pixels with a Rescale Slope that keeps the float
result's units, :func:`choose_rescale`, :class:`PlaneStore`), the window policy (0.5 / 99.5 percentiles,
:func:`estimate_window`) and the Source Image Sequence items naming the slices each output slice came from
(by the field-of-view rule, :func:`monai_sr.geometry.index_of_output_in_input`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from monai_sr import __version__, geometry
from monai_sr.errors import InputError, OutputError

__all__ = [
    "DerivedPlan", "plan_derived_series", "output_positions", "source_positions", "choose_rescale", "slope_for_peak", "estimate_window", "PlaneStore",
    "SOFTWARE_NAME", "WINDOW_EXPLANATION",
]

SOFTWARE_NAME = "monai_sr"

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

# Purpose of Reference for the Source Image Sequence (CID 7202).
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
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
    return slope_for_peak(peak_of(np.asarray(volume))), 0.0


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


def source_positions(headers: Sequence[Dataset | dict]) -> np.ndarray | None:
    """The ImagePositionPatient (LPS, mm) of each source header (a Dataset or a DICOM JSON dict, as in
    meta), ``(n, 3)``; None when one lacks it or holds anything but three finite numbers."""
    def ipp(h):
        return h["00200032"]["Value"] if isinstance(h, dict) else h.ImagePositionPatient

    try:
        out = np.asarray([[float(v) for v in ipp(h)] for h in headers], dtype=np.float64)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return out if out.shape == (len(headers), 3) and np.all(np.isfinite(out)) else None


def output_positions(affine: np.ndarray, n_slices: int, headers: Sequence[Dataset]) -> np.ndarray:
    """ImagePositionPatient (LPS, mm) of each output slice, ``(n_slices, 3)``.

    With as many slices as the source (in-plane SR, denoising), output slice ``k`` sits where source slice
    ``k`` was measured, moved in-plane as the field-of-view rule moves slice 0 (``affine``'s position of
    slice 0 minus the source's): a series whose slice steps differ a little (positions rounded, or a
    scanner's uneven table steps, which the reader accepts up to 0.15 mm) keeps them, instead of taking
    the regular grid of ``affine``. Otherwise (through-plane SR), or when the source positions are
    missing or do not lie within half a slice step of ``affine``'s slices, the regular grid of ``affine``.
    """
    lps = geometry.ras_to_lps(affine)
    grid = lps[:3, 3] + np.outer(np.arange(n_slices, dtype=np.float64), lps[:3, 2])
    src = source_positions(headers) if len(headers) == n_slices else None
    if src is None:
        return grid
    step = float(np.linalg.norm(lps[:3, 2]))
    shift = grid[0] - src[0]
    if abs(float(shift @ lps[:3, 2])) / step > 1e-3 * step:  # slice 0 moved along the normal: not in-plane
        return grid
    kept = src + shift
    if np.abs(geometry.offsets_from_grid(affine, kept)).max() > 0.5 * step:  # not this affine's slices
        return grid
    return kept


def source_slices(k: int, n_out: int, n_in: int) -> list[int]:
    """Input slice indices output slice ``k`` was made from (the one or two nearest by the FOV rule)."""
    if n_in == n_out:
        return [k]
    x = geometry.index_of_output_in_input(k, n_out / n_in)
    lo, hi = int(np.floor(x)), int(np.ceil(x))
    return sorted({min(max(lo, 0), n_in - 1), min(max(hi, 0), n_in - 1)})


@dataclass
class DerivedPlan:
    """What both formats need, worked out once from the geometry and the source headers (no pixels)."""

    shape: tuple[int, int, int]  # (column, row, slice) of the result
    affine: np.ndarray  # 4x4 RAS
    positions: np.ndarray  # (slices, 3) LPS ImagePositionPatient of each output slice (output_positions)
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
        return source_slices(k, self.shape[2], len(self.source_headers))


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
    """Check the inputs and build the parts both formats share (see
    :class:`~monai_sr.io.dicom.writer.DerivedSeriesWriter`)."""
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
        shape=shape, affine=affine, positions=output_positions(affine, shape[2], headers),
        source_headers=headers, source_frames=frames,
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
    item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*SOURCE_PURPOSE)])
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


def path_of(ds: Dataset) -> str | None:
    return getattr(ds, "filename", None) if isinstance(getattr(ds, "filename", None), str) else None


def _contributing_scanner(src: Dataset) -> Dataset:
    item = Dataset()
    item.Manufacturer = src.get("Manufacturer", "")
    for keyword in ("InstitutionName", "StationName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"):
        if keyword in src:
            item[keyword] = src[keyword]
    item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*_ACQUISITION_EQUIPMENT)])
    return item


def peak_of(volume: np.ndarray) -> float:
    """Largest magnitude of ``volume`` (two reductions, no temporary); InputError when not finite."""
    peak = max(float(volume.max()), -float(volume.min())) if volume.size else 0.0
    if not np.isfinite(peak):
        raise InputError("result has non-finite values; nothing written")
    return peak
