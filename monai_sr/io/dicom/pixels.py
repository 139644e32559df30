"""Decode a series' pixel data into real values: frame by frame, rescaled, stacked or interpolated.

Uncompressed little-endian frames are read straight from the file bytes (the pixel data stays deferred in
the headers until then); any other transfer syntax goes through pydicom's decoders (pylibjpeg,
pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle), one file at a time. Real values apply the Modality
LUT / Pixel Value Transformation (Rescale Slope / Intercept).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.pixels import apply_rescale

from monai_sr.errors import InputError
from monai_sr.io.dicom.frames import NATIVE_SYNTAXES, Frame, check_pixel_module
from monai_sr.io.dicom.stack import DicomSeries
from monai_sr.io.library_notes import from_file

__all__ = ["frame_values", "stack_pixels"]

_PIXEL_DATA = 0x7FE00010


def _native_frame(frame: Frame) -> np.ndarray | None:
    """Stored values of an uncompressed little-endian frame straight from the file bytes; None if not native."""
    ds = frame.dataset
    ts = ds.file_meta.TransferSyntaxUID
    pixel = frame.pixel or check_pixel_module(frame.path, ds)
    bits = pixel["BitsAllocated"]
    if ts not in NATIVE_SYNTAXES or bits not in (8, 16, 32):
        return None
    signed = pixel["PixelRepresentation"] == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols = pixel["Rows"], pixel["Columns"]
    nbytes = rows * cols * dtype.itemsize
    offset = (frame.index or 0) * nbytes
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if raw.value is not None and not isinstance(raw.value, (bytes, bytearray, memoryview)):
        raise InputError(f"Pixel Data (7FE0,0010) of {frame.label} holds no pixel bytes (value representation "
                         f"{raw.VR})", path=frame.path)
    if isinstance(raw, RawDataElement) and raw.value is None:
        with open(frame.path, "rb") as fh:
            fh.seek(raw.value_tell + offset)
            buf = fh.read(nbytes)
    else:
        buf = bytes(raw.value[offset : offset + nbytes]) if raw.value is not None else b""
    if len(buf) < nbytes:
        raise InputError(f"damaged DICOM file: pixel data of {frame.label} is truncated ({len(buf)} of {nbytes} bytes)", path=frame.path)
    arr = np.frombuffer(buf, dtype=dtype).reshape(rows, cols)
    stored = pixel["BitsStored"]
    if stored < bits:  # high bits are not part of the value: sign-extend or mask, as pydicom does
        shift = bits - stored
        arr = (arr << shift) >> shift if signed else arr & dtype.type((1 << stored) - 1)
    return arr


def _decoder_failure(exc: BaseException) -> bool:
    """True for what a decoder raises on damaged data: an Exception, or the ``PanicException`` of a Rust
    decoder (pylibjpeg-rle, via pyo3), which derives from BaseException; never an interrupt or exit."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _decoded_frame(frame: Frame, cache: dict) -> np.ndarray:
    """Stored values of a frame decoded by pydicom (compressed, big endian, deflated...)."""
    ds = frame.dataset
    arr = cache.get(id(ds))
    if arr is None:
        try:
            arr = ds.pixel_array
        except BaseException as exc:
            if not _decoder_failure(exc):
                raise
            ts = ds.file_meta.TransferSyntaxUID
            raise InputError(
                f"pixel data in transfer syntax '{ts.name}' cannot be decoded ({type(exc).__name__}: {exc})", path=frame.path
            ) from exc
        cache.clear()  # one file at a time: memory stays at one decoded object
        cache[id(ds)] = arr
    if frame.index is None:
        if arr.ndim != 2:
            raise InputError(f"expected one frame per file, pixel data has shape {arr.shape}", path=frame.path)
        return arr
    return arr[frame.index] if arr.ndim == 3 else arr


def frame_values(frame: Frame, cache: dict) -> np.ndarray:
    """Real values (Modality LUT / Pixel Value Transformation applied) of a frame, ``(row, column)``.

    Stored integers come back as they are when there is no rescale (the caller casts them), else float64.
    """
    arr = _native_frame(frame)
    if arr is None:
        with from_file(frame.path):  # what pydicom warns about while decoding names the file
            arr = _decoded_frame(frame, cache)
    ds = frame.dataset
    if frame.index is None and ds.get("ModalityLUTSequence"):  # an empty sequence: no LUT
        try:
            return np.asarray(apply_rescale(arr, ds), dtype=np.float64)
        except Exception as exc:  # a damaged LUT item (descriptor, data)
            raise InputError(f"Modality LUT Sequence (0028,3000) of {frame.label} cannot be applied "
                             f"({type(exc).__name__}: {exc})", path=frame.path) from None
    slope, intercept = frame.rescale()
    if slope == 1.0 and intercept == 0.0:
        return arr
    out = arr.astype(np.float64)
    out *= slope
    out += intercept
    return out


def stack_pixels(series: DicomSeries, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Stack slices ``start .. stop - 1`` (all by default) as float32 ``(column, row, slice)``,
    interpolated onto ``series.grid`` if set (then the whole grid is read; ``start``/``stop`` must be the
    defaults).

    The array is Fortran-ordered: each slice ``[:, :, k]`` is one contiguous block, as it is in the files.
    """
    ds0 = series.frames[0].dataset
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    cache: dict = {}
    if series.grid is None:
        frames = series.frames[start:stop]
        out = np.empty((len(frames), rows, cols), dtype=np.float32)
        for k, frame in enumerate(frames):
            out[k] = frame_values(frame, cache)
        return out.transpose(2, 1, 0)
    if (start, stop) != (0, None):
        raise ValueError("a resampled series is read whole")
    out = np.empty((len(series.grid), rows, cols), dtype=np.float32)
    pos = series.positions
    loaded: dict[int, np.ndarray] = {}  # at most the two neighbours of the current grid slice
    for k, t in enumerate(series.grid):
        hi = int(np.clip(np.searchsorted(pos, t), 1, len(pos) - 1))
        lo = hi - 1
        w = float(np.clip((t - pos[lo]) / (pos[hi] - pos[lo]), 0.0, 1.0))
        for idx in list(loaded):
            if idx not in (lo, hi):
                del loaded[idx]
        for idx in (lo, hi):
            if idx not in loaded:
                loaded[idx] = np.asarray(frame_values(series.frames[idx], cache), dtype=np.float64)
        out[k] = (1.0 - w) * loaded[lo] + w * loaded[hi]
    return out.transpose(2, 1, 0)
