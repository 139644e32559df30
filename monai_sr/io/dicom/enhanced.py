"""The derived series as one Enhanced MR Image Storage object (multi-frame, functional groups).

Written through :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter` (or its whole-volume convenience
:func:`~monai_sr.io.dicom.writer.write_derived_series`) with ``dicom_format="enhanced"``;
patient, study, series and frame-of-reference identity, rescale, window and source references come
from the same :class:`~monai_sr.io.dicom.derived.DerivedPlan` as the classic slices, so frame ``k`` has
the position, pixels and sources of classic slice ``k``.

Modules written (PS3.3 A.36.2, only those a derived MR image needs): Patient, General Study, Patient
Study, General Series, MR Series, Frame of Reference, General Equipment, Enhanced General Equipment,
Image Pixel, Multi-frame Functional Groups, Multi-frame Dimension, Acquisition Context, Enhanced MR
Image, SOP Common. Functional groups:

* shared: Pixel Measures, Plane Orientation, Pixel Value Transformation (the rescale), Frame VOI LUT,
  Real World Value Mapping, MR Image Frame Type, Frame Anatomy;
* per frame: Frame Content (stack 1, in-stack position = dimension index), Plane Position,
  Derivation Image (with its Source Image Sequence).

The acquisition functional groups (MR Timing, Echo, FOV/Geometry, ...) are required only when value 1
of Image Type is ORIGINAL or MIXED, and are left out: the source series keeps them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from monai_sr import __version__, geometry
from monai_sr.errors import OutputError
from monai_sr.io.dicom.derived import (
    SOFTWARE_NAME,
    WINDOW_EXPLANATION,
    DerivedPlan,
    code_item,
    ds_value,
    PlaneStore,
    slope_for_peak,
    file_meta,
    real_world_mapping,
    source_references,
)

__all__ = ["EnhancedMRFrames", "FILE_NAME"]

FILE_NAME = "MR_ENHANCED.dcm"

# Frame Content attributes that index the frames (Stack ID, In-Stack Position Number).
_FRAME_CONTENT = 0x00209111
_PER_FRAME_GROUPS = 0x52009230
_DIMENSIONS = ((0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number"))

# Body Part Examined -> Anatomic Region (SNOMED CT) for the Frame Anatomy functional group.
_ANATOMY = {
    "HEAD": codes.SCT.Head, "BRAIN": codes.SCT.Brain, "NECK": codes.SCT.Neck, "CSPINE": codes.SCT.CervicalSpine,
    "TSPINE": codes.SCT.ThoracicSpine, "LSPINE": codes.SCT.LumbarSpine, "SPINE": codes.SCT.Spine,
    "CHEST": codes.SCT.Thorax, "THORAX": codes.SCT.Thorax, "ABDOMEN": codes.SCT.Abdomen, "PELVIS": codes.SCT.Pelvis,
    "KNEE": codes.SCT.Knee, "HEART": codes.SCT.Heart, "BREAST": codes.SCT.Breast, "PROSTATE": codes.SCT.Prostate,
    "LIVER": codes.SCT.Liver,
}


def _item(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _code(code) -> Dataset:
    return code_item(code.value, code.scheme_designator, code.meaning)


def _anatomy(src: Dataset) -> Dataset:
    """Frame Anatomy: the source's Anatomic Region Sequence, else its Body Part Examined, else Entire body."""
    if src.get("AnatomicRegionSequence"):
        region = DicomSequence([src.AnatomicRegionSequence[0]])
    else:
        part = str(src.get("BodyPartExamined", "")).upper().replace(" ", "")
        region = DicomSequence([_code(_ANATOMY.get(part, codes.SCT.EntireBody))])
    laterality = str(src.get("Laterality", "") or src.get("ImageLaterality", "") or "U")
    return _item(AnatomicRegionSequence=region, FrameLaterality=laterality if laterality in ("R", "L", "B") else "U")


def _image_description(item: Dataset) -> Dataset:
    """MR Image Description macro: a magnitude volume of unstated contrast."""
    item.PixelPresentation = "MONOCHROME"
    item.VolumetricProperties = "VOLUME"
    item.VolumeBasedCalculationTechnique = "NONE"
    item.ComplexImageComponent = "MAGNITUDE"
    item.AcquisitionContrast = "UNKNOWN"
    return item


