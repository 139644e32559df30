"""Write a derived MR series in the source's study (DESIGN.md, "The derived DICOM series").

Two formats (:class:`DicomFormat`): Classic MR Image Storage, one file per slice (the default), or
Enhanced MR Image Storage, one multi-frame object (:mod:`monai_sr.io.enhanced_mr`). Both are Explicit VR
Little Endian and share everything below:

* same patient, study and frame of reference as the source (copied from the source headers that the
  reader keeps in meta, never re-read from disk);
* a new Series Instance UID and new SOP Instance UIDs; ImageType ``DERIVED\\SECONDARY\\<value 3 of the
  source>``; a Derivation Description and a Source Image Sequence naming the slices each one came from;
* geometry recomputed from the output affine (:func:`monai_sr.geometry.dicom_slice_geometry`);
* signed 16-bit pixels with Rescale Slope / Intercept, so the float result keeps its units;
* window recomputed from the output; command-set (group 0000) and private elements never copied;
* the software named in the equipment module; the scanner kept in the Contributing Equipment Sequence.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from monai_sr import __version__, geometry
from monai_sr.errors import InputError, OutputError
from monai_sr.io.atomic import atomic_output

__all__ = ["write_derived_series", "choose_rescale", "DicomFormat", "as_dicom_format", "SOFTWARE_NAME"]

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
    peak = float(np.max(np.abs(volume))) if volume.size else 0.0
    if not np.isfinite(peak):
        raise InputError("result has non-finite values; nothing written")
    if peak == 0.0:
        return 1.0, 0.0
    slope = float(ds_value(peak / _INT16_RANGE))
    while peak / slope > 32767:  # rounding to 16 characters may have shrunk the slope
        slope = float(ds_value(slope * 1.0001))
    return slope, 0.0


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Window (centre, width) from the 0.5 and 99.5 percentiles, in output (rescaled) units; width >= 1."""
    sample = volume.ravel()[:: max(1, volume.size // 1_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    width = max(float(hi - lo), 1.0)
    return float((hi + lo) / 2.0), width


def _source_slices(n_out: int, n_in: int) -> list[list[int]]:
    """Input slice indices each output slice was made from (the one or two nearest by the FOV rule)."""
    if n_in == n_out:
        return [[k] for k in range(n_out)]
    s = n_out / n_in
    out = []
    for k in range(n_out):
        x = (k + 0.5) / s - 0.5
        lo, hi = int(np.floor(x)), int(np.ceil(x))
        out.append(sorted({min(max(lo, 0), n_in - 1), min(max(hi, 0), n_in - 1)}))
    return out


@dataclass
class DerivedPlan:
    """What both formats need, worked out once from the result and the source headers."""

    volume: np.ndarray  # (column, row, slice), float, the source's units
    affine: np.ndarray  # 4x4 RAS
    source_headers: list[Dataset]
    sources: list[list[int]]  # per output slice: the source slice indices it came from
    slope: float
    intercept: float
    centre: float
    width: float
    spacing: np.ndarray
    thickness: float | None
    common: Dataset  # patient, study, series, frame of reference, equipment, SOP common


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
    dicom_format: str | DicomFormat = DicomFormat.CLASSIC,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``volume`` as a derived MR series into the new folder ``folder``.

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
        dicom_format: ``"classic"`` (one MR Image Storage file per slice) or ``"enhanced"`` (one
            Enhanced MR Image Storage multi-frame file).
        progress: called with ``(slices_done, slices_total)``.

    Returns:
        The written file paths, in slice order (one path for ``"enhanced"``).
    """
    fmt = as_dicom_format(dicom_format)  # refuse a bad option before any work
    plan = plan_derived_series(
        volume, affine, source_headers=source_headers, derivation=derivation,
        series_description=series_description, series_number=series_number, slice_thickness=slice_thickness,
    )
    if fmt is DicomFormat.ENHANCED:
        from monai_sr.io.enhanced_mr import write_enhanced_mr

        return [write_enhanced_mr(plan, folder, overwrite=overwrite, progress=progress)]
    return _write_classic(plan, folder, overwrite=overwrite, progress=progress)


def plan_derived_series(
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    source_headers: Sequence[Dataset | dict],
    derivation: str,
    series_description: str | None = None,
    series_number: int | None = None,
    slice_thickness: float | None = None,
) -> DerivedPlan:
    """Check the inputs and build the parts both formats share (see :func:`write_derived_series`)."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise InputError(f"expected a 3D volume (column, row, slice), got shape {vol.shape}")
    if not source_headers:
        raise InputError("a derived DICOM series needs the source DICOM headers; the input was not DICOM")
    affine = geometry.check_affine(affine)
    headers = [h if isinstance(h, Dataset) else Dataset.from_json(h) for h in source_headers]
    src0 = headers[0]
    slope, intercept = choose_rescale(vol)
    centre, width = _window(vol)
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
    base.Rows, base.Columns = vol.shape[1], vol.shape[0]
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 1
    base.BurnedInAnnotation = "NO"
    base.LossyImageCompression = src0.get("LossyImageCompression", "00")
    return DerivedPlan(
        volume=vol, affine=affine, source_headers=headers, sources=_source_slices(vol.shape[2], len(headers)),
        slope=slope, intercept=intercept, centre=centre, width=width, spacing=geometry.spacing_from_affine(affine),
        thickness=None if thickness in (None, "") else float(thickness), common=base,
    )


def stored_plane(plane: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Float ``plane`` (column, row) as the stored int16 (row, column) array for this rescale."""
    stored = np.rint((plane.T - intercept) / slope)
    return np.clip(stored, -32768, 32767).astype("<i2")


def source_references(plan: DerivedPlan, k: int) -> DicomSequence:
    """Source Image Sequence items for output slice ``k``."""
    refs = []
    for i in plan.sources[k]:
        src = plan.source_headers[i]
        item = Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        item.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*_SOURCE_PURPOSE)])
        refs.append(item)
    return DicomSequence(refs)


def file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    """File meta for an Explicit VR Little Endian object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dataset.validate_file_meta(meta, enforce_standard=True)
    return meta


def _write_classic(
    plan: DerivedPlan, folder: str | os.PathLike, *, overwrite: bool, progress: Callable[[int, int], None] | None
) -> list[Path]:
    src0 = plan.source_headers[0]
    n_slices = plan.volume.shape[2]
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
    base.SliceThickness = ds_value(plan.thickness) if plan.thickness is not None else ""
    if n_slices > 1:
        base.SpacingBetweenSlices = ds_value(plan.spacing[2])
    base.RescaleSlope, base.RescaleIntercept = ds_value(plan.slope), ds_value(plan.intercept)
    base.RealWorldValueMappingSequence = DicomSequence([real_world_mapping(plan.slope, plan.intercept)])
    base.WindowCenter, base.WindowWidth = ds_value(plan.centre), ds_value(plan.width)
    base.WindowCenterWidthExplanation = WINDOW_EXPLANATION

    written: list[Path] = []
    with atomic_output(folder, is_dir=True, overwrite=overwrite) as tmp:
        for k in range(n_slices):
            ds = _slice_dataset(base, plan, k)
            name = f"MR{k + 1:05d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            written.append(Path(folder) / name)
            if progress:
                progress(k + 1, n_slices)
    return written


WINDOW_EXPLANATION = "monai_sr: 0.5-99.5 percentile"


def real_world_mapping(slope: float, intercept: float) -> Dataset:
    """The MR-native statement of the rescale (the classic MR IOD has no Modality LUT module)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = -32768
    item.RealWorldValueLastValueMapped = 32767
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


def _slice_dataset(base: Dataset, plan: DerivedPlan, k: int) -> Dataset:
    ds = Dataset()
    ds.update(base)
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ipp, iop, pixel_spacing = geometry.dicom_slice_geometry(plan.affine, k)
    ds.ImagePositionPatient = [ds_value(v) for v in ipp]
    ds.ImageOrientationPatient = [ds_value(v) for v in iop]
    ds.PixelSpacing = [ds_value(v) for v in pixel_spacing]
    ds.SliceLocation = ds_value(float(np.dot(ipp, geometry.slice_normal(iop))))
    ds.SourceImageSequence = source_references(plan, k)
    ds.PixelData = stored_plane(plan.volume[:, :, k], plan.slope, plan.intercept).tobytes()
    ds.file_meta = file_meta(MRImageStorage, sop_uid)
    return ds
