"""Write a derived MR series in the source's study (DESIGN.md, "The derived DICOM series").

The output is Classic MR Image Storage, one file per slice, Explicit VR Little Endian:

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
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from monai_sr import __version__, geometry
from monai_sr.errors import InputError
from monai_sr.io.atomic import atomic_output

__all__ = ["write_derived_series", "choose_rescale", "SOFTWARE_NAME"]

SOFTWARE_NAME = "monai_sr"

#: Attributes copied from the source as they are: patient, study, frame of reference, and the MR
#: acquisition that the derived image still describes.
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
    # General Acquisition / General Image
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "AcquisitionNumber",
    # MR Image module
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


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _ds(value: float) -> DSfloat:
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
    slope = float(_ds(peak / _INT16_RANGE))
    while peak / slope > 32767:  # rounding to 16 characters may have shrunk the slope
        slope = float(_ds(slope * 1.0001))
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
        progress: called with ``(slices_done, slices_total)``.

    Returns:
        The written file paths, in slice order.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise InputError(f"expected a 3D volume (column, row, slice), got shape {vol.shape}")
    if not source_headers:
        raise InputError("a derived DICOM series needs the source DICOM headers; the input was not DICOM")
    affine = geometry.check_affine(affine)
    source_headers = [h if isinstance(h, Dataset) else Dataset.from_json(h) for h in source_headers]
    src0 = source_headers[0]
    n_cols, n_rows, n_slices = vol.shape
    slope, intercept = choose_rescale(vol)
    centre, width = _window(vol)
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    series_uid = generate_uid()
    spacing = geometry.spacing_from_affine(affine)
    sources = _source_slices(n_slices, len(source_headers))
    image_type = ["DERIVED", "SECONDARY", *([str(v) for v in src0.get("ImageType", [])][2:] or ["OTHER"])]
    description = series_description or f"{src0.get('SeriesDescription', '')} {derivation.split('(')[0].strip()}".strip()

    base = Dataset()
    for keyword in _COPIED:
        if keyword in src0:
            base[keyword] = src0[keyword]
    base.SOPClassUID = MRImageStorage
    base.Modality = "MR"
    base.SeriesInstanceUID = series_uid
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
    base.setdefault("ScanOptions", "")
    base.setdefault("MRAcquisitionType", "")
    base.setdefault("EchoTime", "")
    base.setdefault("EchoTrainLength", "")
    if "ScanningSequence" not in base or "SequenceVariant" not in base:
        raise InputError("source lacks ScanningSequence/SequenceVariant (type 1 in an MR image)", path=_path_of(src0))
    thickness = slice_thickness if slice_thickness is not None else src0.get("SliceThickness")
    base.SliceThickness = _ds(thickness) if thickness not in (None, "") else ""
    if n_slices > 1:
        base.SpacingBetweenSlices = _ds(spacing[2])
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = n_rows, n_cols
    base.BitsAllocated, base.BitsStored, base.HighBit = 16, 16, 15
    base.PixelRepresentation = 1
    base.RescaleSlope, base.RescaleIntercept = _ds(slope), _ds(intercept)
    base.RealWorldValueMappingSequence = DicomSequence([_real_world_mapping(slope, intercept, src0)])
    base.WindowCenter, base.WindowWidth = _ds(centre), _ds(width)
    base.WindowCenterWidthExplanation = "monai_sr: 0.5-99.5 percentile"
    base.BurnedInAnnotation = "NO"
    base.LossyImageCompression = src0.get("LossyImageCompression", "00")

    written: list[Path] = []
    with atomic_output(folder, is_dir=True, overwrite=overwrite) as tmp:
        for k in range(n_slices):
            ds = _slice_dataset(base, vol[:, :, k], affine, k, slope, intercept, source_headers, sources[k])
            name = f"MR{k + 1:05d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            written.append(Path(folder) / name)
            if progress:
                progress(k + 1, n_slices)
    return written


def _real_world_mapping(slope: float, intercept: float, src: Dataset) -> Dataset:
    """The MR-native statement of the rescale (the classic MR IOD has no Modality LUT module)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = -32768
    item.RealWorldValueLastValueMapped = 32767
    item.RealWorldValueSlope = float(slope)
    item.RealWorldValueIntercept = float(intercept)
    item.LUTExplanation = "signal intensity in the source series' units"
    item.LUTLabel = "MR_SIGNAL"
    # UCUM "{arbitrary}"-style unitless code: MR magnitude has no physical unit.
    item.MeasurementUnitsCodeSequence = DicomSequence([_code("1", "UCUM", "no units")])
    return item


def _path_of(ds: Dataset) -> str | None:
    return getattr(ds, "filename", None) if isinstance(getattr(ds, "filename", None), str) else None


def _contributing_scanner(src: Dataset) -> Dataset:
    item = Dataset()
    item.Manufacturer = src.get("Manufacturer", "")
    for keyword in ("InstitutionName", "StationName", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"):
        if keyword in src:
            item[keyword] = src[keyword]
    item.PurposeOfReferenceCodeSequence = DicomSequence([_code(*_ACQUISITION_EQUIPMENT)])
    return item


def _slice_dataset(
    base: Dataset,
    plane: np.ndarray,
    affine: np.ndarray,
    k: int,
    slope: float,
    intercept: float,
    source_headers: Sequence[Dataset],
    source_index: list[int],
) -> Dataset:
    ds = Dataset()
    ds.update(base)
    sop_uid = generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ipp, iop, pixel_spacing = geometry.dicom_slice_geometry(affine, k)
    ds.ImagePositionPatient = [_ds(v) for v in ipp]
    ds.ImageOrientationPatient = [_ds(v) for v in iop]
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.SliceLocation = _ds(float(np.dot(ipp, geometry.slice_normal(iop))))
    refs = []
    for i in source_index:
        src = source_headers[i]
        item = Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        item.PurposeOfReferenceCodeSequence = DicomSequence([_code(*_SOURCE_PURPOSE)])
        refs.append(item)
    ds.SourceImageSequence = DicomSequence(refs)
    stored = np.rint((plane.T - intercept) / slope)  # rows x columns
    ds.PixelData = np.clip(stored, -32768, 32767).astype("<i2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    pydicom.dataset.validate_file_meta(meta, enforce_standard=True)
    return ds