def _shared_groups(plan: DerivedPlan, image_type: list[str], slope: float, centre: float, width: float) -> Dataset:
    _, iop, pixel_spacing = geometry.dicom_slice_geometry(plan.affine, 0)
    thickness = plan.thickness if plan.thickness is not None else float(plan.spacing[2])
    measures = _item(PixelSpacing=[ds_value(v) for v in pixel_spacing], SliceThickness=ds_value(thickness))
    if plan.shape[2] > 1:
        measures.SpacingBetweenSlices = ds_value(plan.spacing[2])
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=[ds_value(v) for v in iop])])
    shared.PixelValueTransformationSequence = DicomSequence([_item(
        RescaleIntercept=ds_value(plan.intercept), RescaleSlope=ds_value(slope), RescaleType="US")])
    shared.FrameVOILUTSequence = DicomSequence([_item(
        WindowCenter=ds_value(centre), WindowWidth=ds_value(width), WindowCenterWidthExplanation=WINDOW_EXPLANATION)])
    shared.RealWorldValueMappingSequence = DicomSequence([real_world_mapping(slope, plan.intercept)])
    shared.MRImageFrameTypeSequence = DicomSequence([_image_description(_item(FrameType=image_type))])
    shared.FrameAnatomySequence = DicomSequence([_anatomy(plan.source_headers[0])])
    return shared


def _append_frame_groups(f, plan: DerivedPlan, charset) -> None:
    """Write the Per-frame Functional Groups Sequence at ``f``'s position, one frame at a time.

    Its length is patched in at the end, so no frame's group is kept: memory does not grow with frames.
    """
    derivation_code = _code(codes.DCM.SpatialResampling if _resampled(plan) else codes.DCM.Smoothing)
    start = f.tell()
    f.write(struct.pack("<HH2sHI", 0x5200, 0x9230, b"SQ", 0, 0))
    for k in range(plan.shape[2]):
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, _frame_group(plan, k, derivation_code), charset)
        item = fp.getvalue()
        f.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(item)))
        f.write(item)
    end = f.tell()
    f.seek(start + 8)
    f.write(struct.pack("<I", end - start - 12))
    f.seek(end)


def _resampled(plan: DerivedPlan) -> bool:
    src0 = plan.source_headers[0]
    n_cols, n_rows, n_frames = plan.shape
    return n_frames != len(plan.source_headers) or (n_cols, n_rows) != (
        int(src0.get("Columns", n_cols)), int(src0.get("Rows", n_rows)))


def _frame_group(plan: DerivedPlan, k: int, derivation_code: Dataset) -> Dataset:
    ipp = plan.positions[k]
    frame = Dataset()
    frame.FrameContentSequence = DicomSequence([_item(
        StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[1, k + 1])])
    frame.PlanePositionSequence = DicomSequence([_item(ImagePositionPatient=[ds_value(v) for v in ipp])])
    frame.DerivationImageSequence = DicomSequence([_item(
        DerivationDescription=plan.common.DerivationDescription,
        DerivationCodeSequence=DicomSequence([derivation_code]),
        SourceImageSequence=source_references(plan, k),
    )])
    return frame


