"""Write a volume as the ORIGINAL\\PRIMARY MR series a scanner would send (sample data and tests).

:func:`write_original_mr_series` stores a 3D array with its RAS affine as Classic MR Image Storage, one
file per slice, with the acquisition, patient, study, series, frame-of-reference and equipment
attributes a real scanner fills in. Everything is deterministic: UIDs come from
:func:`pydicom.uid.generate_uid` with entropy sources built from ``seed``, dates and times are fixed, so a
rerun writes byte-identical files.

Two vendor styles:

* ``"siemens"``: unsigned 16-bit pixels equal to the (rounded) values, no Rescale Slope / Intercept,
  ImageType ``ORIGINAL\\PRIMARY\\M\\NORM\\DIS2D``, a 3D MPRAGE-like acquisition.
* ``"philips"``: signed 16-bit stored values with Rescale Slope 1.5 (doubled as often as the range needs)
  and Rescale Intercept -10, so a value comes back within ``slope / 2``; ImageType
  ``ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE``, a 3D T1-TFE-like acquisition.

``quirks`` add things other vendors and archives really do, each one survived by pydicom, GDCM and
dcm2niix (see :data:`QUIRKS`). Without quirks the files pass ``dciodvfy -new`` with no error.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from monai_sr import geometry

__all__ = ["write_original_mr_series", "QUIRKS", "STYLES", "PHILIPS_RESCALE_INTERCEPT"]

#: Quirks understood by :func:`write_original_mr_series`, with what each one does.
QUIRKS = {
    "spacing_tag_lies": "SpacingBetweenSlices is 1 mm larger than the distance between the slice positions",
    "command_set": "group-0000 command elements (a C-STORE-RQ) kept in the stored dataset",
    "zero_window": "WindowWidth 0",
    "private_tags": "a private block (with its Private Creator) of vendor strings",
    "shuffled_names": "random file names; InstanceNumber descending while the position ascends",
    "implicit_vr": "Implicit VR Little Endian transfer syntax",
}

STYLES = ("siemens", "philips")

#: Rescale Intercept of the ``"philips"`` style; the slope is 1.5 * 2**n, n as small as the range allows.
PHILIPS_RESCALE_INTERCEPT = -10.0
_PHILIPS_BASE_SLOPE = 1.5

#: Implementation Class UID / Version Name written in the file meta (fixed, so files do not depend on
#: the installed pydicom version).
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=["monai_sr", "scanner_series", "implementation"])
_IMPLEMENTATION_NAME = "MONAI_SR_SIM_1"

_STYLE_TAGS: dict[str, dict[str, object]] = {
    "siemens": {
        "Manufacturer": "SIEMENS",
        "ManufacturerModelName": "Prisma_fit",
        "SoftwareVersions": "syngo MR E11",
        "DeviceSerialNumber": "166042",
        "StationName": "AWP66042",
        "InstitutionName": "MONAI SR Sample Hospital",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"],
        "ScanningSequence": ["GR", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": "IR",
        "MRAcquisitionType": "3D",
        "SequenceName": "*tfl3d1_16ns",
        "RepetitionTime": "2300",
        "EchoTime": "2.32",
        "InversionTime": "900",
        "FlipAngle": "8",
        "MagneticFieldStrength": "3",
        "ImagingFrequency": "123.251934",
        "EchoTrainLength": "1",
        "PixelBandwidth": "200",
        "ReceiveCoilName": "HeadNeck_20",
        "TransmitCoilName": "Body",
        "phase": "ROW",
    },
    "philips": {
        "Manufacturer": "Philips Medical Systems",
        "ManufacturerModelName": "Ingenia",
        "SoftwareVersions": ["5.6.1", "5.6.1.0"],
        "DeviceSerialNumber": "42042",
        "StationName": "PHILIPS-MR1",
        "InstitutionName": "MONAI SR Sample Hospital",
        "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
        "ScanningSequence": ["GR", "IR"],
        "SequenceVariant": ["SK", "MP"],
        "ScanOptions": "PFP",
        "MRAcquisitionType": "3D",
        "SequenceName": "T1TFE",
        "RepetitionTime": "8.1",
        "EchoTime": "3.7",
        "InversionTime": "1000",
        "FlipAngle": "8",
        "MagneticFieldStrength": "3",
        "ImagingFrequency": "127.762418",
        "EchoTrainLength": "240",
        "PixelBandwidth": "241",
        "ReceiveCoilName": "dS Head 32ch",
        "TransmitCoilName": "B",
        "phase": "COL",
    },
}

# Private blocks of the "private_tags" quirk: (group, creator, [(offset, VR, value), ...]).
_PRIVATE = {
    "siemens": (0x0051, "SIEMENS MR HEADER", [(0x08, "CS", "IMAGE NUM 4"), (0x0A, "LO", "TA 05:12"),
                                                (0x0F, "LO", "HC1-7"), (0x16, "LO", "M/DIS2D")]),
    "philips": (0x2001, "Philips Imaging DD 001", [(0x20, "LO", "TFE"), (0x22, "FL", 0.0)]),
}


def _ds(value: float) -> DSfloat:
    """A DS value that fits 16 characters (pydicom's auto format), rounded to 1e-10 so that float noise
    (``1.9999999999999998``) does not fill the string; -0 written as 0."""
    v = round(float(value), 10)
    if v == 0.0:
        v = 0.0
    return DSfloat(v, auto_format=True)


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=["monai_sr.scanner_series", str(int(seed)), *(str(p) for p in parts)])


def _philips_rescale(lo: float, hi: float) -> tuple[float, float]:
    """Slope 1.5 * 2**n (n >= 0 as small as possible) and intercept -10 that store [lo, hi] in int16."""
    icpt = PHILIPS_RESCALE_INTERCEPT
    for n in range(64):
        slope = _PHILIPS_BASE_SLOPE * 2.0**n
        if np.floor((lo - icpt) / slope + 0.5) >= -32768 and np.floor((hi - icpt) / slope + 0.5) <= 32767:
            return slope, icpt
    raise ValueError(f"value range [{lo}, {hi}] cannot be stored as int16 with a rescale")


def _check_args(volume, affine, style, quirks, slice_thickness, seed):
    if style not in STYLES:
        raise ValueError(f"style must be one of {list(STYLES)}, got {style!r}")
    if isinstance(quirks, str):
        raise ValueError(f"quirks must be a sequence of names, not the string {quirks!r} (use ({quirks!r},))")
    unknown = [q for q in quirks if q not in QUIRKS]
    if unknown:
        raise ValueError(f"unknown quirk(s) {unknown}; known: {sorted(QUIRKS)}")
    if len(set(quirks)) != len(quirks):
        raise ValueError(f"quirks repeated: {list(quirks)}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D (column, row, slice), got shape {vol.shape}")
    if min(vol.shape) < 1 or vol.shape[0] > 65535 or vol.shape[1] > 65535:
        raise ValueError(f"volume shape {vol.shape} cannot be stored as DICOM slices")
    if not (np.issubdtype(vol.dtype, np.integer) or np.issubdtype(vol.dtype, np.floating) or vol.dtype == bool):
        raise ValueError(f"volume must hold real numbers, got dtype {vol.dtype}")
    vol = vol.astype(np.float64)
    if not np.all(np.isfinite(vol)):
        raise ValueError("volume has non-finite values (NaN or inf)")
    try:
        aff = geometry.check_affine(affine)
    except Exception as exc:  # GeometryError: name it as a bad argument
        raise ValueError(f"bad affine: {exc}") from exc
    if slice_thickness is not None and not (np.isfinite(slice_thickness) and slice_thickness > 0):
        raise ValueError(f"slice_thickness must be a positive number of mm, got {slice_thickness!r}")
    return vol, aff


def write_original_mr_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: str | os.PathLike,
    *,
    style: str = "siemens",
    seed: int = 0,
    quirks: Sequence[str] = (),
    slice_thickness: float | None = None,
    series_number: int = 3,
    series_description: str = "t1_mprage_tra_2mm",
    patient_name: str = "SAMPLE^COLIN27",
    patient_id: str = "MONAISR0001",
    patient_birth_date: str = "19650101",
    patient_sex: str = "M",
    study_date: str = "20240611",
    study_time: str = "101500",
    accession_number: str = "ACC0001",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``volume`` as an ORIGINAL\\PRIMARY MR Image Storage series, one file per slice.

    Args:
        volume: 3D array indexed ``(i = column, j = row, k = slice)``; values in the scanner's units
            (rounded to integers for ``"siemens"``, which needs them in 0..65535).
        affine: 4x4 RAS affine mapping ``(i, j, k)`` to mm (see :mod:`monai_sr.geometry`); no shear.
        folder: the series folder to create (must not exist, or be empty, unless ``overwrite``).
        style: ``"siemens"`` or ``"philips"`` (see the module docstring).
        seed: makes every UID (study, series, frame of reference, instances); same seed, same files.
        quirks: names from :data:`QUIRKS`.
        slice_thickness: SliceThickness in mm; default the distance between slices.
        study_instance_uid, frame_of_reference_uid: give them to put the series in an existing study /
            frame of reference; by default both come from ``seed``.
        overwrite: replace an existing non-empty ``folder``.

    Returns:
        The paths written, in slice order ``k``.

    Raises:
        ValueError: on a bad argument (style, quirk, shape, values out of range, sheared affine...).
    """
    quirks = tuple(quirks) if not isinstance(quirks, str) else quirks
    vol, aff = _check_args(volume, affine, style, quirks, slice_thickness, seed)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ValueError(f"{folder} is not empty (pass overwrite=True to replace it)")
    if not folder.parent.is_dir():
        raise ValueError(f"parent folder {folder.parent} does not exist")
    tags = _STYLE_TAGS[style]
    n_col, n_row, n_slices = vol.shape

    # --- pixel encoding -------------------------------------------------------------------------
    if style == "siemens":
        stored = np.floor(vol + 0.5)
        if stored.min() < 0 or stored.max() > 65535:
            raise ValueError(
                f"style 'siemens' stores unsigned 16-bit integers; values span [{vol.min()}, {vol.max()}] "
                "(use style='philips' for negative or larger values)"
            )
        stored = stored.astype(np.uint16)
        bits_stored = 12 if stored.max() <= 4095 else 16
        slope = icpt = None
        real = stored.astype(np.float64)
    else:
        slope, icpt = _philips_rescale(float(vol.min()), float(vol.max()))
        stored = np.floor((vol - icpt) / slope + 0.5).astype(np.int16)
        bits_stored = 16
        real = stored.astype(np.float64) * slope + icpt
    lo, hi = np.percentile(real, [0.5, 99.5])
    window_center = float(np.round((lo + hi) / 2.0))
    window_width = float(max(1.0, np.round(hi - lo)))

    # --- geometry -------------------------------------------------------------------------------
    spacing = geometry.spacing_from_affine(aff)
    step = float(spacing[2])
    thickness = step if slice_thickness is None else float(slice_thickness)
    spacing_tag = step + 1.0 if "spacing_tag_lies" in quirks else step
    geo = [geometry.dicom_slice_geometry(aff, k) for k in range(n_slices)]
    normal = geometry.slice_normal(geo[0][1])

    # --- UIDs -----------------------------------------------------------------------------------
    study_uid = study_instance_uid or _uid(seed, "study")
    for_uid = frame_of_reference_uid or _uid(seed, "frame_of_reference")
    key = (style, series_number, *sorted(quirks))
    series_uid = _uid(seed, "series", *key)
    sop_uids = [_uid(seed, "instance", *key, k) for k in range(n_slices)]

    # --- file names and instance numbers ---------------------------------------------------------
    if "shuffled_names" in quirks:
        rng = np.random.default_rng(int(seed))
        names: list[str] = []
        while len(names) < n_slices:
            name = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), 8))
            if name not in names:
                names.append(name)
        instance_numbers = [n_slices - k for k in range(n_slices)]
    else:
        names = [f"IM{k + 1:04d}.dcm" for k in range(n_slices)]
        instance_numbers = [k + 1 for k in range(n_slices)]
    transfer_syntax = ImplicitVRLittleEndian if "implicit_vr" in quirks else ExplicitVRLittleEndian

    # Acquisition matrix: frequency rows \ frequency columns \ phase rows \ phase columns.
    if tags["phase"] == "ROW":  # phase along a row (i), frequency along a column (j)
        acq_matrix = [n_row, 0, 0, n_col]
        n_phase, n_freq = n_col, n_row
        pct_phase_fov = 100.0 * (n_col * spacing[0]) / (n_row * spacing[1])
    else:
        acq_matrix = [0, n_col, n_row, 0]
        n_phase, n_freq = n_row, n_col
        pct_phase_fov = 100.0 * (n_row * spacing[1]) / (n_col * spacing[0])

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        paths = []
        for k in range(n_slices):
            ipp, iop, ps = geo[k]
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = list(tags["ImageType"])
            ds.InstanceCreationDate = study_date
            ds.InstanceCreationTime = study_time
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop_uids[k]
            ds.StudyDate = study_date
            ds.SeriesDate = study_date
            ds.AcquisitionDate = study_date
            ds.ContentDate = study_date
            ds.StudyTime = study_time
            ds.SeriesTime = _time(study_time, 300)
            ds.AcquisitionTime = _time(study_time, 60)
            ds.ContentTime = _time(study_time, 300 + k // 10)
            ds.AccessionNumber = accession_number
            ds.Modality = "MR"
            ds.Manufacturer = tags["Manufacturer"]
            ds.InstitutionName = tags["InstitutionName"]
            ds.ReferringPhysicianName = "REFERRER^SAMPLE"
            ds.StationName = tags["StationName"]
            ds.StudyDescription = "HEAD^BRAIN"
            ds.SeriesDescription = series_description
            ds.ManufacturerModelName = tags["ManufacturerModelName"]
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = patient_birth_date
            ds.PatientSex = patient_sex
            ds.PatientAge = _age(patient_birth_date, study_date)
            ds.PatientSize = "1.80"
            ds.PatientWeight = "75"
            ds.BodyPartExamined = "HEAD"
            ds.ScanningSequence = list(tags["ScanningSequence"])
            ds.SequenceVariant = list(tags["SequenceVariant"])
            ds.ScanOptions = tags["ScanOptions"]
            ds.MRAcquisitionType = tags["MRAcquisitionType"]
            ds.SequenceName = tags["SequenceName"]
            ds.AngioFlag = "N"
            ds.SliceThickness = _ds(thickness)
            ds.RepetitionTime = tags["RepetitionTime"]
            ds.EchoTime = tags["EchoTime"]
            ds.InversionTime = tags["InversionTime"]
            ds.NumberOfAverages = "1"
            ds.ImagingFrequency = tags["ImagingFrequency"]
            ds.ImagedNucleus = "1H"
            ds.EchoNumbers = "1"
            ds.MagneticFieldStrength = tags["MagneticFieldStrength"]
            ds.SpacingBetweenSlices = _ds(spacing_tag)
            ds.NumberOfPhaseEncodingSteps = str(n_phase)
            ds.EchoTrainLength = tags["EchoTrainLength"]
            ds.PercentSampling = "100"
            ds.PercentPhaseFieldOfView = _ds(pct_phase_fov)
            ds.PixelBandwidth = tags["PixelBandwidth"]
            ds.DeviceSerialNumber = tags["DeviceSerialNumber"]
            ds.SoftwareVersions = tags["SoftwareVersions"]
            ds.ProtocolName = series_description
            ds.ReceiveCoilName = tags["ReceiveCoilName"]
            ds.TransmitCoilName = tags["TransmitCoilName"]
            ds.AcquisitionMatrix = acq_matrix
            ds.InPlanePhaseEncodingDirection = tags["phase"]
            ds.FlipAngle = tags["FlipAngle"]
            ds.VariableFlipAngleFlag = "N"
            ds.SAR = "0.0459"
            ds.dBdt = "0"
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = int(series_number)
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = instance_numbers[k]
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds(v) for v in iop]
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(np.dot(ipp, normal)))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = n_row
            ds.Columns = n_col
            ds.PixelSpacing = [_ds(v) for v in ps]
            ds.BitsAllocated = 16
            ds.BitsStored = bits_stored
            ds.HighBit = bits_stored - 1
            ds.PixelRepresentation = 0 if style == "siemens" else 1
            ds.WindowCenter = _ds(window_center)
            ds.WindowWidth = _ds(0.0 if "zero_window" in quirks else window_width)
            ds.WindowCenterWidthExplanation = "Algo1"
            if slope is not None:
                ds.RescaleIntercept = _ds(icpt)
                ds.RescaleSlope = _ds(slope)
                ds.RescaleType = "US"
            if "private_tags" in quirks:
                group, creator, elems = _PRIVATE[style]
                block = ds.private_block(group, creator, create=True)
                for off, vr, value in elems:
                    block.add_new(off, vr, value)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = j, columns = i

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uids[k]
            meta.TransferSyntaxUID = transfer_syntax
            meta.ImplementationClassUID = _IMPLEMENTATION_UID
            meta.ImplementationVersionName = _IMPLEMENTATION_NAME
            meta.SourceApplicationEntityTitle = "MRC66042" if style == "siemens" else "PHILIPS_MR1"
            ds.file_meta = meta
            ds.preamble = b"\x00" * 128

            buf = io.BytesIO()
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            data = buf.getvalue()
            if "command_set" in quirks:
                data = _insert_command_set(data, sop_uids[k], k)
            path = tmp / names[k]
            path.write_bytes(data)
            paths.append(folder / names[k])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a series folder is an ordinary one
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths


