"""``monai-sr enhance CASES_FOLDER OUT_FOLDER``: one output per case, the manifest, resume, failures."""

from __future__ import annotations

import csv
import shutil

import nibabel as nib
import pytest
from helpers import run_cli, tree_digest

from monai_sr.cohort import FIELDS, append_row, case_digest, cohort_cases, read_manifest

FAST = ("--quiet", "--fast", "--set", "self_ensemble=none", "--set", "data_consistency=false")


@pytest.fixture
def cohort(tmp_path, small_series):
    """2 NIfTI files + 1 DICOM series folder (+ a file that is no case)."""
    from monai_sr.io.dicom.reader import load_dicom_series

    root = tmp_path / "cases"
    root.mkdir()
    shutil.copytree(small_series, root / "patient_c", copy_function=shutil.copy2)
    vol = load_dicom_series(small_series)
    for name in ("case_a.nii.gz", "case_b.nii.gz"):
        nib.save(nib.Nifti1Image(vol[0].numpy(), vol.affine.numpy()), root / name)
    (root / "readme.txt").write_text("not a case")
    return root


def _rows(out):
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_cohort_outputs_manifest_and_resume(cohort, tmp_path):
    before = tree_digest(cohort)
    out = tmp_path / "out"
    run = run_cli("enhance", cohort, out, *FAST)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["case_a.nii.gz", "case_b.nii.gz", "manifest.csv", "patient_c"]
    assert nib.load(out / "case_a.nii.gz").shape == (80, 96, 6)
    assert len(list((out / "patient_c").iterdir())) == 6  # a derived DICOM series, one file per slice
    rows = _rows(out)
    assert tuple(rows[0]) == FIELDS
    assert [(r["case"], r["status"], r["output"]) for r in rows] == [
        ("case_a.nii.gz", "done", "case_a.nii.gz"), ("case_b.nii.gz", "done", "case_b.nii.gz"),
        ("patient_c", "done", "patient_c")]
    assert all(r["input_digest"] == case_digest(cohort / r["case"]) and float(r["seconds"]) > 0 for r in rows)
    assert "3 case(s): 3 done now, 0 done before" in run.stdout
    assert tree_digest(cohort) == before  # inputs untouched

    outputs = tree_digest(out / "patient_c")
    again = run_cli("enhance", cohort, out, *FAST)
    assert again.returncode == 0, again.stderr
    assert "0 done now, 3 done before (skipped)" in again.stdout
    assert len(_rows(out)) == 3 and tree_digest(out / "patient_c") == outputs  # nothing ran, nothing appended

    (out / "case_b.nii.gz").unlink()  # a missing output is made again, only that one
    third = run_cli("enhance", cohort, out, *FAST)
    assert third.returncode == 0 and "1 done now, 2 done before" in third.stdout
    assert [r["case"] for r in _rows(out)][3:] == ["case_b.nii.gz"]


def test_a_damaged_case_fails_alone_and_is_retried_when_asked(cohort, tmp_path):
    damaged = cohort / "case_b.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:300])  # truncated gzip
    out = tmp_path / "out"
    run = run_cli("enhance", cohort, out, *FAST)
    assert run.returncode == 1
    assert "1 of 3 cases failed: case_b.nii.gz" in run.stderr
    assert "Traceback" not in run.stderr
    assert (out / "case_a.nii.gz").is_file() and (out / "patient_c").is_dir()
    assert not (out / "case_b.nii.gz").exists() and not list(out.glob(".*"))  # nothing partial
    state = read_manifest(out / "manifest.csv")
    assert state["case_b.nii.gz"]["status"] == "failed" and "case_b" in state["case_b.nii.gz"]["error"]
    assert {state[c]["status"] for c in ("case_a.nii.gz", "patient_c")} == {"done"}

    rerun = run_cli("enhance", cohort, out, *FAST)  # failed before: not retried, still reported, exit 1
    assert rerun.returncode == 1 and "not retried (--retry-failed)" in rerun.stderr
    assert "0 done now, 2 done before" in rerun.stdout and len(_rows(out)) == 3

    retry = run_cli("enhance", cohort, out, *FAST, "--retry-failed")  # retried: fails again, one more row
    assert retry.returncode == 1 and "case_b.nii.gz" in retry.stderr
    assert [r["case"] for r in _rows(out)][3:] == ["case_b.nii.gz"]

    shutil.copy(cohort / "case_a.nii.gz", damaged)  # repaired: a changed input runs without being asked
    fixed = run_cli("enhance", cohort, out, *FAST)
    assert fixed.returncode == 0, fixed.stderr
    assert read_manifest(out / "manifest.csv")["case_b.nii.gz"]["status"] == "done"
    assert (out / "case_b.nii.gz").is_file()


def test_a_series_folder_stays_one_case(small_series, tmp_path):
    assert cohort_cases(small_series) is None
    nested = tmp_path / "study"
    shutil.copytree(small_series, nested / "series")
    assert cohort_cases(nested) is None  # DICOM in one sub-folder only: one series, as before
    assert cohort_cases(tmp_path / "missing") is None


def test_manifest_rows_are_whole_and_the_last_row_wins(tmp_path):
    path = tmp_path / "manifest.csv"
    append_row(path, dict(case="a", input_digest="d", output="a.nii.gz", status="failed", seconds="1.00",
                          notes="", error="a, b\nline two"))
    append_row(path, dict(case="a", input_digest="d", output="a.nii.gz", status="done", seconds="2.00", notes="n"))
    assert path.read_text().splitlines()[0] == ",".join(FIELDS)
    assert len(path.read_text().splitlines()) == 3  # a multi-line cause is kept on one line
    assert read_manifest(path)["a"]["status"] == "done"


def test_digest_follows_names_sizes_and_times(cohort):
    d = case_digest(cohort / "patient_c")
    assert d == case_digest(cohort / "patient_c") and d.startswith("stat:")
    victim = next((cohort / "patient_c").iterdir())
    victim.write_bytes(victim.read_bytes())  # same bytes, rewritten: a new mtime
    assert case_digest(cohort / "patient_c") != d