def _source_evidence(plan: DerivedPlan) -> DicomSequence:
    """Source Image Evidence Sequence: every source instance, by study and series."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for src in plan.source_headers:
        series = studies.setdefault(str(src.StudyInstanceUID), {}).setdefault(str(src.SeriesInstanceUID), [])
        series.append(_item(ReferencedSOPClassUID=src.SOPClassUID, ReferencedSOPInstanceUID=src.SOPInstanceUID))
    return DicomSequence([
        _item(StudyInstanceUID=study, ReferencedSeriesSequence=DicomSequence([
            _item(SeriesInstanceUID=uid, ReferencedSOPSequence=DicomSequence(refs)) for uid, refs in series.items()
        ]))
        for study, series in studies.items()
    ])


class EnhancedMRFrames:
    """The frames of one Enhanced MR object, streamed (see :class:`~monai_sr.io.dicom.writer.DerivedSeriesWriter`).

    The header (per-frame functional groups included) comes before the pixels in the file, and its shared
    rescale and window may only be known at the end, so frames go to a scratch file in the output folder
    as they arrive: as int16 when the plan has its slope, else as float64 (the slope then comes from the
    largest magnitude seen). :meth:`finish` writes the header with pydicom and appends the Pixel Data
    element from the scratch file one frame at a time; the per-frame functional groups are encoded and
    written one frame at a time too. Memory: a frame or two, whatever the number of frames.
    """

    def __init__(self, plan: DerivedPlan, folder: Path) -> None:
        self.plan, self.folder = plan, folder
        self.planes = PlaneStore(plan.shape[0], plan.shape[1])
        self.dtype = np.dtype("<i2") if plan.slope is not None else np.dtype("<f8")
        self.frame_bytes = plan.shape[0] * plan.shape[1] * self.dtype.itemsize
        self.scratch_path = folder / ".frames.partial"
        self.scratch = open(self.scratch_path, "w+b")
        self.peak = 0.0

    def add(self, k: int, plane: np.ndarray) -> np.ndarray:
        self.peak = max(self.peak, self.planes.load(plane))
        data = self.planes.store(self.plan.slope, k) if self.plan.slope is not None else self.planes.rows
        self.scratch.seek(k * self.frame_bytes)
        self.scratch.write(data.data)
        return self.planes.rows

    def finish(self, window: tuple[float, float] | None) -> list[str]:
        plan = self.plan
        slope = plan.slope if plan.slope is not None else slope_for_peak(self.peak)
        centre, width = window if window is not None else plan.window
        ds = _header(plan, slope, centre, width)
        path = self.folder / FILE_NAME
        ds.save_as(path, enforce_file_format=True)
        n_frames = plan.shape[2]
        stored = self.planes.stored
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            _append_frame_groups(f, plan, ds._character_set)
            f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, stored.nbytes * n_frames))
            for k in range(n_frames):
                self.scratch.seek(k * self.frame_bytes)
                raw = self.scratch.read(self.frame_bytes)
                if self.dtype.itemsize != 2:
                    np.copyto(self.planes.rows, np.frombuffer(raw, self.dtype).reshape(stored.shape))
                    raw = self.planes.store(slope, k).data
                f.write(raw)
        self.close()
        return [FILE_NAME]

    def close(self) -> None:
        if not self.scratch.closed:
            self.scratch.close()
        self.scratch_path.unlink(missing_ok=True)


def _header(plan: DerivedPlan, slope: float, centre: float, width: float) -> Dataset:
    """Everything of the Enhanced MR object but the per-frame functional groups and the Pixel Data."""
    src0 = plan.source_headers[0]
    n_frames = plan.shape[2]
    resampled = _resampled(plan)
    # Enhanced MR Image Type: DERIVED \ PRIMARY (the only value 2 enhanced images allow) \ image flavor \ derived pixel contrast
    image_type = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED" if resampled else "FILTERED"]

    ds = Dataset()
    ds.update(plan.common)
    for keyword in ("DerivationDescription", "BurnedInAnnotation"):
        del ds[keyword]  # per frame (Derivation Image) / not in this IOD's modules
    sop_uid = generate_uid()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.DeviceSerialNumber = f"{SOFTWARE_NAME}-{__version__}"  # Enhanced General Equipment: type 1
    ds.ImageType = image_type
    _image_description(ds)
    ds.ContentQualification = "RESEARCH"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    if "MagneticFieldStrength" in src0:
        ds.MagneticFieldStrength = src0.MagneticFieldStrength
    # The safety standard the acquisition ran under: the source's, else IEC (60601-2-33, which scanners
    # sold worldwide follow); dciodvfy asks for it in every Enhanced MR image.
    ds.ApplicableSafetyStandardAgency = src0.get("ApplicableSafetyStandardAgency", "IEC")
    ds.SourceImageEvidenceSequence = _source_evidence(plan)
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n_frames
    dimension_uid = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=dimension_uid)])
    ds.DimensionIndexSequence = DicomSequence([
        _item(DimensionOrganizationUID=dimension_uid, DimensionIndexPointer=pointer,
              FunctionalGroupPointer=_FRAME_CONTENT, DimensionDescriptionLabel=label)
        for pointer, label in _DIMENSIONS
    ])
    ds.DimensionOrganizationType = "3D"
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(plan, image_type, slope, centre, width)])
    last = max(ds.keys())
    if last > _PER_FRAME_GROUPS:
        raise OutputError(f"{last} would sort after the per-frame functional groups")
    ds.file_meta = file_meta(EnhancedMRImageStorage, sop_uid)
    return ds
