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
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import VR

from monai_sr.errors import InputError

__all__ = [
    "Frame",
    "lenient_reading",
    "is_dicom_input",
    "read_header",
    "frames_of",
    "check_decodable",
    "check_pixel_module",
    "NATIVE_SYNTAXES",
]

_IN_MEMORY_BYTES = 2 << 20  # files up to this size are parsed from memory (one read)

#: Uncompressed little-endian transfer syntaxes, whose frames are read straight from the file bytes.
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@contextlib.contextmanager
def lenient_reading() -> Iterator[None]:
    """Read real files as they come: pydicom validation of values on read is off inside the block, and a
    binary value of the wrong length is kept as bytes.

    Archives hold UIDs with leading zeros, over-long DS strings and the like; they do not make the image
    unreadable. (It switches a pydicom-wide setting for the duration of the block.)
    """
    settings = pydicom.config.settings
    old = settings.reading_validation_mode, pydicom.config.convert_wrong_length_to_UN
    settings.reading_validation_mode = pydicom.config.IGNORE
    # a binary value whose length is no multiple of its VR's size stays bytes (UN) instead of raising
    # wherever it is first used; the checks that read it then name the file and tag
    pydicom.config.convert_wrong_length_to_UN = True
    try:
        yield
    finally:
        settings.reading_validation_mode, pydicom.config.convert_wrong_length_to_UN = old


@dataclass
class Frame:
    """One 2D image: a single-frame file (``index`` None) or frame ``index`` (0-based) of a multi-frame one."""

    path: Path
    dataset: Dataset
    index: int | None = None
    per_frame: Dataset | None = None
    shared: Dataset | None = None
    pixel: dict[str, int] | None = None  # the file's checked Image Pixel attributes (check_pixel_module)

    def group_items(self, sequence: str) -> list[Dataset]:
        """The first item of the frame's functional group ``sequence``: per-frame, then shared (0 to 2 items;
        a damaged group that holds no item is left out)."""
        out = []
        for group in (self.per_frame, self.shared):
            if group is not None and sequence in group:
                try:
                    seq = group[sequence].value
                except Exception as exc:  # a damaged item pydicom cannot turn into a sequence
                    raise InputError(f"{sequence} of {self.label} is damaged ({type(exc).__name__}: {exc})",
                                     path=self.path) from None
                if isinstance(seq, Sequence) and len(seq) and isinstance(seq[0], Dataset):
                    out.append(seq[0])
        return out

    def attr(self, sequence: str, keyword: str, default=None):
        """``keyword`` from the frame's functional group ``sequence`` (per-frame, then shared), else the top level."""
        for item in self.group_items(sequence):
            if keyword in item and item[keyword].value not in (None, ""):
                return item[keyword].value
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
        # A larger one is parsed through _BoundedFile: a damaged length never makes a read allocate more
        # than the file holds.
        if size <= _IN_MEMORY_BYTES:
            ds = pydicom.dcmread(io.BytesIO(path.read_bytes()), defer_size="4 KB")
        else:
            with _BoundedFile(path) as fh:
                ds = pydicom.dcmread(fh, defer_size="4 KB")
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            # a deflated stream cannot be read from an offset later: read it whole (from memory, as above)
            ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
        ds.buffer, ds.filename, ds.fileobj_type = None, str(path), open  # drop the bytes, keep the path
        ds.timestamp = path.stat().st_mtime
        _check_elements(path, ds.file_meta, size)
        _check_elements(path, ds, size)
        return ds
    except InvalidDicomError:
        notes.append(f"skipped non-DICOM file {path.name}")
        return None
    except InputError:
        raise
    except OSError as exc:  # unreadable (permissions, I/O): it may be a slice, so never skipped silently
        raise InputError(f"cannot read this file ({exc.strerror or exc})", path=path) from None
    except Exception as exc:  # pydicom raises many types on damaged files
        if _has_dicom_marker(path):
            raise InputError(f"damaged DICOM file ({type(exc).__name__}: {exc})", path=path) from exc
        notes.append(f"skipped non-DICOM file {path.name}")
        return None


