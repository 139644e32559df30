"""One 2D DICOM image (:class:`Frame`), read leniently, header first: what every later step works on.

A frame is a single-frame file, or frame ``index`` of a multi-frame file whose attributes come from its
per-frame functional group, then the shared one, then the top level. Headers are read with the pixel data
left on disk (:func:`read_header`); :func:`check_decodable` refuses, before any voxel is read, pixel data
that cannot be decoded here (colour, mosaic, a transfer syntax without an installed decoder).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_sr.errors import InputError

__all__ = [
    "Frame",
    "lenient_reading",
    "is_dicom_input",
    "read_header",
    "frames_of",
    "check_decodable",
    "NATIVE_SYNTAXES",
]

_IN_MEMORY_BYTES = 2 << 20  # files up to this size are parsed from memory (one read)

#: Uncompressed little-endian transfer syntaxes, whose frames are read straight from the file bytes.
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@contextlib.contextmanager
def lenient_reading() -> Iterator[None]:
    """Read real files as they come: pydicom validation of values on read is off inside the block.

    Archives hold UIDs with leading zeros, over-long DS strings and the like; they do not make the image
    unreadable. (It switches a pydicom-wide setting for the duration of the block.)
    """
    settings = pydicom.config.settings
    old = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = old


@dataclass
class Frame:
    """One 2D image: a single-frame file (``index`` None) or frame ``index`` (0-based) of a multi-frame one."""

    path: Path
    dataset: Dataset
    index: int | None = None
    per_frame: Dataset | None = None
    shared: Dataset | None = None

    def attr(self, sequence: str, keyword: str, default=None):
        """``keyword`` from the frame's functional group ``sequence`` (per-frame, then shared), else the top level."""
        for group in (self.per_frame, self.shared):
            if group is not None and sequence in group:
                seq = group[sequence].value
                if len(seq) and keyword in seq[0] and seq[0][keyword].value not in (None, ""):
                    return seq[0][keyword].value
        value = self.dataset.get(keyword)
        return default if value in (None, "") else value

    @property
    def label(self) -> str:
        """The file name, with the frame number (1-based) for a multi-frame file."""
        return self.path.name if self.index is None else f"{self.path.name} frame {self.index + 1}"

    def ipp(self):
        return self.attr("PlanePositionSequence", "ImagePositionPatient")

    def iop(self):
        return self.attr("PlaneOrientationSequence", "ImageOrientationPatient")

    def pixel_spacing(self):
        return self.attr("PixelMeasuresSequence", "PixelSpacing")

    def rescale(self) -> tuple[float, float]:
        """(slope, intercept) of the Modality LUT / Pixel Value Transformation; (1, 0) when absent.

        :class:`InputError` naming the file and the tag for a value that is not one finite number, and for
        a slope of 0 (every voxel would read as the intercept)."""
        slope = _one_number(self, "RescaleSlope", "(0028,1053)", 1.0)
        intercept = _one_number(self, "RescaleIntercept", "(0028,1052)", 0.0)
        if slope == 0.0:
            raise InputError(f"RescaleSlope (0028,1053) is 0 in {self.label}: every voxel would read as the "
                             "intercept", path=self.path)
        return slope, intercept


def _one_number(frame: Frame, keyword: str, tag: str, default: float) -> float:
    value = frame.attr("PixelValueTransformationSequence", keyword, default)
    if isinstance(value, (list, tuple, MultiValue)):
        raise InputError(f"{keyword} {tag} holds {len(value)} values in {frame.label}; one number expected",
                         path=frame.path)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{keyword} {tag} is {str(value)[:40]!r} in {frame.label}: not a number",
                         path=frame.path) from None
    if not math.isfinite(number):
        raise InputError(f"{keyword} {tag} is {number} in {frame.label}: not a finite number", path=frame.path)
    return number


def is_dicom_input(path: str | os.PathLike) -> bool:
    """True for what :func:`find_series` reads: a folder, a DICOMDIR, or a file with the DICOM marker."""
    path = Path(path)
    if path.is_dir():
        return True
    if not path.is_file():
        return False
    if path.name.upper() == "DICOMDIR" or path.suffix.lower() in (".dcm", ".dicom"):
        return True
    return _has_dicom_marker(path)


def _has_dicom_marker(path: Path) -> bool:
    """True when the file has the DICOM preamble marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_header(path: Path, notes: list[str]) -> Dataset | None:
    """The file's dataset with its pixel data left on disk; None (with a note) when it is not DICOM, or a
    link that leads nowhere (dangling, looping)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        notes.append(f"skipped {path.name}: {exc.strerror or exc} (a broken or looping link?)")
        return None
    if size == 0:
        notes.append(f"skipped empty file {path.name}")
        return None
    try:
        # defer_size: pixel data (and other big values) stay on disk until needed. A small file is parsed
        # from memory (one read instead of many small ones); its deferred values are read from the path.
        if size <= _IN_MEMORY_BYTES:
            ds = pydicom.dcmread(io.BytesIO(path.read_bytes()), defer_size="4 KB")
            ds.buffer, ds.filename, ds.fileobj_type = None, str(path), open  # drop the bytes, keep the path
            ds.timestamp = path.stat().st_mtime
        else:
            ds = pydicom.dcmread(path, defer_size="4 KB")
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            ds = pydicom.dcmread(path)  # a deflated stream cannot be read from an offset later: read it whole
        return ds
    except InvalidDicomError:
        notes.append(f"skipped non-DICOM file {path.name}")
        return None
    except Exception as exc:  # pydicom raises many types on damaged files
        if _has_dicom_marker(path):
            raise InputError(f"damaged DICOM file ({type(exc).__name__}: {exc})", path=path) from exc
        notes.append(f"skipped non-DICOM file {path.name}")
        return None


