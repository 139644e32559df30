"""``monai-sr series`` lists the series of a folder; ``enhance --series`` picks one and refuses without it."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from helpers import run_cli, tree_digest

from monai_sr.errors import InputError
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.scanner_series import write_original_mr_series
from monai_sr.pipeline import load_volume, preflight


@pytest.fixture(scope="module")
def two_series(tmp_path_factory, small_series):
    """A study folder with the small oblique series (number 3) and a sagittal 2D one (number 7), in sub-folders."""
    root = tmp_path_factory.mktemp("study") / "exam"
    root.mkdir()
    src = load_dicom_series(small_series)
    shutil.copytree(small_series, root / "s3")
    sag = np.zeros((4, 4))
    sag[:3, :3] = [[0, 0, -1.2], [1.1, 0, 0], [0, -1.1, 0]]
    sag[:, 3] = [30.0, -20.0, 40.0, 1.0]
    data = np.clip(src[0].numpy()[:20, :24, :5], 0, None)
    (root / "nested").mkdir()
    write_original_mr_series(data, sag, root / "nested" / "s7", series_number=7, series_description="t2_tse_sag", seed=7)
    return root


def test_series_lists_every_series(two_series):
    result = run_cli("series", two_series)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:7] == ["SERIES", "MODALITY", "SLICES", "MATRIX", "SPACING_MM", "ORIENTATION", "ACQ"]
    row3 = next(line.split() for line in lines if line.startswith("3 "))
    row7 = next(line.split() for line in lines if line.startswith("7 "))
    assert row3[1:4] == ["MR", "6", "48x40"] and row3[5] == "axial" and row3[6] == "oblique" and row3[9] == "3D"
    assert row7[1:6] == ["MR", "5", "24x20", "1.1x1.1x1.2", "sagittal"] and "t2_tse_sag" in row7


def test_enhance_refuses_several_series_with_the_list(two_series, tmp_path):
    out = tmp_path / "out.nii.gz"
    before = tree_digest(two_series)
    result = run_cli("enhance", two_series, out, "--quiet")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("monai-sr: error: ") and "found 2 series; choose one with --series" in line
    assert "3 ('t1_mprage_tra_2mm', MR, 6 slices" in line and "7 ('t2_tse_sag', MR, 5 slices, sagittal" in line
    assert not out.exists() and tree_digest(two_series) == before
    result = run_cli("enhance", two_series, out, "--series", "9", "--quiet")
    assert result.returncode == 1 and "no series matches --series 9; available: 3 (" in result.stderr


def test_python_api_selects_by_number_or_uid(two_series):
    with pytest.raises(InputError, match="found 2 series"):
        load_volume(two_series)
    with pytest.raises(InputError, match="found 2 series"):
        preflight(two_series, two_series.parent / "x.nii.gz")
    by_number = load_volume(two_series, series=7)
    uid = by_number.meta["dicom_headers"][0]["0020000E"]["Value"][0]
    by_uid = load_volume(two_series, series=uid)
    assert by_number.shape == by_uid.shape == (1, 20, 24, 5)
    np.testing.assert_array_equal(by_number.numpy(), by_uid.numpy())
    assert "read series 7" in " ".join(by_number.meta["monai_sr_notes"])


def test_enhance_with_series_writes_that_series(two_series, tmp_path):
    out = tmp_path / "sag.nii.gz"
    result = run_cli("enhance", two_series, out, "--series", "7", "--quiet")
    assert result.returncode == 0, result.stderr
    img = nib.load(out)
    src = load_volume(two_series, series=7)
    assert img.shape[2] == 5 and img.shape[0] > 20  # the sagittal stack, super-resolved in-plane
    np.testing.assert_allclose(img.affine[:3, 3], src.affine.numpy()[:3, 3], atol=1.0)


def test_series_on_nothing_useful(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("series", empty)
    assert result.returncode == 1 and "empty" in result.stderr
