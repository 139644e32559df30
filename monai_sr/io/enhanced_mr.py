"""The derived series as one Enhanced MR Image Storage object (multi-frame, functional groups).

Called through :func:`monai_sr.io.dicom_writer.write_derived_series` with ``dicom_format="enhanced"``;
patient, study, series and frame-of-reference identity, rescale, window and source references come
from the same :class:`~monai_sr.io.dicom_writer.DerivedPlan` as the classic slices, so frame ``k`` has
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from monai_sr import __version__, geometry
from monai_sr.io.atomic import atomic_output
from monai_sr.io.dicom_writer import (
    SOFTWARE_NAME,
    WINDOW_EXPLANATION,
    DerivedPlan,
    code_item,
    ds_value,
    file_meta,
    real_world_mapping,
    source_references,
    stored_plane,
)

__all__ = ["write_enhanced_mr", "FILE_NAME"]

FILE_NAME = "MR_ENHANCED.dcm"

# Frame Content attributes that index the frames (Stack ID, In-Stack Position Number).
_FRAME_CONTENT = 0x00209111
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


def _shared_groups(plan: DerivedPlan, image_type: list[str]) -> Dataset:
    _, iop, pixel_spacing = geometry.dicom_slice_geometry(plan.affine, 0)
    thickness = plan.thickness if plan.thickness is not None else float(plan.spacing[2])
    measures = _item(PixelSpacing=[ds_value(v) for v in pixel_spacing], SliceThickness=ds_value(thickness))
    if plan.volume.shape[2] > 1:
        measures.SpacingBetweenSlices = ds_value(plan.spacing[2])
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=[ds_value(v) for v in iop])])
    shared.PixelValueTransformationSequence = DicomSequence([_item(
        RescaleIntercept=ds_value(plan.intercept), RescaleSlope=ds_value(plan.slope), RescaleType="US")])
    shared.FrameVOILUTSequence = DicomSequence([_item(
        WindowCenter=ds_value(plan.centre), WindowWidth=ds_value(plan.width), WindowCenterWidthExplanation=WINDOW_EXPLANATION)])
    shared.RealWorldValueMappingSequence = DicomSequence([real_world_mapping(plan.slope, plan.intercept)])
    shared.MRImageFrameTypeSequence = DicomSequence([_image_description(_item(FrameType=image_type))])
    shared.FrameAnatomySequence = DicomSequence([_anatomy(plan.source_headers[0])])
    return shared


def _frame_group(plan: DerivedPlan, k: int, derivation_code: Dataset) -> Dataset:
    ipp, _, _ = geometry.dicom_slice_geometry(plan.affine, k)
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


def write_enhanced_mr(
    plan: DerivedPlan,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``plan`` as one Enhanced MR Image Storage file ``folder/MR_ENHANCED.dcm``; returns its path."""
    src0 = plan.source_headers[0]
    n_cols, n_rows, n_frames = plan.volume.shape
    resampled = n_frames != len(plan.source_headers) or (n_cols, n_rows) != (
        int(src0.get("Columns", n_cols)), int(src0.get("Rows", n_rows)))
    # Enhanced MR Image Type: DERIVED \ PRIMARY (the only value 2 enhanced images allow) \ image flavor \ derived pixel contrast
    image_type = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED" if resampled else "FILTERED"]
    derivation_code = _code(codes.DCM.SpatialResampling if resampled else codes.DCM.Smoothing)

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
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups(plan, image_type)])

    frames, pixels = [], np.empty((n_frames, n_rows, n_cols), dtype="<i2")
    for k in range(n_frames):
        frames.append(_frame_group(plan, k, derivation_code))
        pixels[k] = stored_plane(plan.volume[:, :, k], plan.slope, plan.intercept)
        if progress:
            progress(k + 1, n_frames)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = file_meta(EnhancedMRImageStorage, sop_uid)
    with atomic_output(folder, is_dir=True, overwrite=overwrite) as tmp:
        ds.save_as(tmp / FILE_NAME, enforce_file_format=True)
    return Path(folder) / FILE_NAME
