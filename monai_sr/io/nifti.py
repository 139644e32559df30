"""NIfTI in and out through MONAI's NibabelReader and nibabel, with the checks DESIGN.md asks for.

:class:`NiftiSliceWriter` is the NIfTI twin of :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter`
(same ``with ... as w: w.write_slice(k, plane)`` use): the header goes first, the voxels into a
``np.memmap`` of the file (NIfTI stores x fastest, so slice ``k`` along axis 2 is one contiguous run),
then the file is gzip-compressed in chunks for ``.nii.gz`` and renamed onto the target - never a partial
output, and never the whole float volume in memory.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError, OutputError
from monai_sr.io.atomic import atomic_output, pause_point

__all__ = [
    "NIFTI_SUFFIXES", "is_nifti_path", "quiet_nibabel", "check_nifti_shape", "check_nifti_voxels", "nifti_affine",
    "check_finite",
    "non_finite_where", "NonFiniteError", "load_nifti", "save_nifti",
    "NiftiSliceWriter",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when the name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@contextmanager
def quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's own stderr notes on headers it mends as it reads (its ``nibabel.global`` logger
    prints through its own handler); what matters of them is judged by :func:`nifti_affine`."""
    from nibabel.imageglobals import logger

    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def nifti_affine(img: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> np.ndarray:
    """The RAS affine of a loaded NIfTI image, checked; :class:`GeometryError` naming ``path`` otherwise.

    nibabel mends some headers silently as it loads them (a zero pixdim becomes 1 mm), so the header is
    read again as stored: without an sform (code 0) the voxel size comes from pixdim[1..3], which must
    then be finite and positive; the affine in use (sform, else qform, else pixdim) must be finite and
    not singular. Refused rather than guessed (DESIGN.md: no silent identity fallback).
    """
    from nibabel.openers import ImageOpener

    header = img.header
    try:
        with ImageOpener(str(path)) as f:
            raw = type(header).from_fileobj(f, check=False)
    except Exception:  # not a single-file NIfTI header (e.g. a pair): nibabel's view stands
        raw = header
    source = "sform" if int(raw.get("sform_code", 0)) > 0 else "qform" if int(raw.get("qform_code", 0)) > 0 else "pixdim"
    if source != "sform" and "pixdim" in raw:
        zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
        if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
            raise GeometryError(
                f"voxel size pixdim[1..3] = {tuple(float(z) for z in zooms)} is zero, negative or not a number and no "
                "sform gives the geometry; refused rather than guessed", path=path)
    try:
        return geometry.check_affine(np.asarray(img.affine, dtype=np.float64), orthogonal=False)
    except GeometryError as exc:
        raise GeometryError(f"bad geometry in the {source}: {exc.cause}", path=path) from None


class NonFiniteError(InputError):
    """NaN/Inf voxels, refused; ``where`` is the count and the place (``"2 NaN/Inf voxel(s) in slice 3 (first at
    voxel (1, 2, 3))"``), so a caller (``validate``) can give its own reason."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, where: str = "") -> None:
        super().__init__(message, path=path)
        self.where = where


def non_finite_where(block: np.ndarray, first_slice: int = 0) -> str | None:
    """``"<n> NaN/Inf voxel(s) in slice(s) ... (first at voxel (i, j, k))"`` for ``block`` (``(X, Y, n)``, slices
    ``first_slice ..``), or None when every voxel is finite."""
    finite = np.isfinite(block)
    if finite.all():
        return None
    bad = np.argwhere(~finite)
    first = tuple(int(v) for v in bad[0])
    first = (*first[:2], first[2] + first_slice) if len(first) == 3 else first
    n_slices = block.shape[2] if block.ndim == 3 else 1
    where = f"slices {first_slice}..{first_slice + n_slices - 1}" if n_slices > 1 else f"slice {first_slice}"
    return f"{len(bad)} NaN/Inf voxel(s) in {where} (first at voxel {first})"


def check_finite(block: np.ndarray, path: str | os.PathLike, first_slice: int = 0) -> np.ndarray:
    """``block`` (``(X, Y, n)``, slices ``first_slice ..``) when every voxel is finite; else
    :class:`InputError` naming ``path`` with the count of NaN/Inf voxels and the first one. They are
    refused, not masked: a NaN spreads through a network to a whole neighbourhood of the output."""
    where = non_finite_where(block, first_slice)
    if where is not None:
        raise NonFiniteError(f"{where}; refused: they would spread through the network. Replace them (e.g. by 0) "
                             "and run again", path=path, where=where)
    return block


def load_nifti(path: str | os.PathLike) -> MetaTensor:
    """Read a 3D NIfTI volume as a channel-first float32 MetaTensor ``(1, X, Y, Z)`` with its RAS affine.

    A trailing singleton 4th dimension is dropped; a 2D image is one slice, ``(1, X, Y, 1)``, with the
    header's 4x4 affine (its third column from pixdim[3], the slice thickness); several volumes are
    refused with an :class:`InputError` naming the file.
    """
    from monai.transforms import LoadImage  # heavy import, only when reading

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        with quiet_nibabel():  # nibabel's notes on headers it mends; nifti_affine judges the header
            img = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=False, dtype=np.float32)(str(path))
    except Exception as exc:  # nibabel raises many types on damaged files
        raise InputError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from exc
    check_nifti_shape(tuple(img.shape), path)
    if img.ndim == 4:
        img = img[..., 0]
    with quiet_nibabel():
        affine = nifti_affine(nib.load(str(path)), path)  # the header as stored (MONAI's affine is RAS, the same one)
    if img.ndim == 2:  # MONAI gives a 2D image a 3x3 affine: keep the header's 4x4 one, as for one slice of a volume
        img = MetaTensor(img.as_tensor()[..., None], meta={**img.meta, "affine": torch.as_tensor(affine),
                                                             "original_affine": affine.copy(),
                                                             "spatial_shape": np.asarray((*img.shape, 1))})
    geometry.check_affine(img.affine.numpy(), orthogonal=False)
    check_finite(img.numpy(), path)
    return img.unsqueeze(0)


def check_nifti_shape(shape: tuple[int, ...], path: str | os.PathLike) -> tuple[int, int, int]:
    """The ``(X, Y, Z)`` of an image of ``shape`` (a trailing singleton 4th dimension dropped; a 2D image
    is one slice, ``Z = 1``); several volumes, and fewer than two or more than four dimensions, are an
    :class:`InputError` naming ``path``."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"expected a 3D volume, got an image of shape {shape}", path=path)
    return shape  # type: ignore[return-value]


#: The most a deflate stream expands (zlib's bound, about 1032:1): what a ``.nii.gz`` of ``n`` bytes can hold.
DEFLATE_MAX_RATIO = 1032


def check_nifti_voxels(img: nib.spatialimages.SpatialImage, path: str | os.PathLike) -> None:
    """Refuse, before any voxel is read or allocated, a NIfTI whose voxels are not real numbers (complex,
    RGB) or whose header declares more voxel bytes than the file can hold: an uncompressed file must hold
    ``vox_offset + prod(dim) * bytes per voxel``, a gzip file of ``n`` bytes decompresses to at most
    :data:`DEFLATE_MAX_RATIO` ``* n``. :class:`InputError` naming ``path``, the header fields and the sizes."""
    header = img.header
    dtype = header.get_data_dtype()
    code = int(header["datatype"]) if "datatype" in header else None
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(f"voxel type {dtype.name if dtype.fields is None else 'RGB'} (datatype {code}) is not a "
                         "real number type: complex and RGB images are not read", path=path)
    shape = tuple(int(v) for v in img.shape)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    offset = int(getattr(img.dataobj, "offset", 0))  # the header as read (nibabel's copy may say 0)
    size = os.stat(path).st_size
    dims = "x".join(str(v) for v in shape)
    if str(path).lower().endswith(".gz"):
        if nbytes > DEFLATE_MAX_RATIO * size:
            raise InputError(f"header dim declares {dims} {dtype.name} voxels ({nbytes} bytes), more than a gzip file of "
                             f"{size} bytes can hold (deflate expands at most {DEFLATE_MAX_RATIO}:1)", path=path)
    elif offset + nbytes > size:
        raise InputError(f"header dim declares {dims} {dtype.name} voxels ({nbytes} bytes from vox_offset {offset}), "
                         f"more than the file holds ({size} bytes)", path=path)


def save_nifti(image: MetaTensor, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a channel-first ``(1, X, Y, Z)`` MetaTensor as NIfTI-1 with its RAS affine, atomically.

    The affine goes into both sform and qform (code 1, scanner); voxels are stored as float32.
    """
    path = Path(path)
    affine = geometry.check_affine(np.asarray(image.affine, dtype=np.float64), orthogonal=False)
    data = np.asarray(image.detach().cpu().numpy()[0], dtype=np.float32)
    nii = nib.Nifti1Image(data, affine)
    nii.set_sform(affine, code=1)
    nii.set_qform(affine, code=1)
    nii.header.set_xyzt_units("mm", "sec")
    with atomic_output(path, is_dir=False, overwrite=overwrite) as tmp:
        nib.save(nii, str(tmp))
    return path


def _gzip_open(path: Path):
    """A gzip file for writing at level 1, as nibabel writes ``.nii.gz``. ISA-L's deflate (``isal``, a
    dependency) when installed: the same format, about ten times faster than zlib on float32 volumes
    (0.2 s against 2.7 s for 512 x 512 x 100 on this project's 2-core machine), which matters because a
    2-core machine has no spare core to hide zlib behind the network; zlib otherwise."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is in install_requires; a stripped environment still writes
        return gzip.open(path, "wb", compresslevel=1)
    return igzip.open(path, "wb", compresslevel=1)


class NiftiSliceWriter:
    """Write a float32 NIfTI-1 volume slice by slice along axis 2, atomically.

    Args:
        path: ``.nii`` or ``.nii.gz`` target; must not exist unless ``overwrite``.
        affine: 4x4 RAS affine of the volume (into sform and qform, code 1).
        shape: ``(X, Y, Z)``.
        overwrite: replace an existing file, only once the new one is complete.

    Every slice ``0 .. Z-1`` must be written once before the block ends; otherwise OutputError and
    nothing is left behind.

    Slices go into an uncompressed temporary file (any order). For ``.nii.gz`` a background thread
    gzips (level 1, as nibabel; ISA-L's deflate, see :func:`_gzip_open`) the leading run of written
    slices while the caller computes the next ones (a NIfTI-1 volume is Fortran-ordered, so slice ``k``
    is one contiguous block and the file is its slices in order): deflate releases the GIL, so the
    compression of a volume written in slice order costs little more than that of its last slab.

    Examples::

        with NiftiSliceWriter("out.nii.gz", affine=geo.affine, shape=geo.shape[1:]) as w:
            for k, plane in inferer.stream(volume, net):
                w.write_slice(k, plane)
    """

    def __init__(
        self, path: str | os.PathLike, *, affine: np.ndarray, shape: Sequence[int], overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        self.affine = geometry.check_affine(np.asarray(affine, dtype=np.float64), orthogonal=False)
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise OutputError(f"expected a 3D shape (X, Y, Z), got {self.shape}", path=path)
        self.overwrite = overwrite
        self._stack: ExitStack | None = None
        self._done = np.zeros(self.shape[2], dtype=bool)

    def __enter__(self) -> NiftiSliceWriter:
        self._stack = ExitStack()
        self._tmp = self._stack.enter_context(atomic_output(self.path, is_dir=False, overwrite=self.overwrite))
        gz = self.path.name.lower().endswith(".gz")
        self._raw = self._tmp.with_name(self._tmp.name[:-3]) if gz else self._tmp
        hdr = nib.Nifti1Header()
        hdr.set_data_shape(self.shape)
        hdr.set_data_dtype(np.float32)
        hdr.set_sform(self.affine, code=1)
        hdr.set_qform(self.affine, code=1)
        hdr.set_xyzt_units("mm", "sec")
        offset = 352  # header (348) + the 4-byte extension flag, the NIfTI-1 single-file layout
        hdr["vox_offset"] = offset
        with open(self._raw, "wb") as f:
            hdr.write_to(f)
            f.write(b"\0" * (offset - f.tell()))
            f.truncate(offset + 4 * int(np.prod(self.shape)))
        self._data = np.memmap(self._raw, dtype="<f4", mode="r+", offset=offset, shape=self.shape, order="F")
        self._compressor = None
        if self._raw != self._tmp:
            self._cond = threading.Condition()
            self._abort, self._error = False, None
            self._compressor = threading.Thread(target=self._compress, args=(offset,), name="nifti-gzip", daemon=True)
            self._compressor.start()
        return self

    def _compress(self, offset: int) -> None:
        """Background thread: gzip the header and every slice, in order, as soon as it is written."""
        x, y, z = self.shape
        try:
            planes = np.memmap(self._raw, dtype=np.uint8, mode="r", offset=offset, shape=(z, 4 * x * y))
            with open(self._raw, "rb") as src, _gzip_open(self._tmp) as dst:
                dst.write(src.read(offset))
                k = 0
                while k < z:
                    with self._cond:
                        self._cond.wait_for(lambda: self._abort or self._done[k])
                        if self._abort:
                            return
                        j = k
                        while j < z and self._done[j]:
                            j += 1
                    dst.write(planes[k:j])
                    k = j
        except BaseException as exc:  # re-raised in the caller's thread by __exit__
            self._error = exc

    def write_slice(self, k: int, plane: np.ndarray) -> None:
        """Slice ``k`` (float ``(X, Y)``)."""
        if self._stack is None:
            raise OutputError("write_slice outside the 'with' block", path=self.path)
        plane = np.asarray(plane)
        if plane.shape != self.shape[:2]:
            raise OutputError(f"slice {k} has shape {plane.shape}, expected {self.shape[:2]}", path=self.path)
        if not 0 <= k < self.shape[2]:
            raise OutputError(f"slice index {k} outside 0..{self.shape[2] - 1}", path=self.path)
        first = not self._done.any()
        self._data[:, :, k] = plane
        if self._compressor is not None:
            with self._cond:
                self._done[k] = True
                self._cond.notify()
        else:
            self._done[k] = True
        if first:
            pause_point("writing")  # the tests' kill -9 moment (no effect without $MONAI_SR_TEST_PAUSE)

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        with stack:  # atomic_output: renames onto the target on success, removes the temporary otherwise
            missing = np.flatnonzero(~self._done)
            if self._compressor is not None:
                if exc is not None or missing.size:
                    with self._cond:
                        self._abort = True
                        self._cond.notify()
                self._compressor.join()
            else:
                self._data.flush()
            del self._data
            if exc is not None:
                raise exc
            if missing.size:
                raise OutputError(
                    f"{missing.size} slice(s) never written (first {missing[0]}); nothing was written", path=self.path
                )
            if self._compressor is not None:
                if self._error is not None:
                    raise OutputError(f"cannot write the compressed file ({self._error})", path=self.path) from self._error
                self._raw.unlink()
        return False
