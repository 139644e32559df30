"""A 3D input volume that is read in blocks of slices along axis 2, for bounded-memory inference.

:func:`open_volume` checks the input and reads its geometry and headers, but no voxels; a streaming
inferer then asks :meth:`VolumeSource.read` for the slices of one block at a time, so the input side
of ``enhance`` holds a block instead of the whole volume (and no whole normalised copy of it). The
voxels and meta are exactly those :func:`monai_sr.pipeline.load_volume` returns whole (tested):

* DICOM: the series is scanned and checked by :func:`monai_sr.io.dicom_reader.scan_folder`; each block
  decodes only its own slices' pixel data (deferred in the headers). A series resampled onto a regular
  grid (``resample=True``) interpolates between neighbours and is read whole once.
* NIfTI: nibabel's array proxy (scaling applied); ``.nii.gz`` is decompressed forward once as the
  blocks run in order, the file kept open.

Array layout ``(X, Y, Z)`` as the loaders return it (channel dimension added by :meth:`stand_in` and
:meth:`load`); the affine in ``meta["affine"]`` is RAS, see :mod:`monai_sr.geometry`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys

from monai_sr import geometry
from monai_sr.errors import InputError

__all__ = ["VolumeSource", "open_volume"]

#: voxels a :meth:`VolumeSource.sample` holds at most (a strided subset of slices).
SAMPLE_VOXELS = 4_000_000


@dataclass
class VolumeSource:
    """A volume of shape ``(X, Y, Z)`` whose slices along axis 2 are read on demand.

    Attributes:
        path: the input file or folder (named in errors).
        shape: ``(X, Y, Z)``.
        meta: MetaTensor meta (``affine`` RAS 4x4 as numpy or torch, source headers for DICOM).
        reader: ``reader(start, stop)`` -> float32 ``(X, Y, stop - start)``.
        whole: a callable returning the whole volume as a channel-first MetaTensor (the loader's own
            result), or None to stack :meth:`read` blocks.
    """

    path: Path
    shape: tuple[int, int, int]
    meta: dict
    reader: Callable[[int, int], np.ndarray]
    whole: Callable[[], MetaTensor] | None = None

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.meta[MetaKeys.AFFINE], dtype=np.float64)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Slices ``start .. stop - 1`` along axis 2, float32 ``(X, Y, stop - start)``."""
        if not 0 <= start < stop <= self.shape[2]:
            raise ValueError(f"slices [{start}, {stop}) outside a volume of {self.shape[2]} slices")
        return self.reader(start, stop)

    def sample(self, max_voxels: int = SAMPLE_VOXELS) -> np.ndarray:
        """Evenly spaced whole slices (all of them when the volume is small) as float32 ``(X, Y, n)``: a
        sample for percentiles (normalisation, display window) that never holds the whole volume."""
        per_slice = self.shape[0] * self.shape[1]
        n = self.shape[2]
        keep = max(1, min(n, max_voxels // max(per_slice, 1)))
        idx = np.unique(np.linspace(0, n - 1, keep).round().astype(int))
        return np.concatenate([self.read(int(k), int(k) + 1) for k in idx], axis=2)

    def stand_in(self) -> MetaTensor:
        """A voxel-less ``(1, X, Y, Z)`` MetaTensor (zero strides) with this volume's meta: the shape,
        affine and meta an inferer needs to plan its output (see ``ScaleAwareInferer.output_geometry``)."""
        return MetaTensor(torch.zeros(1).expand(1, *self.shape), meta=dict(self.meta))

    def load(self) -> MetaTensor:
        """The whole volume, channel-first float32 ``(1, X, Y, Z)`` with its meta."""
        if self.whole is not None:
            return self.whole()
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(self.read(0, self.shape[2])))[None], meta=dict(self.meta))


def _dicom_source(path: Path, series: str | int | None, resample: bool) -> VolumeSource:
    from monai_sr.io.dicom_reader import read_slices, scan_folder, series_meta, series_shape

    scanned = scan_folder(path, series=series, resample=resample)
    meta = series_meta(scanned)
    shape = series_shape(scanned)
    # load_dicom_series' result exactly: the reader's get_data is read_slices(all) + series_meta
    whole = lambda: MetaTensor(torch.from_numpy(read_slices(scanned, 0, shape[2]))[None], meta=dict(meta))  # noqa: E731
    if scanned.grid is not None:  # interpolated between neighbouring slices: read whole, once
        volume = whole()
        return VolumeSource(path, shape, meta, lambda a, b: volume[0, :, :, a:b].numpy(), lambda: volume)
    return VolumeSource(path, shape, meta, lambda a, b: read_slices(scanned, a, b), whole)


def _nifti_source(path: Path) -> VolumeSource:
    import nibabel as nib

    from monai_sr.io.nifti import check_nifti_shape, load_nifti

    try:
        img = nib.load(str(path), keep_file_open=True) if str(path).lower().endswith(".gz") else nib.load(str(path))
        shape = check_nifti_shape(img.shape, path)
        affine = np.asarray(img.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types on damaged files
        raise InputError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from exc
    geometry.check_affine(affine, orthogonal=False)
    proxy = img.dataobj

    def reader(a: int, b: int) -> np.ndarray:
        try:
            block = proxy[:, :, a:b] if len(img.shape) == 3 else proxy[:, :, a:b, 0]
        except Exception as exc:
            raise InputError(f"cannot read NIfTI slices {a}..{b - 1} ({type(exc).__name__}: {exc})", path=path) from exc
        return np.asarray(block, dtype=np.float32)

    meta = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        "filename_or_obj": str(path),
    }
    return VolumeSource(path, shape, meta, reader, lambda: load_nifti(path))


def open_volume(path: str | os.PathLike, *, series: str | int | None = None, resample: bool = False) -> VolumeSource:
    """A :class:`VolumeSource` for a DICOM input (folder, DICOMDIR or file) or a ``.nii``/``.nii.gz``
    file; the same checks and errors as :func:`monai_sr.pipeline.load_volume`, no voxels read yet."""
    from monai_sr.io.dicom_series import is_dicom_input
    from monai_sr.io.nifti import is_nifti_path

    path = Path(path)
    if not is_nifti_path(path) and is_dicom_input(path):
        return _dicom_source(path, series, resample)
    if is_nifti_path(path):
        if not path.is_file():
            raise InputError("no such file", path=path)
        return _nifti_source(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    raise InputError("expected a DICOM series folder or a .nii / .nii.gz file", path=path)
