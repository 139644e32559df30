"""NIfTI in and out through MONAI's NibabelReader and nibabel, with the checks DESIGN.md asks for."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor

from monai_sr import geometry
from monai_sr.errors import InputError
from monai_sr.io.atomic import atomic_output

__all__ = ["NIFTI_SUFFIXES", "is_nifti_path", "check_nifti_shape", "load_nifti", "save_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True when the name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike) -> MetaTensor:
    """Read a 3D NIfTI volume as a channel-first float32 MetaTensor ``(1, X, Y, Z)`` with its RAS affine.

    A trailing singleton 4th dimension is dropped; 2D images and several volumes are refused with an
    :class:`InputError` naming the file.
    """
    from monai.transforms import LoadImage  # heavy import, only when reading

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path)
    try:
        img = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=False, dtype=np.float32)(str(path))
    except Exception as exc:  # nibabel raises many types on damaged files
        raise InputError(f"cannot read NIfTI ({type(exc).__name__}: {exc})", path=path) from exc
    check_nifti_shape(tuple(img.shape), path)
    if img.ndim == 4:
        img = img[..., 0]
    geometry.check_affine(img.affine.numpy(), orthogonal=False)
    return img.unsqueeze(0)


def check_nifti_shape(shape: tuple[int, ...], path: str | os.PathLike) -> tuple[int, int, int]:
    """The ``(X, Y, Z)`` of an image of ``shape`` (a trailing singleton 4th dimension dropped); 2D images
    and several volumes are an :class:`InputError` naming ``path``."""
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"expected a 3D volume, got an image of shape {shape}", path=path)
    return shape  # type: ignore[return-value]


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
