"""Streaming output: finished slices go to the file as the inferer makes them.

:class:`NiftiSliceWriter` is the NIfTI twin of :class:`monai_sr.io.dicom_writer.DerivedSeriesWriter`
(same ``with ... as w: w.write_slice(k, plane)`` use): the header goes first, the voxels into a
``np.memmap`` of the file (NIfTI stores x fastest, so slice ``k`` along axis 2 is one contiguous run),
then the file is gzip-compressed in chunks for ``.nii.gz`` and renamed onto the target - never a partial
output, and never the whole float volume in memory.

:func:`stream_planes` runs an inferer's stream through a per-plane post-processing (e.g. the inverse of
the intensity normalisation).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_sr import geometry
from monai_sr.errors import OutputError
from monai_sr.io.atomic import atomic_output

__all__ = ["NiftiSliceWriter", "stream_planes"]


def stream_planes(
    planes: Iterator[tuple[int, np.ndarray]], post: Callable[[np.ndarray], np.ndarray] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, post(plane))`` for every ``(k, plane)`` of ``planes`` (an inferer's :meth:`stream`)."""
    for k, plane in planes:
        yield k, (post(plane) if post is not None else plane)


class NiftiSliceWriter:
    """Write a float32 NIfTI-1 volume slice by slice along axis 2, atomically.

    Args:
        path: ``.nii`` or ``.nii.gz`` target; must not exist unless ``overwrite``.
        affine: 4x4 RAS affine of the volume (into sform and qform, code 1).
        shape: ``(X, Y, Z)``.
        overwrite: replace an existing file, only once the new one is complete.

    Every slice ``0 .. Z-1`` must be written once before the block ends; otherwise OutputError and
    nothing is left behind.

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
        return self

    def write_slice(self, k: int, plane: np.ndarray) -> None:
        """Slice ``k`` (float ``(X, Y)``)."""
        if self._stack is None:
            raise OutputError("write_slice outside the 'with' block", path=self.path)
        plane = np.asarray(plane)
        if plane.shape != self.shape[:2]:
            raise OutputError(f"slice {k} has shape {plane.shape}, expected {self.shape[:2]}", path=self.path)
        if not 0 <= k < self.shape[2]:
            raise OutputError(f"slice index {k} outside 0..{self.shape[2] - 1}", path=self.path)
        self._data[:, :, k] = plane
        self._done[k] = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        with stack:  # atomic_output: renames onto the target on success, removes the temporary otherwise
            self._data.flush()
            del self._data
            if exc is not None:
                raise exc
            missing = np.flatnonzero(~self._done)
            if missing.size:
                raise OutputError(
                    f"{missing.size} slice(s) never written (first {missing[0]}); nothing was written", path=self.path
                )
            if self._raw != self._tmp:
                with open(self._raw, "rb") as src, gzip.open(self._tmp, "wb", compresslevel=1) as dst:
                    shutil.copyfileobj(src, dst, length=16 * 2**20)
                self._raw.unlink()
        return False
