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


def _torchrun(*args, ranks=2):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "monai_sr"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=600)


def _voxels(path):
    import numpy as np

    from monai_sr.pipeline import load_volume

    vol = load_volume(path)
    return np.asarray(vol), np.asarray(vol.affine)


def test_two_ranks_match_one_process(cohort, tmp_path):
    import os

    import numpy as np

    for name in ("patient_d", "patient_e"):
        shutil.copytree(cohort / "patient_c", cohort / name, copy_function=shutil.copy2)
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("enhance", cohort, one, *FAST).returncode == 0
    run = _torchrun("enhance", cohort, two, *FAST)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("cohort  ") == 1 and "5 done now" in run.stdout
    assert f"on 2 ranks x {max(1, len(os.sched_getaffinity(0)) // 2)} thread(s)" in run.stdout  # cores / ranks
    assert "[rank 0] done" in run.stdout and "[rank 1] done" in run.stdout
    names = sorted(r["case"] for r in _rows(two))
    assert names == ["case_a.nii.gz", "case_b.nii.gz", "patient_c", "patient_d", "patient_e"]  # each exactly once
    for name in ("case_a.nii.gz", "case_b.nii.gz", "patient_c", "patient_d", "patient_e"):
        (a, aff_a), (b, aff_b) = _voxels(one / name), _voxels(two / name)
        assert np.array_equal(a, b) and np.array_equal(aff_a, aff_b), name  # bit-identical voxels and geometry
    again = _torchrun("enhance", cohort, two, *FAST)
    assert again.returncode == 0 and "0 done now, 5 done before" in again.stdout and len(_rows(two)) == 5


def _child_with_rank(parent_pid, rank):
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent_pid and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/environ").exists(), reason="needs /proc")
def test_kill_9_of_a_rank_then_a_rerun_runs_only_the_missing_cases(cohort, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    for name in ("patient_d", "patient_e", "patient_f"):
        shutil.copytree(cohort / "patient_c", cohort / name, copy_function=shutil.copy2)
    out = tmp_path / "out"
    slow = ("--quiet", "--set", "self_ensemble=none", "--set", "data_consistency=false")  # ~4 s a case: the fit
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai_sr",
           "enhance", str(cohort), str(out), *slow]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("[rank 1] done"):  # rank 1 is now inside its second case
                os.kill(_child_with_rank(proc.pid, 1), signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    left = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert left, "the killed rank held reservations (lock / partial) of the cases it had not finished"
    first = {r["case"] for r in _rows(out) if r["status"] == "done"}
    assert 1 <= len(first) < 6
    for name in first:  # every visible output is whole
        assert _voxels(out / name)[0].size > 0

    rerun = run_cli("enhance", cohort, out, *FAST)
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(out)
    assert sorted(r["case"] for r in rows) == sorted(p.name for p in cohort.iterdir() if p.name != "readme.txt")
    assert f"{6 - len(first)} done now, {len(first)} done before" in rerun.stdout  # only the missing cases ran
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], left  # cleaned: no partial, no lock


def test_an_output_published_by_a_killed_run_without_its_row_is_made_again(cohort, tmp_path):
    out = tmp_path / "out"
    assert run_cli("enhance", cohort, out, *FAST).returncode == 0
    rows = (out / "manifest.csv").read_text().splitlines()
    (out / "manifest.csv").write_text("\n".join(rows[:-1]) + "\n")  # killed after publishing, before the row
    rerun = run_cli("enhance", cohort, out, *FAST)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 done now, 2 done before" in rerun.stdout and _rows(out)[-1]["case"] == "patient_c"

    other = tmp_path / "other"  # not a cohort folder (no manifest): an output there is never replaced unasked
    other.mkdir()
    (other / "case_a.nii.gz").write_bytes(b"someone else's")
    run = run_cli("enhance", cohort, other, *FAST)
    assert run.returncode == 1 and "case_a.nii.gz" in run.stderr and "exists" in run.stderr
    assert (other / "case_a.nii.gz").read_bytes() == b"someone else's"


def test_one_case_on_several_ranks_is_refused(small_series, tmp_path):
    run = _torchrun("enhance", small_series, tmp_path / "out", *FAST)
    assert run.returncode != 0 and "run it without torchrun" in run.stderr
    assert not (tmp_path / "out").exists()