_VRS = frozenset(vr.value for vr in VR)


class _BoundedFile(io.FileIO):
    """A file whose ``read(n)`` asks for no more than what is left in it (a plain file allocates ``n``
    bytes first: a damaged 4 GB length in a header would take 4 GB)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "rb")
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(self._size - self.tell(), 0))
        return super().read(size)


def _check_elements(path: Path, ds: Dataset, size: int, depth: int = 0) -> None:
    """Refuse what would fail or allocate blindly later, when an element is first used: a value
    representation pydicom does not know (at any depth of the sequences, which are parsed here), and a
    value left on disk (deferred) whose declared length runs past the end of the file (reading it back
    would allocate that length first)."""
    sequences = []
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if raw is None:
            continue
        if raw.VR is not None and raw.VR not in _VRS:
            where = "an element" if depth == 0 else "an element inside a sequence item"
            raise InputError(f"damaged DICOM file: {where} {tag} has an unknown value representation {raw.VR!r}",
                             path=path)
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length != 0xFFFFFFFF:
            if raw.value_tell + raw.length > size:
                raise InputError(f"damaged DICOM file: element {tag} declares {raw.length} bytes from offset "
                                 f"{raw.value_tell}, the file has {size}", path=path)
        if raw.VR == "SQ":
            sequences.append(tag)
    # parsed now, after every element beside them is checked (parsing one reads others, e.g. Pixel
    # Representation), as pydicom would on first use; their items are checked the same way
    for tag in sequences if depth < 8 else ():
        for item in ds[tag].value or []:
            if isinstance(item, Dataset):
                _check_elements(path, item, size, depth + 1)


#: Image Pixel attributes every later step reads as one whole number: (keyword, tag, default, lowest,
#: highest). ``None``: required. BitsStored defaults to BitsAllocated and is at most that.
_PIXEL_MODULE = (
    ("Rows", "(0028,0010)", None, 1, 65535),
    ("Columns", "(0028,0011)", None, 1, 65535),
    ("BitsAllocated", "(0028,0100)", None, 1, 64),
    ("BitsStored", "(0028,0101)", "BitsAllocated", 1, "BitsAllocated"),
    ("PixelRepresentation", "(0028,0103)", 0, 0, 1),
    ("SamplesPerPixel", "(0028,0002)", 1, 1, 4),
)


def check_pixel_module(path: Path, ds: Dataset) -> dict[str, int]:
    """The Image Pixel attributes of ``ds`` as whole numbers, checked once when its frames are made, so
    that every later step may read them with ``int()``: each one value in range, BitsAllocated 1 or a
    multiple of 8. :class:`InputError` naming the file and the tag otherwise (missing, several values,
    not a number, out of range)."""
    out: dict[str, int] = {}
    for keyword, tag, default, lo, hi in _PIXEL_MODULE:
        try:
            raw = ds.get(keyword)
        except Exception as exc:  # a value pydicom cannot convert (wrong length for its VR...)
            raise InputError(f"{keyword} {tag} is unreadable ({type(exc).__name__}: {exc})", path=path) from None
        if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
            if default is None:
                raise InputError(f"{keyword} {tag} is missing or empty in an image file", path=path)
            raw = out[default] if isinstance(default, str) else default
        if isinstance(raw, (list, tuple, MultiValue)):
            raise InputError(f"{keyword} {tag} holds {len(raw)} values; one whole number expected", path=path)
        try:
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        except (TypeError, ValueError):
            raise InputError(f"{keyword} {tag} is {str(raw)[:40]!r}: not a whole number", path=path) from None
        top = out[hi] if isinstance(hi, str) else hi
        if not lo <= value <= top:
            raise InputError(f"{keyword} {tag} is {value}: expected {lo} to {top}", path=path)
        if keyword == "BitsAllocated" and value != 1 and value % 8:
            raise InputError(f"BitsAllocated {tag} is {value}: expected 1 or a multiple of 8", path=path)
        out[keyword] = value
    return out


#: The most one byte of compressed pixel data can decode to: RLE codes a run of 128 equal bytes in 2 (64:1);
#: deflate expands at most about 1032:1; JPEG, JPEG-LS and JPEG 2000 have no such bound, so a generous one.
_RLE_RATIO, _DEFLATE_RATIO, _OTHER_RATIO = 64, 1032, 10_000
#: The most one file's pixel data may decode to, as a share of the machine's memory (a peak-memory bound).
_MEMORY_SHARE = 0.25


def _decode_bound(ts: UID | None, size: int) -> tuple[int, str]:
    """The most pixel data of transfer syntax ``ts`` in a file of ``size`` bytes can decode to, and why."""
    from pydicom.uid import RLELossless

    ratio = _RLE_RATIO if ts == RLELossless else _DEFLATE_RATIO if ts == DeflatedExplicitVRLittleEndian else _OTHER_RATIO
    bound, why = ratio * size, f"{size} bytes of {getattr(ts, 'name', ts)} decode to at most {ratio} times that"
    try:
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * _MEMORY_SHARE)
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        memory = bound
    if memory < bound:
        bound, why = memory, f"more than {_MEMORY_SHARE:.0%} of this machine's memory ({memory} bytes)"
    return bound, why


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
    pixel = check_pixel_module(path, ds)
    rows, cols, bits, spp = (pixel[k] for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"))
    try:
        size = path.stat().st_size
    except OSError:
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
    if not native:  # compressed: what the frames decode to, against what the file's bytes can decode to
        decoded = n * rows * cols * spp * max(bits, 8) // 8
        bound, why = _decode_bound(meta.get("TransferSyntaxUID"), size)
        if decoded > bound:
            frames = f"NumberOfFrames (0028,0008) {n} of " if "NumberOfFrames" in ds else ""
            raise InputError(f"{frames}Rows (0028,0010) {rows} x Columns (0028,0011) {cols} would decode to {decoded} "
                             f"bytes: refused before decoding ({why})", path=path)
    return n


def frames_of(path: Path, ds: Dataset) -> list[Frame]:
    """The frames of the image file ``path`` (header ``ds``): its Image Pixel attributes and NumberOfFrames
    checked first (:func:`check_pixel_module`), then one :class:`Frame` per frame."""
    n = _declared_frames(path, ds)
    pixel = check_pixel_module(path, ds)
    per_frame = _group_items(path, ds, "PerFrameFunctionalGroupsSequence", "(5200,9230)")
    shared_seq = _group_items(path, ds, "SharedFunctionalGroupsSequence", "(5200,9229)")
    shared = shared_seq[0] if shared_seq else None
    if n == 1 and per_frame is None and shared is None:
        return [Frame(path, ds, pixel=pixel)]
    if per_frame is not None and len(per_frame) != n:
        raise InputError(f"NumberOfFrames is {n} but the per-frame functional groups hold {len(per_frame)} items", path=path)
    return [Frame(path, ds, k, per_frame[k] if per_frame is not None else None, shared, pixel) for k in range(n)]


def _group_items(path: Path, ds: Dataset, keyword: str, tag: str) -> list[Dataset] | None:
    """The items of a functional groups sequence (None when absent); InputError when it is no sequence."""
    value = ds.get(keyword)
    if value is None:
        return None
    if not isinstance(value, Sequence) or not all(isinstance(item, Dataset) for item in value):
        raise InputError(f"{keyword} {tag} is not a sequence of items", path=path)
    return list(value)


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
    if "TransferSyntaxUID" in ds.file_meta:  # an empty value, possibly of another VR: replaced, not converted
        del ds.file_meta["TransferSyntaxUID"]
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
        pixel = f.pixel or check_pixel_module(f.path, ds)
        if pixel["SamplesPerPixel"] != 1:
            raise InputError(
                f"expected a greyscale image, SamplesPerPixel is {pixel['SamplesPerPixel']} "
                f"({ds.get('PhotometricInterpretation', '?')})",
                path=f.path,
            )
        image_type = ds.get("ImageType") or []
        image_type = image_type if isinstance(image_type, (list, MultiValue)) else [image_type]
        if "MOSAIC" in [str(v).upper() for v in image_type]:
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
