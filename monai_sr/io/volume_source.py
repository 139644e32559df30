"""The one place that decides DICOM or NIfTI, and a 3D input volume read in blocks of slices along axis 2.

:func:`scan_input` decides the kind of an input and, for DICOM, finds its series and chooses one (the
headers are read once, no voxels): ``preflight`` does it before a model is loaded and hands the
:class:`InputScan` on, so ``enhance`` does not scan again. :func:`open_volume` checks the input (from
that scan when given) and reads its geometry and headers, but no voxels; a streaming
inferer then asks :meth:`VolumeSource.read` for the slices of one block at a time, so the input side
of ``enhance`` holds a block instead of the whole volume (and no whole normalised copy of it). The
voxels and meta are exactly those :func:`monai_sr.pipeline.load_volume` returns whole (tested):

* DICOM: the series is scanned by :func:`monai_sr.io.dicom.discover.find_series` and ordered and checked
  by :func:`monai_sr.io.dicom.reader.order_series`; each block
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys

from monai_sr.errors import InputError, MonaiSRError
from monai_sr.io.atomic import pause_point

if TYPE_CHECKING:
    from monai_sr.io.dicom.discover import SeriesCandidate

__all__ = ["InputScan", "VolumeSource", "check_modality", "input_kind", "open_volume", "scan_input"]

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
        block = self.reader(start, stop)
        pause_point("reading")  # the tests' kill -9 moment (no effect without $MONAI_SR_TEST_PAUSE)
        return block

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


@dataclass
class InputScan:
    """What :func:`scan_input` found at ``path``: its kind and, for DICOM, the series under it.

    Attributes:
        path: the input file or folder.
        kind: ``"dicom"`` or ``"nifti"``.
        series: the series choice the scan was checked with (see :func:`open_volume`).
        candidates: DICOM only: every series (or stack) found, headers read, pixel data left on disk.
        notes: DICOM only: the notes of the scan (files skipped, ...).
    """

    path: Path
    kind: str
    series: str | int | None = None
    candidates: list[SeriesCandidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def input_kind(path: str | os.PathLike) -> str | None:
    """``"nifti"`` for a ``.nii``/``.nii.gz`` name, ``"dicom"`` for a folder, DICOMDIR or DICOM file, else
    None; reads at most a file's first 132 bytes."""
    from monai_sr.io.dicom.frames import is_dicom_input
    from monai_sr.io.nifti import is_nifti_path

    if is_nifti_path(path):
        return "nifti"
    return "dicom" if is_dicom_input(path) else None


def scan_input(
    path: str | os.PathLike, *, series: str | int | None = None, scanned: InputScan | None = None
) -> InputScan:
    """Decide the kind of ``path``; for DICOM, find its series and check that ``series`` picks one
    (several series and no choice are refused with their list). No voxels are read. ``scanned``: a scan
    of this ``path`` and ``series`` made before, returned as it is (ValueError when it is of another).

    Raises :class:`InputError` for a path that does not exist or is neither DICOM nor NIfTI, and the
    errors of :func:`~monai_sr.io.dicom.discover.find_series` and
    :func:`~monai_sr.io.dicom.discover.select_series`. A NIfTI file's header is read and checked here
    (shape; geometry, see :func:`~monai_sr.io.nifti.nifti_affine`); its voxels only by :func:`open_volume`.
    """
    path = Path(path)
    if scanned is not None:
        if scanned.path != path or scanned.series != series:
            raise ValueError(
                f"the scan given is of {scanned.path} (series {scanned.series!r}), not of {path} (series {series!r})"
            )
        return scanned
    kind = input_kind(path)
    if kind == "dicom":
        from monai_sr.io.dicom.discover import find_series, select_series

        candidates, notes = find_series(path)
        select_series(candidates, series, path=path)  # several series and no choice: refuse now
        return InputScan(path, kind, series, candidates, notes)
    if kind == "nifti":
        _nifti_source(path)  # the header only: shape and geometry refused here, before any model loads
        return InputScan(path, kind, series)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    raise InputError("expected a DICOM series folder or a .nii / .nii.gz file", path=path)


