"""``monai-sr enhance --uncertainty`` through the real entry point: the map beside a NIfTI output, a second
derived DICOM series beside a DICOM one (dciodvfy / dcentvfy, same geometry as the result), the same
numbers as ``monai_sr.enhance(..., uncertainty=True)``, refusals in one line, and the two outputs reserved,
published and cleaned together."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import MONAI_SR, crop_series, require_tool, run_cli

import monai_sr
from monai_sr.inference.uncertainty import SERIES_DESCRIPTION
from monai_sr.io.atomic import PAUSE_ENV
from monai_sr.io.dicom.reader import load_dicom_series

FAST = ("--quiet", "--fast")
AFFINE = np.array([[1.2, 0.0, 0.0, -20.0], [0.0, 1.1, 0.2, 10.0], [0.0, -0.1, 2.5, -7.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def nifti(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("input") / "in.nii.gz"
    rng = np.random.default_rng(3)
    vol = np.zeros((24, 20, 4), np.float32)
    vol[6:18, 5:15] = 250.0  # a bright block with edges, plus texture
    nib.save(nib.Nifti1Image(vol + rng.random(vol.shape).astype(np.float32) * 40, AFFINE), src)
    return src


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return crop_series(tmp_path_factory.mktemp("series") / "src", style="siemens", n_slices=4)


@pytest.fixture(scope="module")
def dicom_run(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom_out") / "sr"
    run = run_cli("enhance", series, out, *FAST, "--uncertainty")
    assert run.returncode == 0, run.stderr
    return out, out.with_name("sr_uncertainty"), run


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_error_line(run, *contains: str) -> str:
    assert run.returncode == 1, run.stderr
    lines = [line for line in run.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("monai-sr: error: "), run.stderr
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


def test_help_names_the_option():
    run = run_cli("enhance", "--help")
    assert "--uncertainty" in run.stdout and "_uncertainty.nii.gz" in run.stdout


def test_nifti_map_beside_the_output_equals_the_api(nifti, tmp_path):
    out = tmp_path / "sr.nii.gz"
    run = run_cli("enhance", nifti, out, *FAST, "--uncertainty")
    assert run.returncode == 0, run.stderr
    assert "uncertainty map" in run.stdout and str(tmp_path / "sr_uncertainty.nii.gz") in run.stdout
    sr, unc = nib.load(out), nib.load(tmp_path / "sr_uncertainty.nii.gz")
    assert sr.shape == unc.shape == (48, 40, 4)
    np.testing.assert_array_equal(sr.affine, unc.affine)
    result, spread = monai_sr.enhance(nifti, fast=True, uncertainty=True)  # the same code path in memory
    np.testing.assert_allclose(np.asarray(sr.dataobj), result[0].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(unc.dataobj), spread[0].numpy(), rtol=1e-5, atol=1e-3)
    m = np.asarray(unc.dataobj)
    assert m.min() >= 0 and m.max() > 1.0
    assert _hidden(tmp_path) == []


def test_dicom_map_is_a_second_derived_series_in_the_study(series, dicom_run):
    out, unc, run = dicom_run
    src = pydicom.dcmread(sorted(series.iterdir())[0])
    res_files, unc_files = sorted(out.iterdir()), sorted(unc.iterdir())
    assert len(res_files) == len(unc_files) == 4
    uids = set()
    for a, b in zip(res_files, unc_files):
        ra, rb = pydicom.dcmread(a), pydicom.dcmread(b)
        for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID"):
            assert ra.get(key) == rb.get(key) == src.get(key), key
        for key in ("Rows", "Columns", "SliceThickness", "InstanceNumber"):
            assert ra.get(key) == rb.get(key), key
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            np.testing.assert_allclose(np.array(rb.get(key), float), np.array(ra.get(key), float), atol=1e-9, err_msg=key)
        assert rb.SeriesDescription == SERIES_DESCRIPTION and list(rb.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert rb.SeriesNumber == ra.SeriesNumber + 1000 and rb.Modality == "MR"
        assert "4 in-plane flips" in rb.DerivationDescription
        uids |= {ra.SOPInstanceUID, rb.SOPInstanceUID}
        assert ra.SeriesInstanceUID != rb.SeriesInstanceUID != src.SeriesInstanceUID
    assert len(uids) == 8
    # units kept through Rescale Slope: read back, the map is the API's spread on the same input
    back = load_dicom_series(unc)
    sr_back = load_dicom_series(out)
    np.testing.assert_allclose(back.affine.numpy(), sr_back.affine.numpy(), atol=1e-6)
    _, spread = monai_sr.enhance(series, fast=True, uncertainty=True)
    slope = float(pydicom.dcmread(unc_files[0]).RescaleSlope)
    np.testing.assert_allclose(back[0].numpy(), spread[0].numpy(), atol=slope * 0.51 + 1e-4)
    assert float(spread.max()) > 100 * slope  # the map is not lost in the quantisation


def _errors(text: str) -> set[str]:
    return {re.sub(r"= <.*?>", "", line).strip() for line in text.splitlines() if line.startswith("Error")}


def test_dicom_map_passes_dciodvfy_and_dcentvfy(series, dicom_run):
    dciodvfy, dcentvfy = require_tool("dciodvfy"), require_tool("dcentvfy")
    out, unc, _ = dicom_run
    known = set()
    for f in sorted(series.iterdir())[:2]:
        run = subprocess.run([dciodvfy, "-new", str(f)], capture_output=True, text=True)
        known |= _errors(run.stdout + run.stderr)
    for f in sorted(unc.iterdir()):
        run = subprocess.run([dciodvfy, "-new", str(f)], capture_output=True, text=True)
        assert not _errors(run.stdout + run.stderr) - known, f"{f.name}: {run.stderr}"
    # both series together: one study, consistent entities
    run = subprocess.run([dcentvfy, *map(str, sorted(out.iterdir()) + sorted(unc.iterdir()))], capture_output=True, text=True)
    bad = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]
    assert run.returncode == 0 and not bad, run.stdout + run.stderr


def test_bundles_without_the_ensemble_and_cohorts_are_refused(nifti, tmp_path):
    out = tmp_path / "dn.nii.gz"
    run = run_cli("enhance", nifti, out, "--quiet", "--bundle", "mri_denoise_dncnn", "--uncertainty")
    _one_error_line(run, "mri_denoise_dncnn infers with", "not supported")
    run = run_cli("enhance", nifti, out, "--quiet", "--bundle", "mri_sr_selfsupervised", "--uncertainty")
    _one_error_line(run, "mri_sr_selfsupervised infers with OrthogonalPlanesInferer")
    cases = tmp_path / "cases"
    cases.mkdir()
    os.symlink(nifti, cases / "a.nii.gz")
    run = run_cli("enhance", cases, tmp_path / "cohort_out", *FAST, "--uncertainty")
    _one_error_line(run, "--uncertainty is not available for a folder of cases")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"], "nothing written, no lock left"


def test_an_existing_map_is_refused_before_any_work(nifti, tmp_path):
    (tmp_path / "sr_uncertainty.nii.gz").write_bytes(b"keep me")
    run = run_cli("enhance", nifti, tmp_path / "sr.nii.gz", *FAST, "--uncertainty")
    _one_error_line(run, str(tmp_path / "sr_uncertainty.nii.gz"), "exists already")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr_uncertainty.nii.gz"]
    assert (tmp_path / "sr_uncertainty.nii.gz").read_bytes() == b"keep me"


def test_kill_9_before_publishing_leaves_neither_and_the_next_run_cleans(nifti, tmp_path):
    """The map is published first, just before the result: killed at that moment, neither is out."""
    out, flag = tmp_path / "sr.nii.gz", tmp_path / "flag"
    env = {**os.environ, PAUSE_ENV: f"publish:{flag}"}
    proc = subprocess.Popen([str(MONAI_SR), "enhance", str(nifti), str(out), *FAST, "--uncertainty"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 300, "never reached its pause"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    flag.unlink()
    assert not out.exists() and not (tmp_path / "sr_uncertainty.nii.gz").exists()
    assert any(p.endswith(".partial") for p in _hidden(tmp_path))
    run = run_cli("enhance", nifti, out, *FAST, "--uncertainty")
    assert run.returncode == 0, run.stderr
    assert nib.load(tmp_path / "sr_uncertainty.nii.gz").shape == nib.load(out).shape
    assert _hidden(tmp_path) == [], "the killed run's partials and locks are cleaned"


def test_a_result_that_fails_to_publish_takes_its_published_map_back(series, tmp_path):
    """Another process puts a folder at the result's path while it is written: the result is refused at
    its publish, after the map's, and the map is removed again (never a map without its result)."""
    from monai_sr.errors import OutputError
    from monai_sr.pipeline import enhance

    bundle = monai_sr.load_bundle("mri_sr_unet", fast=True)
    out = tmp_path / "sr"

    def intruder(stage: str, done: int, total: int) -> None:
        if stage == "write DICOM" and not out.exists():
            out.mkdir()

    with pytest.raises(OutputError, match="appeared while this run was writing"):
        enhance(series, out, network=bundle.network, inferer=bundle.inferer, progress=intruder, uncertainty=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr"] and not any(out.iterdir())


def test_the_report_draws_the_map_and_its_correlation_with_the_error(dicom_run, tmp_path):
    """validate finds the map beside the DICOM prediction, draws it next to the difference and reports the
    per-slice Spearman correlation with |error| (the crop lies inside the head: every voxel is scored)."""
    import csv
    import json

    from helpers import SAMPLE_REFERENCE
    from PIL import Image

    out, unc, _ = dicom_run
    args = ("validate", out, "--reference", SAMPLE_REFERENCE, "--mask", "none", "--quiet")
    run = run_cli(*args, "--out", tmp_path / "with")
    assert run.returncode == 0, run.stderr
    assert "found beside the prediction" in run.stdout and "Spearman with |error|" in run.stdout
    summary = json.loads((tmp_path / "with" / "summary.json").read_text())
    u = summary["uncertainty"]
    assert u["file"] == str(unc) and u["slices_with_spearman"] == 4
    assert 0.1 < u["spearman_mean_over_slices"] < 1 and u["whole_volume"]["top_decile_share"] > 0.1
    rows = list(csv.DictReader(open(tmp_path / "with" / "slices.csv")))
    rho = [float(r["uncertainty_spearman"]) for r in rows]
    assert len(rho) == 4 and min(rho) > 0 and np.isclose(np.mean(rho), u["spearman_mean_over_slices"])
    html = (tmp_path / "with" / "index.html").read_text()
    assert "Uncertainty map" in html and "Spearman correlation with |error|" in html
    run = run_cli(*args, "--uncertainty", "none", "--out", tmp_path / "without")
    assert run.returncode == 0, run.stderr
    assert "uncertainty" not in json.loads((tmp_path / "without" / "summary.json").read_text())
    w_with = Image.open(tmp_path / "with" / "worst_slices.png").size[0]
    w_without = Image.open(tmp_path / "without" / "worst_slices.png").size[0]
    assert w_with - w_without == 300, "one more panel: the map"
    # a map on another grid is refused in one line, naming it
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), other)
    run = run_cli(*args, "--uncertainty", other, "--out", tmp_path / "bad")
    _one_error_line(run, str(other), "not on the prediction's grid")
    assert not (tmp_path / "bad").exists()


