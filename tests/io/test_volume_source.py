"""VolumeSource: blocks read on demand equal the whole-volume loaders, for DICOM and NIfTI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_sr.errors import InputError
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.nifti import load_nifti
from monai_sr.io.volume_source import open_volume


def _check_blocks(source, whole):
    n = source.shape[2]
    assert tuple(whole.shape[1:]) == source.shape
    np.testing.assert_allclose(source.affine, np.asarray(whole.affine), atol=0)
    for a, b in [(0, 1), (1, min(n, 4)), (n - 2, n), (0, n)]:
        np.testing.assert_array_equal(source.read(a, b), whole[0, :, :, a:b].numpy())
    stand_in = source.stand_in()
    assert tuple(stand_in.shape) == (1, *source.shape) and stand_in.as_tensor().stride() == (0, 0, 0, 0)


def test_dicom_blocks_equal_the_reader(quirky_series):
    whole = load_dicom_series(quirky_series)
    source = open_volume(quirky_series)
    _check_blocks(source, whole)
    loaded = source.load()
    np.testing.assert_array_equal(loaded.numpy(), whole.numpy())
    assert loaded.meta["dicom_headers"] == whole.meta["dicom_headers"]
    assert loaded.meta["monai_sr_notes"] == whole.meta["monai_sr_notes"]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_blocks_equal_the_reader(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(7, 6, 9)).astype(np.int16)
    affine = np.array([[0, -0.9, 0, 10], [1.1, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]], float)
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(0.5, 3.0)  # scaling applied by both paths
    path = tmp_path / f"v{suffix}"
    nib.save(img, path)
    whole = load_nifti(path)
    source = open_volume(path)
    _check_blocks(source, whole)
    np.testing.assert_allclose(source.read(0, 9), data * 0.5 + 3.0)


def test_nifti_trailing_singleton_and_2d(tmp_path):
    path = tmp_path / "v4.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), path)
    assert open_volume(path).read(2, 4).shape == (4, 5, 2)
    flat = tmp_path / "flat.nii"
    pixels = np.arange(20, dtype=np.float32).reshape(4, 5)
    nib.save(nib.Nifti1Image(pixels, np.diag([0.5, 0.6, 4.0, 1.0])), flat)
    source = open_volume(flat)  # a 2D image is one slice
    assert source.shape == (4, 5, 1)
    np.testing.assert_array_equal(source.read(0, 1)[:, :, 0], pixels)
    np.testing.assert_array_equal(source.load()[0, :, :, 0].numpy(), pixels)
    np.testing.assert_allclose(np.asarray(source.load().affine), np.diag([0.5, 0.6, 4.0, 1.0]))
    five = tmp_path / "five.nii"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1, 2), np.float32), np.eye(4)), five)
    with pytest.raises(InputError, match="3D volume") as err:
        open_volume(five)
    assert "five.nii" in str(err.value)


def test_sample_is_bounded_and_spans_the_volume(quirky_series):
    source = open_volume(quirky_series)
    per_slice = source.shape[0] * source.shape[1]
    s = source.sample(max_voxels=2 * per_slice)
    assert s.shape == (*source.shape[:2], 2)
    np.testing.assert_array_equal(s[:, :, 1], source.read(source.shape[2] - 1, source.shape[2])[:, :, 0])
    assert source.sample().shape == source.shape  # small volume: every slice


def test_read_outside_the_volume_is_refused(quirky_series):
    source = open_volume(quirky_series)
    with pytest.raises(ValueError, match="outside"):
        source.read(0, source.shape[2] + 1)
    assert isinstance(source.stand_in().as_tensor(), torch.Tensor)


def test_preflight_scan_is_handed_on_not_repeated(small_series, tmp_path, monkeypatch):
    from monai_sr.io.dicom import discover
    from monai_sr.io.volume_source import scan_input
    from monai_sr.pipeline import enhance, preflight

    class Upsample(torch.nn.Module):
        scale = (2, 2)

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    scans = []
    real = discover.find_series
    monkeypatch.setattr(discover, "find_series", lambda path: scans.append(path) or real(path))
    scan = scan_input(small_series)
    assert scan.kind == "dicom" and len(scans) == 1
    np.testing.assert_array_equal(open_volume(small_series, scan=scan).load().numpy(), load_dicom_series(small_series).numpy())
    assert len(scans) == 1
    with pytest.raises(ValueError, match="scan given"):
        open_volume(small_series, series="7", scan=scan)

    scans.clear()
    out = tmp_path / "sr.nii.gz"
    checked = preflight(small_series, out)
    assert checked.kind == "nifti" and len(scans) == 1
    enhance(small_series, out, network=Upsample(), checked=checked)
    assert len(scans) == 1  # the CLI's preflight scan, reused by enhance's own checks and its reading
    enhance(small_series, tmp_path / "again.nii.gz", network=Upsample())
    assert len(scans) == 2  # without it: one scan
