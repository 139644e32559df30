"""Input truth (issue 16): NaN/Inf voxels, zero/negative pixdim, NaN or singular NIfTI affines and non-MR
DICOM series are refused naming the file (never silently guessed or passed through)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import run_cli, tree_digest

from monai_sr.errors import GeometryError, InputError
from monai_sr.io.nifti import load_nifti
from monai_sr.io.volume_source import check_modality, open_volume, scan_input
from monai_sr.pipeline import preflight

DATA = np.ones((8, 8, 4), np.float32)


def stored_nifti(path: Path, data: np.ndarray = DATA, **fields) -> Path:
    """A NIfTI file whose header fields are exactly ``fields`` as stored (nibabel mends some on save)."""
    raw = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])).to_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for key, value in fields.items():
        hdr[key] = value
    out = hdr.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(out) if path.name.endswith(".gz") else out)
    return path


BAD_GEOMETRY = {
    "zero_pixdim": (dict(pixdim=[1, 0, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=0), "pixdim[1..3] = (0.0, 1.0, 2.0)"),
    "negative_pixdim_qform": (dict(pixdim=[1, -1, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=1), "pixdim[1..3] = (-1.0"),
    "nan_pixdim": (dict(pixdim=[1, np.nan, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=0), "not a number"),
    "nan_sform": (dict(srow_y=[0, np.nan, 0, 0], sform_code=1), "bad geometry in the sform: affine has non-finite values"),
    "singular_sform": (dict(srow_y=[0, 0, 0, 0], sform_code=1), "bad geometry in the sform: affine is singular"),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRY))
def test_bad_nifti_geometry_refused_naming_the_file(tmp_path, case, capfd):
    fields, cause = BAD_GEOMETRY[case]
    path = stored_nifti(tmp_path / f"{case}.nii.gz", **fields)
    for read in (lambda: scan_input(path), lambda: open_volume(path), lambda: load_nifti(path)):
        with pytest.raises(GeometryError) as err:
            read()
        assert err.value.path == str(path) and cause in str(err.value)
    assert "pixdim" not in capfd.readouterr().err, "nibabel's own notes stay off stderr"


def test_sform_gives_the_geometry_whatever_pixdim_says(tmp_path):
    path = stored_nifti(tmp_path / "ok.nii.gz", pixdim=[1, 0, 0, 0, 1, 1, 1, 1], sform_code=1)
    assert np.allclose(open_volume(path).affine, np.diag([1.0, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_voxels_refused_with_count_and_place(tmp_path, bad):
    data = DATA.copy()
    data[1, 2, 3] = bad
    data[4, 5, 3] = bad
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    source = open_volume(path)
    assert source.read(0, 3).shape == (8, 8, 3)  # the clean slices read
    with pytest.raises(InputError, match=r"2 NaN/Inf voxel\(s\) in slice 3 \(first at voxel \(1, 2, 3\)\)") as err:
        source.read(3, 4)
    assert err.value.path == str(path)
    with pytest.raises(InputError, match=r"2 NaN/Inf voxel\(s\) in slices 0\.\.3 \(first at voxel \(1, 2, 3\)\)"):
        load_nifti(path)


@pytest.fixture(scope="module")
def ct_series(small_series, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ct") / "ct_series"
    folder.mkdir()
    for f in sorted(small_series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.save_as(folder / f.name)
    return folder


def test_non_mr_series_refused_by_name_unless_allowed_for_nifti(ct_series, small_series, tmp_path):
    scan = scan_input(ct_series)
    with pytest.raises(InputError, match=r"is CT \(Modality\), not MR.*--allow-modality CT") as err:
        check_modality(scan)
    assert err.value.path == str(ct_series)
    check_modality(scan, "ct", output_kind="nifti")
    with pytest.raises(InputError, match="would claim to be MR"):
        check_modality(scan, "CT", output_kind="dicom")
    with pytest.raises(InputError, match="is CT"):
        check_modality(scan, "PT")
    check_modality(scan_input(small_series))  # MR
    with pytest.raises(InputError, match="is CT"):
        preflight(ct_series, tmp_path / "out")
    assert preflight(ct_series, tmp_path / "out.nii.gz", allow_modality="CT").kind == "nifti"


def _assert_refused(result, output: Path, src: Path, before: str, *, names: str, cause: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("monai-sr: error: ") and names in lines[0] and cause in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists() and not [p for p in output.parent.iterdir() if p.name.startswith(".")]
    assert tree_digest(src) == before


def test_cli_refuses_bad_inputs_before_the_model_loads(tmp_path, ct_series):
    """Through the real entry point. The bundle named does not exist: an error about it would mean the
    model was reached before the input was judged."""
    zero = stored_nifti(tmp_path / "zero.nii.gz", pixdim=[1, 0, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=0)
    cases = [
        (zero, tmp_path / "out.nii.gz", "pixdim"),
        (ct_series, tmp_path / "out", "is CT (Modality), not MR"),
    ]
    for src, out, cause in cases:
        before = tree_digest(src)
        result = run_cli("enhance", src, out, "--quiet", "--bundle", tmp_path / "never_loaded")
        _assert_refused(result, out, src, before, names=str(src), cause=cause)


def test_cli_refuses_nan_voxels(tmp_path):
    data = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32) * 100
    data[3, 4, 2] = np.nan
    src, out = tmp_path / "nan.nii.gz", tmp_path / "out.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), src)
    before = tree_digest(src)
    result = run_cli("enhance", src, out, "--quiet", "--fast")
    _assert_refused(result, out, src, before, names=str(src), cause="1 NaN/Inf voxel(s)")


def test_cli_resample_says_which_slices_it_filled(small_series, tmp_path):
    """A series with its third file missing: refused without --resample (naming the gap); with it, the
    notes name output slice 2 as filled between the files on either side, the others as measured."""
    import shutil

    files = sorted(small_series.iterdir())
    src = tmp_path / "gap"
    src.mkdir()
    for f in files[:2] + files[3:]:
        shutil.copy(f, src / f.name)
    before = tree_digest(src)
    refused = run_cli("enhance", src, tmp_path / "no", "--quiet")
    assert refused.returncode == 1 and "missing slice" in refused.stderr and "--resample" in refused.stderr
    out = tmp_path / "sr.nii.gz"
    result = run_cli("enhance", src, out, "--resample", "--quiet")
    assert result.returncode == 0, result.stderr
    (note,) = [line for line in result.stdout.splitlines() if line.startswith("note    --resample filled")]
    assert "filled 1 of 6 slices by interpolation, output slice(s) 2 (0-based" in note, note
    assert f"between {files[1].name} (" in note and f") and {files[3].name} (" in note, note
    assert note.endswith("the other 5 lie within 0.01 mm of a source slice"), note
    assert nib.load(str(out)).shape[2] == 6 and tree_digest(src) == before
