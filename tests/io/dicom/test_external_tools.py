"""Derived series written by the real entry point, checked by independent tools: dciodvfy, dcentvfy,
dcm2niix and SimpleITK (GDCM). Two outputs: the demo's, and one from a quirky vendor-style series."""

from __future__ import annotations

import re
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import SAMPLE_SERIES, require_tool, run_cli

from monai_sr import geometry
from monai_sr.io.dicom.reader import load_dicom_series


def _dcm_files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file())


@pytest.fixture(scope="session")
def demo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "sr_series"
    result = run_cli("demo", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return SAMPLE_SERIES, out, result.stdout


@pytest.fixture(scope="session")
def quirky_output(tmp_path_factory, quirky_series):
    out = tmp_path_factory.mktemp("quirky_out") / "sr_series"
    result = run_cli("enhance", quirky_series, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "SpacingBetweenSlices" in result.stdout  # the contradiction is reported, the positions used
    return quirky_series, out, result.stdout


@pytest.fixture(params=["demo", "quirky"])
def written(request):
    return request.getfixturevalue(f"{request.param}_output")


def _errors(tool_output: str) -> set[str]:
    # dciodvfy names the attribute and the problem; values differ per file, so compare the message part
    return {re.sub(r"= <.*?>", "", line).strip() for line in tool_output.splitlines() if line.startswith("Error")}


def test_demo_prints_quality_and_sr_wins(demo_output):
    stdout = demo_output[2]
    assert "PSNR" in stdout and "SSIM" in stdout and "bicubic" in stdout
    assert "SR beats bicubic" in stdout, stdout
    gain = float(re.search(r"SR beats bicubic by ([+-][0-9.]+) dB", stdout).group(1))
    assert gain > 0


def test_dciodvfy_reports_no_new_errors(written):
    tool = require_tool("dciodvfy")
    source, out, _ = written
    src_errors = set()
    for f in _dcm_files(source)[:3]:
        src_errors |= _errors(subprocess.run([tool, "-new", str(f)], capture_output=True, text=True).stderr)
    for f in _dcm_files(out):
        run = subprocess.run([tool, "-new", str(f)], capture_output=True, text=True)
        new = _errors(run.stdout + run.stderr) - src_errors
        assert not new, f"{f.name}: {sorted(new)}"


def test_dcentvfy_is_clean(written):
    tool = require_tool("dcentvfy")
    _, out, _ = written
    run = subprocess.run([tool, *map(str, _dcm_files(out))], capture_output=True, text=True)
    bad = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]
    assert run.returncode == 0 and not bad, run.stdout + run.stderr


def _expected(source):
    src = load_dicom_series(source)
    return src, geometry.scaled_affine(src.affine.numpy(), (2, 2, 1))


def test_simpleitk_reads_the_geometry_we_meant(written):
    source, out, _ = written
    src, expected = _expected(source)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out)))
    img = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    np.testing.assert_allclose(geometry.lps_to_ras(lps), expected, atol=1e-4)
    src_spacing = geometry.spacing_from_affine(src.affine.numpy())
    np.testing.assert_allclose(img.GetSpacing(), src_spacing / [2, 2, 1], atol=1e-4)
    assert img.GetSize() == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])
    # voxels: SimpleITK applies the rescale like we do
    ours = load_dicom_series(out)[0].numpy()
    slope = float(pydicom.dcmread(_dcm_files(out)[0], stop_before_pixels=True).RescaleSlope)
    np.testing.assert_allclose(sitk.GetArrayFromImage(img).transpose(2, 1, 0), ours, atol=slope)


def test_dcm2niix_reads_the_geometry_we_meant(written, tmp_path):
    tool = require_tool("dcm2niix")
    source, out, _ = written
    src, expected = _expected(source)
    run = subprocess.run([tool, "-z", "n", "-b", "n", "-f", "conv", "-o", str(tmp_path), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    (nii_path,) = tmp_path.glob("conv*.nii")
    theirs = nib.load(nii_path)
    ours = nib.Nifti1Image(load_dicom_series(out)[0].numpy(), expected)
    # dcm2niix may flip or permute axes; the canonical forms of the same grid are identical
    a, b = nib.as_closest_canonical(theirs), nib.as_closest_canonical(ours)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    slope = float(pydicom.dcmread(_dcm_files(out)[0], stop_before_pixels=True).RescaleSlope)
    np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), atol=slope)
    # field of view kept: the outer corner of the first voxel is the same point as in the source
    corner = np.array([-0.5, -0.5, -0.5, 1.0])
    np.testing.assert_allclose(expected @ corner, src.affine.numpy() @ corner, atol=1e-6)