def test_rank_agreement_measures_the_ranking():
    from monai_sr.validation.uncertainty import rank_agreement, slice_spearman

    rng = np.random.default_rng(0)
    err = rng.random(5000)
    good = rank_agreement(err + 0.05 * rng.random(5000), err)
    blind = rank_agreement(rng.random(5000), err)
    assert good["spearman"] > 0.95 and good["top_decile_share"] > 0.8
    assert abs(blind["spearman"]) < 0.05 and 0.05 < blind["top_decile_share"] < 0.15
    vol = rng.random((10, 10, 3))
    rho = slice_spearman(vol, vol ** 2, np.ones_like(vol, bool), axis=2)
    np.testing.assert_allclose(rho, 1.0)
    assert np.isnan(slice_spearman(vol, vol, np.zeros_like(vol, bool), axis=2)).all()


@pytest.mark.slow  # the classic encoding is the default and is checked above; this one repeats a CLI run
def test_enhanced_format_map_is_one_multiframe_object_on_the_same_grid(series, tmp_path):
    dciodvfy = require_tool("dciodvfy")
    out = tmp_path / "sr"
    run = run_cli("enhance", series, out, *FAST, "--uncertainty", "--dicom-format", "enhanced")
    assert run.returncode == 0, run.stderr
    (res_file,), (unc_file,) = sorted(out.iterdir()), sorted((tmp_path / "sr_uncertainty").iterdir())
    a, b = pydicom.dcmread(res_file), pydicom.dcmread(unc_file)
    assert b.SeriesDescription == SERIES_DESCRIPTION and b.NumberOfFrames == a.NumberOfFrames == 4
    assert b.FrameOfReferenceUID == a.FrameOfReferenceUID and b.SeriesInstanceUID != a.SeriesInstanceUID
    for fa, fb in zip(a.PerFrameFunctionalGroupsSequence, b.PerFrameFunctionalGroupsSequence):
        np.testing.assert_allclose(np.array(fb.PlanePositionSequence[0].ImagePositionPatient, float),
                                   np.array(fa.PlanePositionSequence[0].ImagePositionPatient, float), atol=1e-9)
    check = subprocess.run([dciodvfy, "-new", str(unc_file)], capture_output=True, text=True)
    assert not _errors(check.stdout + check.stderr), check.stderr
    np.testing.assert_allclose(load_dicom_series(tmp_path / "sr_uncertainty").affine.numpy(),
                               load_dicom_series(out).affine.numpy(), atol=1e-6)