def _time(hhmmss: str, seconds: int) -> str:
    """``hhmmss`` plus ``seconds`` (same day), as a TM with microseconds like scanners write."""
    t = int(hhmmss[0:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + int(seconds)
    t %= 86400
    return f"{t // 3600:02d}{t % 3600 // 60:02d}{t % 60:02d}.{(seconds * 7919) % 1000:03d}000"


def _age(birth: str, date: str) -> str:
    years = int(date[:4]) - int(birth[:4]) - (date[4:8] < birth[4:8])
    return f"{max(0, min(999, years)):03d}Y"


def _insert_command_set(data: bytes, sop_uid: str, k: int) -> bytes:
    """Put a C-STORE-RQ command set (group 0000) at the start of the dataset of a Part 10 file.

    Command elements are always Implicit VR Little Endian (PS3.7 6.3), whatever the transfer syntax,
    which is how archives that keep them store them and how pydicom reads them back.
    """
    cmd = Dataset()
    cmd.AffectedSOPClassUID = MRImageStorage
    cmd.CommandField = 0x0001  # C-STORE-RQ
    cmd.MessageID = k + 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000  # a dataset follows
    cmd.AffectedSOPInstanceUID = sop_uid
    elems = _implicit_bytes(cmd)
    group_len = Dataset()
    group_len.CommandGroupLength = len(elems)
    # File meta starts after the 128-byte preamble and "DICM"; its group length (0002,0000) UL is first.
    meta_len = struct.unpack("<I", data[140:144])[0]
    start = 144 + meta_len
    return data[:start] + _implicit_bytes(group_len) + elems + data[start:]


def _implicit_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    fp = pydicom.filebase.DicomFileLike(buf)
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return buf.getvalue()