def test_output_format_nifti_for_every_case(cohort, tmp_path):
    out = tmp_path / "out"
    run = run_cli("enhance", cohort, out, *FAST, "--output-format", "nifti")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["case_a.nii.gz", "case_b.nii.gz", "manifest.csv", "patient_c.nii.gz"]
    assert nib.load(out / "patient_c.nii.gz").shape == (80, 96, 6)
    refused = run_cli("enhance", cohort, tmp_path / "dcm", *FAST, "--output-format", "dicom")
    assert refused.returncode == 1 and "DICOM case" in refused.stderr and not (tmp_path / "dcm").exists()


BUNDLES = ("mri_sr_unet", "mri_denoise_dncnn", "mri_sr_selfsupervised")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_inference_config_drives_the_cohort(bundle):
    """configs/multi_gpu_inference.json merged over inference.json (as model-zoo's multi_gpu_evaluate.json is):
    the run calls monai_sr.cohort.enhance_cohort with every id resolved, a CPU device and gloo without CUDA."""
    from monai.bundle import ConfigParser

    from monai_sr.bundles import find_bundle

    configs = find_bundle(bundle) / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "multi_gpu_inference.json")])
    parser["input_path"], parser["output_path"] = "cases", "out"
    assert parser["enhance"]["_target_"] == "monai_sr.cohort.enhance_cohort"
    assert parser["run"][-1] == "$@enhance.raise_for_failures()"
    import torch

    if not torch.cuda.is_available():
        assert parser.get_parsed_content("device") == torch.device("cpu")
        assert parser.get_parsed_content("dist_backend") == "gloo"
    keys = [k for k in parser["enhance"] if k != "_target_"]
    assert {"source", "output_path", "network", "inferer", "adapt", "send", "retry_failed"} <= set(keys)
    args = {k: parser.get_parsed_content(f"enhance#{k}") for k in keys}  # every @id and $expression resolves
    assert args["source"] == "cases" and args["retry_failed"] is False and isinstance(args["network"], torch.nn.Module)
    assert next(args["network"].parameters()).device == parser.get_parsed_content("device")


@pytest.mark.slow  # ~30 s at load 8.6 on the 2-core machine; the CLI's torchrun test runs the same split in CI
def test_bundle_on_two_ranks_matches_one_process(cohort, tmp_path):
    """torchrun --standalone --nproc_per_node 2 -m monai.bundle run --config_file
    "['configs/inference.json','configs/multi_gpu_inference.json']" over 3 cases: the cases split across the 2
    gloo ranks (each exactly once in the manifest), outputs bit-identical to `monai-sr enhance` in one process."""
    import os
    import subprocess
    import sys

    import numpy as np
    from helpers import REPO

    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("enhance", cohort, one, *FAST).returncode == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "--config_file", "['configs/inference.json','configs/multi_gpu_inference.json']",
           "--input_path", str(cohort), "--output_path", str(two), "--internal_learning", "false",
           "--self_ensemble", "none", "--data_consistency", "false"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # gloo on the CPU even where a GPU exists
    run = subprocess.run(cmd, cwd=REPO / "bundles" / "mri_sr_unet", capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("cohort  ") == 1 and "3 case(s): 3 done now" in run.stdout and "on 2 ranks" in run.stdout
    assert "[rank 0] done" in run.stdout and "[rank 1] done" in run.stdout
    assert sorted(r["case"] for r in _rows(two)) == ["case_a.nii.gz", "case_b.nii.gz", "patient_c"]
    for name in ("case_a.nii.gz", "case_b.nii.gz", "patient_c"):
        (a, aff_a), (b, aff_b) = _voxels(one / name), _voxels(two / name)
        assert np.array_equal(a, b) and np.array_equal(aff_a, aff_b), name


def test_threads_per_rank(monkeypatch):
    import os

    from monai_sr.cohort import THREADS_ENV, threads_per_rank
    from monai_sr.errors import InputError

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads_per_rank() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    assert threads_per_rank() == 1  # never zero
    monkeypatch.setenv(THREADS_ENV, "3")
    assert threads_per_rank() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(InputError, match=THREADS_ENV):
            threads_per_rank()
