"""The derived series as Classic MR Image Storage: one file per slice, the shared header encoded once.

Written through :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter` (the default format). Files are
written without a pydicom Dataset per slice: file meta and the header common to all slices (from the
:class:`~monai_sr.io.dicom.derived.DerivedPlan`, plus the MR Image module the derived slices still
describe) are encoded once, and only the elements that change are encoded per slice (SOP Instance UID,
Source Image Sequence, Instance Number, position, Slice Location, rescale, window when it is estimated,
Pixel Data).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import MRImageStorage, generate_uid

from monai_sr import geometry
from monai_sr.errors import InputError, OutputError
from monai_sr.io.dicom.derived import (
    SOURCE_PURPOSE,
    WINDOW_EXPLANATION,
    DerivedPlan,
    PlaneStore,
    code_item,
    ds_value,
    file_meta,
    path_of,
    real_world_mapping,
    slope_for_peak,
)

__all__ = ["ClassicSlices"]

_COPIED_CLASSIC = (
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName", "AngioFlag",
    "RepetitionTime", "EchoTime", "InversionTime", "NumberOfAverages", "ImagingFrequency", "ImagedNucleus",
    "EchoNumbers", "MagneticFieldStrength", "NumberOfPhaseEncodingSteps", "EchoTrainLength", "PercentSampling",
    "PercentPhaseFieldOfView", "PixelBandwidth", "ReceiveCoilName", "TransmitCoilName", "AcquisitionMatrix",
    "InPlanePhaseEncodingDirection", "FlipAngle", "VariableFlipAngleFlag", "SAR", "dBdt", "TriggerTime",
    "HeartRate", "CardiacNumberOfImages", "TemporalPositionIdentifier", "NumberOfTemporalPositions",
)

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


class ClassicSlices:
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
            raise InputError("source lacks ScanningSequence/SequenceVariant (type 1 in an MR image)", path=path_of(src0))
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
        purpose.PurposeOfReferenceCodeSequence = DicomSequence([code_item(*SOURCE_PURPOSE)])
        self.purpose = _encoded(purpose, charset)
        self.normal = geometry.slice_normal(iop)
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
        ipp = plan.positions[k]
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
