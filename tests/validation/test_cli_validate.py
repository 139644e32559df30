"""`monai-sr validate` through the real entry point: a report, one-line refusals, nothing left behind."""

from __future__ import annotations

import json

from helpers import SAMPLE_REFERENCE, SAMPLE_SERIES, run_cli, tree_digest
from monai.data import MetaTensor
from monai.transforms import SpatialCrop

from monai_sr.io.nifti import save_nifti
from monai_sr.pipeline import load_volume


def _one_line_error(result, *needles):
    assert result.returncode == 1, result.stderr
    lines = [x for x in result.stderr.strip().splitlines() if x.strip() and "it/s" not in x and "slice/s" not in x]
    assert len(lines) == 1 and lines[0].startswith("monai-sr: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_dicom_prediction_against_nifti_reference(tmp_path):
    """The 2 mm sample series against the 1 mm reference: grids differ -> resampled, said in the summary."""
    out = tmp_path / "report"
    before = tree_digest(SAMPLE_SERIES)
    r = run_cli("validate", SAMPLE_SERIES, "--reference", SAMPLE_REFERENCE, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "resampled" in r.stdout and "index.html" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"]["resampled"] is True and s["settings"]["axis"] == 2
    assert "DICOM" in s["settings"]["axis_rule"]
    assert s["means_over_slices"]["psnr"] > 30
    assert {p.name for p in out.iterdir()} == {"slices.csv", "summary.json", "metrics.png", "worst_slices.png", "index.html"}
    assert tree_digest(SAMPLE_SERIES) == before
    again = run_cli("validate", SAMPLE_SERIES, "--reference", SAMPLE_REFERENCE, "--out", out, "--quiet")
    _one_line_error(again, str(out), "exists")


def test_no_overlap_exits_1_and_leaves_no_report(tmp_path):
    corner = SpatialCrop(roi_start=(0, 0, 0), roi_end=(30, 30, 10))(load_volume(SAMPLE_REFERENCE))
    moved = corner.affine.numpy().copy()
    moved[2, 3] += 500.0  # half a metre above the head
    ref = save_nifti(MetaTensor(corner.as_tensor(), affine=moved), tmp_path / "elsewhere.nii.gz")
    out = tmp_path / "report"
    r = run_cli("validate", SAMPLE_SERIES, "--reference", ref, "--out", out)
    _one_line_error(r, str(ref), str(SAMPLE_SERIES), "does not overlap")
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))


def test_consistency_and_qa_without_reference(tmp_path):
    out = tmp_path / "report"
    r = run_cli("validate", SAMPLE_REFERENCE, "--input", SAMPLE_SERIES, "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["mode"] == "consistency" and s["settings"]["factors"] == [2, 2, 1]
    assert "k-space" in s["settings"]["resampling"] and s["means_over_slices"]["psnr"] > 40
    bad = run_cli("validate", SAMPLE_SERIES, "--input", SAMPLE_REFERENCE, "--out", tmp_path / "r2", "--quiet")
    _one_line_error(bad, str(SAMPLE_SERIES), "integer factor")


def test_nan_prediction_or_reference_is_refused_with_the_count(tmp_path):
    """All-NaN prediction, or a reference with one NaN and one Inf: one line naming the file and the count,
    exit 1, no report, inputs untouched (docs/validation.md: refused, not scored around)."""
    import numpy as np

    ref = SpatialCrop(roi_start=(40, 40, 18), roi_end=(80, 88, 24))(load_volume(SAMPLE_REFERENCE))
    clean = save_nifti(ref, tmp_path / "clean.nii.gz")
    nan = ref.clone()
    nan[:] = float("nan")
    all_nan = save_nifti(nan, tmp_path / "all_nan.nii.gz")
    part = ref.clone()
    part[0, 3, 4, 2], part[0, 5, 6, 4] = float("nan"), float("inf")
    partly = save_nifti(part, tmp_path / "partly.nii.gz")
    digests = {p: tree_digest(p) for p in (clean, all_nan, partly)}
    n = int(np.prod(ref.shape))
    for pred, reference, bad, needle in [(all_nan, clean, all_nan, f"the prediction holds {n} NaN/Inf voxel(s)"),
                                         (clean, partly, partly, "the reference holds 2 NaN/Inf voxel(s)")]:
        out = tmp_path / f"report_{bad.stem}"
        r = run_cli("validate", pred, "--reference", reference, "--out", out)
        _one_line_error(r, str(bad), needle, "first at voxel", "refused")
        assert not out.exists() and not list(tmp_path.glob(".*.partial"))
    assert digests == {p: tree_digest(p) for p in digests}
