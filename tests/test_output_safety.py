"""Output safety through the real ``monai-sr`` entry point (issue 16): one writer per target, kill -9 at
named moments never leaves a partial or replaced target, the next run cleans what a killed one left,
OUTPUT inside INPUT and unwritable locations refused in preflight.

The kill moments are reached with the test hook of :mod:`monai_sr.io.atomic` (``MONAI_SR_TEST_PAUSE``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import MONAI_SR, run_cli, tree_digest

from monai_sr.io.atomic import PAUSE_ENV

FAST = ("--quiet", "--fast", "--set", "self_ensemble=none")  # the pretrained network only: a few seconds


@pytest.fixture(scope="module")
def nifti(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("input") / "in.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((24, 20, 4)).astype(np.float32) * 300, np.diag([1.2, 1.2, 2.0, 1.0])), src)
    return src


def _start(*args, pause: str | None = None, flag: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    if pause:
        env[PAUSE_ENV] = f"{pause}:{flag}"
    return subprocess.Popen([str(MONAI_SR), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(flag: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"monai-sr ended ({proc.returncode}) before its pause: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("monai-sr never reached its pause")
        time.sleep(0.05)


def _kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _one_error_line(result, *, contains: list[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("monai-sr: error: ") and "Traceback" not in result.stderr
    for text in contains:
        assert text in lines[0], lines[0]
    return lines[0]


def test_second_writer_is_told_in_use_and_the_next_run_cleans_up(tmp_path, nifti):
    out, flag = tmp_path / "out.nii.gz", tmp_path / "flag"
    first = _start("enhance", nifti, out, *FAST, pause="reserved", flag=flag)
    _wait_for(flag, first)
    second = run_cli("enhance", nifti, out, *FAST)
    _one_error_line(second, contains=[str(out), f"in use by another monai-sr run (pid {first.pid})"])
    _kill_9(first)
    assert not out.exists()
    third = run_cli("enhance", nifti, out, *FAST)
    assert third.returncode == 0, third.stderr
    assert nib.load(out).shape == (48, 40, 4)
    assert _hidden(tmp_path) == [], "the killed run's lock is cleaned"


@pytest.mark.parametrize("moment", ["writing", "publish"])
def test_kill_9_while_writing_or_before_publishing(tmp_path, nifti, moment):
    """NIfTI .gz output: 'publish' is after compression, the last moment before the rename."""
    out, flag = tmp_path / "out.nii.gz", tmp_path / "flag"
    proc = _start("enhance", nifti, out, *FAST, pause=moment, flag=flag)
    _wait_for(flag, proc)
    _kill_9(proc)
    assert not out.exists(), "nothing published"
    partial = tmp_path / f".out.nii.gz.monai-sr-{proc.pid}.partial"
    assert partial.is_dir(), _hidden(tmp_path)
    if moment == "publish":
        assert nib.load(partial / "out.nii.gz").shape == (48, 40, 4)  # complete, yet never published
    nxt = run_cli("enhance", nifti, out, *FAST)
    assert nxt.returncode == 0, nxt.stderr
    assert _hidden(tmp_path) == [], "the stale partial of the dead run is cleaned by the next run"


def test_kill_9_before_publishing_over_an_existing_output(tmp_path, nifti):
    out, flag = tmp_path / "out.nii.gz", tmp_path / "flag"
    out.write_bytes(b"the earlier output")
    proc = _start("enhance", nifti, out, *FAST, "--overwrite", pause="publish", flag=flag)
    _wait_for(flag, proc)
    _kill_9(proc)
    assert out.read_bytes() == b"the earlier output"
    assert run_cli("enhance", nifti, out, *FAST).returncode == 1  # still there: no overwrite, refused
    assert out.read_bytes() == b"the earlier output"
    nxt = run_cli("enhance", nifti, out, *FAST, "--overwrite")
    assert nxt.returncode == 0, nxt.stderr
    assert nib.load(out).shape == (48, 40, 4)
    assert _hidden(tmp_path) == []


def test_kill_9_while_writing_a_dicom_series(tmp_path, small_series):
    out, flag = tmp_path / "series_sr", tmp_path / "flag"
    before = tree_digest(small_series)
    proc = _start("enhance", small_series, out, *FAST, pause="writing", flag=flag)
    _wait_for(flag, proc)
    _kill_9(proc)
    assert not out.exists()
    nxt = run_cli("enhance", small_series, out, *FAST)
    assert nxt.returncode == 0, nxt.stderr
    assert len(list(out.iterdir())) == len(list(small_series.iterdir()))  # one file per slice
    assert _hidden(tmp_path) == []
    assert tree_digest(small_series) == before


def test_two_runs_at_once_never_both_write(tmp_path, nifti):
    """The bug of issue 16: two runs without --overwrite both exited 0, the later replacing the earlier."""
    out = tmp_path / "out.nii.gz"
    procs = [_start("enhance", nifti, out, *FAST) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(e for code, e in results if code == 1)
    assert "in use by another monai-sr run" in err or "output exists already" in err, err
    assert nib.load(out).shape == (48, 40, 4)
    assert _hidden(tmp_path) == []


def test_output_inside_the_input_folder_is_refused(tmp_path, small_series):
    src = tmp_path / "series"
    src.mkdir()
    for f in small_series.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    before = tree_digest(src)
    for out in (src / "sr", src / "sr.nii.gz"):
        result = run_cli("enhance", src, out, "--quiet", "--bundle", tmp_path / "never_loaded")
        _one_error_line(result, contains=[str(out), str(src), "inside the input folder"])
        assert tree_digest(src) == before and not out.exists()


def test_unwritable_output_location_found_before_the_model_loads(tmp_path, nifti):
    """/sys refuses new files even to root; the bundle named does not exist, so an error about it would
    mean the model was reached before the output was checked."""
    out = Path("/sys/monai_sr_out.nii.gz")
    try:
        os.close(os.open("/sys/.monai_sr_probe", os.O_CREAT | os.O_RDWR))
        os.unlink("/sys/.monai_sr_probe")
        pytest.skip("/sys is writable here")
    except OSError:
        pass
    result = run_cli("enhance", nifti, out, "--quiet", "--bundle", tmp_path / "never_loaded")
    _one_error_line(result, contains=["/sys: cannot write into this folder"])


@pytest.mark.parametrize("moment", ["reading", "inference"])
def test_kill_9_while_reading_or_inferring_never_replaces_the_target(tmp_path, nifti, moment):
    """Killed while the input is read (a block of slices in memory) or just after a plane was inferred:
    the existing target stays as it was (even with --overwrite), no partial output is published, and the
    next run cleans what the killed one left and writes the target."""
    out, flag = tmp_path / "out.nii.gz", tmp_path / "flag"
    out.write_bytes(b"the earlier output")
    before = tree_digest(nifti)
    proc = _start("enhance", nifti, out, *FAST, "--overwrite", pause=moment, flag=flag)
    _wait_for(flag, proc)
    assert int(flag.read_text()) == proc.pid
    _kill_9(proc)
    assert out.read_bytes() == b"the earlier output"
    assert ".out.nii.gz.monai-sr.lock" in _hidden(tmp_path)  # the dead run's reservation, free to take over
    nxt = run_cli("enhance", nifti, out, *FAST, "--overwrite")
    assert nxt.returncode == 0, nxt.stderr
    assert nib.load(out).shape == (48, 40, 4)
    assert _hidden(tmp_path) == [], "the killed run's lock and partial are cleaned by the next run"
    assert tree_digest(nifti) == before


@pytest.mark.parametrize("moment", ["reading", "inference"])
def test_kill_9_while_reading_or_inferring_a_dicom_series(tmp_path, small_series, moment):
    out, flag = tmp_path / "series_sr", tmp_path / "flag"
    before = tree_digest(small_series)
    proc = _start("enhance", small_series, out, *FAST, pause=moment, flag=flag)
    _wait_for(flag, proc)
    _kill_9(proc)
    assert not out.exists(), "nothing published"
    assert ".series_sr.monai-sr.lock" in _hidden(tmp_path)  # the dead run's reservation, free to take over
    nxt = run_cli("enhance", small_series, out, *FAST)
    assert nxt.returncode == 0, nxt.stderr
    assert len(list(out.iterdir())) == len(list(small_series.iterdir()))
    assert _hidden(tmp_path) == []
    assert tree_digest(small_series) == before
