"""Fixtures of the bundle tests."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from monai_sr.io.dicom.reader import load_dicom_series


@pytest.fixture
def cases(small_series, tmp_path):
    """A folder of two cases, ``(folder, source)``: the small real DICOM series (2 mm slices, SliceThickness 2)
    as ``series_a/`` and a NIfTI volume of the same voxels as ``volume_b.nii.gz``."""
    folder = tmp_path / "cases"
    shutil.copytree(small_series, folder / "series_a")
    src = load_dicom_series(small_series)
    nib.save(nib.Nifti1Image(src[0].numpy().astype(np.float32), src.affine.numpy()), folder / "volume_b.nii.gz")
    return folder, src
