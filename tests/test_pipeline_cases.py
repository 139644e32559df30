"""enhance_cases (a folder of NIfTI files and DICOM series folders) and enhance's adapt hook."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import tree_digest

from monai_sr import geometry
from monai_sr.errors import InputError, OutputError
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.pipeline import case_output, enhance, enhance_cases, find_cases
from monai_sr.transforms.intensity import robust_max


class Upsample(torch.nn.Module):
    scale = (2, 2)

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


@pytest.fixture
def cases(tmp_path, small_series):
    root = tmp_path / "cases"
    root.mkdir()
    shutil.copytree(small_series, root / "patient_a")
    vol = load_dicom_series(small_series)
    nib.save(nib.Nifti1Image(vol[0].numpy(), vol.affine.numpy()), root / "vol_b.nii.gz")
    (root / "notes.txt").write_text("not a case")
    return root


def test_find_cases(cases, small_series):
    assert [p.name for p in find_cases(cases)] == ["patient_a", "vol_b.nii.gz"]
    assert find_cases(small_series) == [small_series]  # a series folder is one case
    assert find_cases(cases / "vol_b.nii.gz") == [cases / "vol_b.nii.gz"]
    empty = cases / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no cases") as err:
        find_cases(empty)
    assert "empty" in str(err.value)


def test_case_output_names(tmp_path):
    assert case_output(tmp_path / "x.nii.gz", tmp_path / "o", "auto").name == "x.nii.gz"
    assert case_output(tmp_path / "ser", tmp_path / "o", "auto").name == "ser"
    assert case_output(tmp_path / "ser", tmp_path / "o", "nifti").name == "ser.nii.gz"
    with pytest.raises(OutputError, match="DICOM case"):
        case_output(tmp_path / "x.nii", tmp_path / "o", "dicom")


def test_enhance_cases_writes_every_case(cases, tmp_path):
    out = tmp_path / "out"
    results = enhance_cases(cases, out, network=Upsample(), output_format="auto")
    assert [r.output for r in results] == [str(out / "patient_a"), str(out / "vol_b.nii.gz")]
    src = load_dicom_series(cases / "patient_a")
    expected = geometry.scaled_affine(src.affine.numpy(), (2, 2, 1))
    np.testing.assert_allclose(load_dicom_series(out / "patient_a").affine.numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(nib.load(out / "vol_b.nii.gz").affine, expected, atol=1e-4)


def test_dicom_format_for_a_nifti_case_fails_before_any_work(cases, tmp_path):
    before = tree_digest(cases)
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="DICOM case"):
        enhance_cases(cases, out, network=Upsample(), output_format="dicom")
    assert not out.exists() and tree_digest(cases) == before


def test_adapt_sees_the_normalised_volume_and_its_network_is_used(small_series, tmp_path):
    seen = {}
    src = load_dicom_series(small_series)

    class Doubler(torch.nn.Module):
        scale = (2, 2)

        def forward(self, x):
            return 2 * Upsample()(x)

    def adapt(image, network):
        seen["shape"], seen["max"] = tuple(image.shape), robust_max(image)
        seen["affine"] = image.affine.numpy()
        return Doubler()

    base = enhance(small_series, tmp_path / "a.nii.gz", network=Upsample())
    enhance(small_series, tmp_path / "b.nii.gz", network=Upsample(), adapt=adapt)
    assert seen["shape"] == tuple(src.shape) and seen["max"] == pytest.approx(1.0, rel=0.02)
    np.testing.assert_allclose(seen["affine"], src.affine.numpy())
    a, b = nib.load(tmp_path / "a.nii.gz").get_fdata(), nib.load(tmp_path / "b.nii.gz").get_fdata()
    np.testing.assert_allclose(b, 2 * a, rtol=1e-4, atol=1e-3)
    assert base.output_shape == tuple(2 * n if i < 2 else n for i, n in enumerate(src.shape[1:]))


def test_notes_of_the_adapt_hook_reach_the_result(small_series, tmp_path):
    def adapt(image, network):
        image.meta["monai_sr_notes"].append("fitted for 0 steps")
        return network

    res = enhance(small_series, tmp_path / "n.nii.gz", network=Upsample(), adapt=adapt)
    assert res.notes[-1] == "fitted for 0 steps" and "fitted for 0 steps" in res.summary()


def test_default_derivation_names_the_operation(small_series, tmp_path):
    import pydicom

    class Same(torch.nn.Module):
        scale = (1, 1)

        def forward(self, x):
            return x

    res = enhance(small_series, tmp_path / "same", network=Same())
    ds = pydicom.dcmread(res.files[0], stop_before_pixels=True)
    assert ds.DerivationDescription.startswith("enhancement (same grid) (Same,")
    res = enhance(small_series, tmp_path / "up", network=Upsample())
    assert pydicom.dcmread(res.files[0], stop_before_pixels=True).DerivationDescription.startswith("2x2x1 super-resolution")