def check_modality(scan: InputScan, allow: str | None = None, *, output_kind: str | None = None) -> None:
    """Refuse a DICOM series whose Modality is not MR (InputError naming the input, the series and its
    modality): the networks are trained on MR, and the derived series is MR Image Storage. ``allow``
    (e.g. ``"CT"``) is the user's explicit override for that one modality, for a NIfTI output only
    (``output_kind``): a derived DICOM series would claim to be MR. A missing Modality passes."""
    if scan.kind != "dicom" or not scan.candidates:
        return
    from monai_sr.io.dicom.discover import select_series

    chosen = select_series(scan.candidates, scan.series, path=scan.path)
    modality = (chosen.modality or "").strip().upper()
    if not modality or modality == "MR":
        return
    if allow is None or modality != str(allow).strip().upper():
        raise InputError(
            f"series {chosen.selector} is {modality} (Modality), not MR: the networks are trained on MR and the "
            f"derived series is MR Image Storage; refused (--allow-modality {modality} with a .nii/.nii.gz output "
            "to run anyway)", path=scan.path)
    if output_kind == "dicom":
        raise InputError(f"series {chosen.selector} is {modality}: a derived DICOM series would claim to be MR; "
                         "give a .nii / .nii.gz output", path=scan.path)


def _dicom_source(scan: InputScan, resample: bool) -> VolumeSource:
    from monai_sr.io.dicom.reader import order_series, read_slices, series_meta
    from monai_sr.io.dicom.stack import series_shape

    path = scan.path
    scanned = order_series(path, scan.candidates, scan.notes, series=scan.series, resample=resample)
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

    from monai_sr.io.nifti import (check_finite, check_nifti_shape, check_nifti_voxels, load_nifti, nifti_affine,
                                   quiet_nibabel)

    if not path.is_file():
        raise InputError("no such file" if not path.is_dir() else "a folder, not a file: a NIfTI input is one file",
                         path=path)
    if path.stat().st_size == 0:
        raise InputError("empty file: no NIfTI header", path=path)
    try:
        with quiet_nibabel():  # nibabel's notes on headers it mends; nifti_affine judges the header
            img = nib.load(str(path), keep_file_open=True) if str(path).lower().endswith(".gz") else nib.load(str(path))
        shape = check_nifti_shape(img.shape, path)
        check_nifti_voxels(img, path)  # declared sizes against the file's, before any voxel is allocated
        affine = nifti_affine(img, path)  # the header as stored: zero pixdim, NaN or singular affine refused
    except MonaiSRError:
        raise
    except Exception as exc:  # nibabel raises many types on damaged files
        raise InputError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from exc
    proxy = img.dataobj

    def reader(a: int, b: int) -> np.ndarray:
        try:
            ndim = len(img.shape)
            block = proxy[:, :, None] if ndim == 2 else proxy[:, :, a:b] if ndim == 3 else proxy[:, :, a:b, 0]
        except Exception as exc:
            raise InputError(f"cannot read NIfTI slices {a}..{b - 1} ({type(exc).__name__}: {exc})", path=path) from exc
        return check_finite(np.asarray(block, dtype=np.float32), path, a)  # NaN/Inf refused, naming the slices

    meta = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        "filename_or_obj": str(path),
    }
    return VolumeSource(path, shape, meta, reader, lambda: load_nifti(path))


def open_volume(
    path: str | os.PathLike,
    *,
    series: str | int | None = None,
    resample: bool = False,
    scan: InputScan | None = None,
) -> VolumeSource:
    """A :class:`VolumeSource` for a DICOM input (folder, DICOMDIR or file) or a ``.nii``/``.nii.gz``
    file; the same checks and errors as :func:`monai_sr.pipeline.load_volume`, no voxels read yet.

    ``scan``: the :func:`scan_input` of this ``path`` and ``series`` made before (by ``preflight``);
    the input is then not scanned again."""
    path = Path(path)
    scan = scan_input(path, series=series, scanned=scan)
    if scan.kind == "dicom":
        return _dicom_source(scan, resample)
    return _nifti_source(path)