def _declared_frames(path: Path, ds: Dataset) -> int:
    """NumberOfFrames, checked before any frame is made: one whole number from 1 up to what the file's size
    can hold (a header may declare millions of frames, or a 65535 x 65535 matrix, in a small file; for
    uncompressed data frames x Rows x Columns x bytes must fit in the file)."""
    raw = ds.get("NumberOfFrames", 1)
    if raw is None or str(raw).strip() == "":
        return 1
    try:
        n = int(str(raw).strip())
    except (TypeError, ValueError):
        raise InputError(f"NumberOfFrames (0028,0008) is {str(raw)[:40]!r}: not a whole number", path=path) from None
    if n < 1:
        raise InputError(f"NumberOfFrames (0028,0008) is {n}: at least 1 expected", path=path)
    try:
        size = path.stat().st_size
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        bits, spp = int(ds.get("BitsAllocated", 8) or 8), int(ds.get("SamplesPerPixel", 1) or 1)
    except (OSError, TypeError, ValueError):
        return n  # judged later with the pixel data
    meta = getattr(ds, "file_meta", None)
    native = meta is None or meta.get("TransferSyntaxUID") in NATIVE_SYNTAXES or meta.get("TransferSyntaxUID") is None
    need = n * rows * cols * spp * bits // 8 if native else n * 8  # compressed: each frame at least an item header
    if need > size:
        if n == 1 and "NumberOfFrames" not in ds:
            raise InputError(f"damaged DICOM file: Rows (0028,0010) {rows} x Columns (0028,0011) {cols} need {need} "
                             f"bytes of pixel data, the whole file has {size}", path=path)
        what = f"{n} frame(s) of {rows}x{cols} need {need} bytes" if native else f"{n} compressed frames need {need} bytes"
        raise InputError(f"NumberOfFrames (0028,0008) {n} with Rows (0028,0010) {rows} and Columns (0028,0011) {cols} "
                         f"is more than the file holds ({what}; the file has {size})", path=path)
    return n


def frames_of(path: Path, ds: Dataset) -> list[Frame]:
    n = _declared_frames(path, ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if n == 1 and per_frame is None and shared is None:
        return [Frame(path, ds)]
    if per_frame is not None and len(per_frame) != n:
        raise InputError(f"NumberOfFrames is {n} but the per-frame functional groups hold {len(per_frame)} items", path=path)
    return [Frame(path, ds, k, per_frame[k] if per_frame is not None else None, shared) for k in range(n)]


def _syntax(ds: Dataset, path: Path, notes: list[str]) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    # No file meta (an old ACR-NEMA style file): the syntax pydicom read the dataset with.
    implicit, little = ds.original_encoding
    if not little:
        raise InputError("no Transfer Syntax UID in the file meta and big endian data: cannot decode", path=path)
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ts
    notes.append(f"{path.name}: no Transfer Syntax UID in the file meta; read as {ts.name}")
    return ts


def check_decodable(frames: list[Frame], notes: list[str]) -> None:
    """Refuse before reading any voxel when a file's pixel data cannot be decoded here."""
    from pydicom.pixels import get_decoder

    for f in frames:  # rescale values judged before any voxel is read
        f.rescale()
    seen = set()
    for f in frames:
        if id(f.dataset) in seen:
            continue
        seen.add(id(f.dataset))
        ds = f.dataset
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputError(
                f"expected a greyscale image, SamplesPerPixel is {ds.SamplesPerPixel} "
                f"({ds.get('PhotometricInterpretation', '?')})",
                path=f.path,
            )
        image_type = ds.get("ImageType") or []
        if "MOSAIC" in [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]:
            raise InputError(
                "Siemens mosaic (the slices of a volume tiled in one image) is not read here; "
                "convert it with dcm2niix first",
                path=f.path,
            )
        ts = _syntax(ds, f.path, notes)
        if ts in NATIVE_SYNTAXES:
            continue
        try:
            decoder = get_decoder(ts)
        except NotImplementedError as exc:
            raise InputError(f"pixel data in transfer syntax '{ts.name}' ({ts}) cannot be decoded: no decoder exists for it", path=f.path) from exc
        if not decoder.is_available:
            raise InputError(
                f"pixel data in transfer syntax '{ts.name}' ({ts}) cannot be decoded: install one of "
                f"{'; '.join(decoder.missing_dependencies)}",
                path=f.path,
            )
