"""The ``monai-sr`` entry point: bad input gives one clear line, exit 1, no output, input untouched;
NIfTI in -> NIfTI out keeps the field of view; the quirky vendor series goes through."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from helpers import run_cli, tree_digest

from monai_sr import geometry


def _assert_refused(result, output, inputs, digests, *, names: str, cause: str):
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("monai-sr: error: ")
    assert names in lines[0] and cause in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not output.exists() or output.name == "exists", "no output may be left behind"
    assert not list(output.parent.glob(".*.partial")), "no temporary output may be left behind"
    for path, digest in zip(inputs, digests):
        assert tree_digest(path) == digest, f"input {path} was modified"


def test_empty_folder(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    out = tmp_path / "out"
    before = tree_digest(src)
    _assert_refused(run_cli("enhance", src, out), out, [src], [before], names=str(src), cause="empty")


def test_folder_of_non_dicom_files(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "report.txt").write_text("radiology report\n")
    (src / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    out = tmp_path / "out"
    before = tree_digest(src)
    _assert_refused(run_cli("enhance", src, out), out, [src], [before], names=str(src), cause="no DICOM image files")


def test_truncated_dicom_file(tmp_path, small_series):
    src = tmp_path / "truncated"
    src.mkdir()
    files = sorted(small_series.iterdir())
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    victim = src / files[2].name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    out = tmp_path / "out"
    before = tree_digest(src)
    _assert_refused(run_cli("enhance", src, out), out, [src], [before], names=victim.name, cause="DICOM")


def test_2d_nifti_is_one_slice(tmp_path):
    """A 2D NIfTI (dim[0] = 2) is enhanced as the one-slice volume it is: the same voxels and geometry as the
    (X, Y, 1) file with the same header affine (pixdim[3] the slice thickness)."""
    rng = np.random.default_rng(0)
    pixels = (100 * (rng.random((40, 36)) > 0.5) + rng.random((40, 36))).astype(np.float32)
    affine = np.array([[0.0, -0.8, 0.0, 30.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.0, 5.0, 12.0], [0, 0, 0, 1]])
    src2, src3 = tmp_path / "slice2d.nii.gz", tmp_path / "slice3d.nii.gz"
    nib.save(nib.Nifti1Image(pixels, affine), src2)
    nib.save(nib.Nifti1Image(pixels[..., None], affine), src3)
    before = tree_digest(src2)
    for src in (src2, src3):
        res = run_cli("enhance", src, tmp_path / f"out_{src.name}")
        assert res.returncode == 0, res.stderr
    assert tree_digest(src2) == before
    a, b = nib.load(tmp_path / "out_slice2d.nii.gz"), nib.load(tmp_path / "out_slice3d.nii.gz")
    assert a.shape == b.shape == (80, 72, 1)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a.affine[:3, :3], axis=0), [0.45, 0.4, 5.0], atol=1e-6)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())


def test_existing_output(tmp_path, small_series):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before_out, before_in = tree_digest(out), tree_digest(small_series)
    result = run_cli("enhance", small_series, out)
    _assert_refused(result, out, [small_series, out], [before_in, before_out], names=str(out), cause="exists")


def test_dicom_output_from_nifti_is_refused(tmp_path):
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), src)
    out = tmp_path / "series"
    before = tree_digest(src)
    _assert_refused(run_cli("enhance", src, out), out, [src], [before], names=str(out), cause="DICOM input")


def test_nifti_in_nifti_out_keeps_field_of_view(tmp_path):
    rng = np.random.default_rng(0)
    theta = np.deg2rad(10)
    affine = np.array([[0, 0, 2.0, -40], [1.2 * np.cos(theta), -1.2 * np.sin(theta), 0, 10],
                       [1.2 * np.sin(theta), 1.2 * np.cos(theta), 0, -7], [0, 0, 0, 1]])
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((24, 20, 5)).astype(np.float32) * 300, affine), src)
    out = tmp_path / "out.nii.gz"
    result = run_cli("enhance", src, out, "--quiet")
    assert result.returncode == 0, result.stderr
    img = nib.load(out)
    assert img.shape == (48, 40, 5)
    np.testing.assert_allclose(img.affine, geometry.scaled_affine(affine, (2, 2, 1)), atol=1e-5)
    # the corners of the field of view coincide
    fov_in = affine @ np.array([-0.5, -0.5, -0.5, 1])
    fov_out = img.affine @ np.array([-0.5, -0.5, -0.5, 1])
    np.testing.assert_allclose(fov_in, fov_out, atol=1e-5)


def test_help_documents_every_option():
    out = run_cli("enhance", "--help").stdout
    for option in ("INPUT", "OUTPUT", "--bundle", "--overwrite", "--quiet", "--debug"):
        assert option in out
    assert "demo" in run_cli("--help").stdout


def test_the_fit_on_request_runs_under_a_guard_and_keeps_the_measured_band(tmp_path):
    from monai_sr.transforms.kspace import fourier_resample

    rng = np.random.default_rng(3)
    fine = rng.random((64, 56, 4)).astype(np.float32) * 300
    low = fourier_resample(fine, (32, 28), (0, 1)).astype(np.float32)  # what a half-matrix scan measures
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(low, np.diag([1.8, 1.8, 4.0, 1.0])), src)
    out = tmp_path / "out.nii.gz"
    result = run_cli("enhance", src, out, "--quiet", "--set", "internal_learning=true", "--set", "internal_learning_fit#steps=20")
    assert result.returncode == 0, result.stderr
    assert "per-volume fit (InternalLearning)" in result.stdout and "guard (" in result.stdout
    sr = np.asarray(nib.load(out).dataobj, dtype=np.float64)
    np.testing.assert_allclose(fourier_resample(sr, (32, 28), (0, 1)), low, atol=2e-3 * low.max())

    default = tmp_path / "default.nii.gz"  # since mri_sr_unet 0.5.0 the default does not fit (measured worse on real scans)
    result = run_cli("enhance", src, default, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "per-volume fit" not in result.stdout
    sr = np.asarray(nib.load(default).dataobj, dtype=np.float64)
    np.testing.assert_allclose(fourier_resample(sr, (32, 28), (0, 1)), low, atol=2e-3 * low.max())

    plain = tmp_path / "plain.nii.gz"
    result = run_cli("enhance", src, plain, "--quiet", "--fast", "--set", "self_ensemble=none", "--set", "data_consistency=false")
    assert result.returncode == 0, result.stderr
    assert "per-volume fit" not in result.stdout
    sr = np.asarray(nib.load(plain).dataobj, dtype=np.float64)
    assert np.abs(fourier_resample(sr, (32, 28), (0, 1)) - low).max() > 1e-2 * low.max()


def test_set_refuses_an_unknown_id(tmp_path):
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), src)
    out = tmp_path / "out.nii.gz"
    before = tree_digest(src)
    _assert_refused(run_cli("enhance", src, out, "--set", "self_ensembl=flips"), out, [src], [before],
                    names="mri_sr_unet", cause="no id 'self_ensembl'")
    assert run_cli("enhance", src, out, "--set", "novalue").returncode == 2


def test_precision_sets_every_bundles_autocast_and_set_wins():
    """``--precision`` is the bundle config id ``amp`` of each shipped bundle; ``--set amp=...`` overrides it."""
    from monai_sr.bundles import config_overrides, load_inference_parts
    from monai_sr.inference.base import AmpDtype

    assert config_overrides("fp32", None) == {"amp": None}
    assert config_overrides("bf16", [("amp", "fp16"), ("self_ensemble", "none")]) == {"amp": "fp16", "self_ensemble": "none"}
    assert config_overrides(None, None) == {}
    expected = {"mri_sr_unet": AmpDtype.AUTO, "mri_sr_selfsupervised": None, "mri_denoise_dncnn": None}  # shipped defaults
    for bundle, default in expected.items():
        for precision, amp in ((None, default), ("fp32", None), ("bf16", AmpDtype.BF16)):
            inferer = load_inference_parts(bundle, **config_overrides(precision, None))["inferer"]
            while hasattr(inferer, "inferer"):  # the denoiser's SURE blend wraps its plane inferer
                inferer = inferer.inferer
            if hasattr(inferer, "_inferers"):  # PlaneMeanInferer: one SliceWiseInferer per axis
                inferer = inferer._inferers[2]
            assert inferer.amp == amp, (bundle, precision, inferer.amp)


def test_precision_fp32_is_the_float32_run(tmp_path):
    """``--precision fp32`` gives the same voxels as the long spelling ``--set inferer#amp=null``; a bad
    value is refused by argparse (exit 2) before any work."""
    rng = np.random.default_rng(5)
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((32, 28, 3)).astype(np.float32) * 300, np.diag([1.8, 1.8, 4.0, 1.0])), src)
    fast = ("--quiet", "--fast", "--set", "self_ensemble=none")
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert run_cli("enhance", src, a, *fast, "--precision", "fp32").returncode == 0
    assert run_cli("enhance", src, b, *fast, "--set", "inferer#amp=null").returncode == 0
    np.testing.assert_array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))
    bad = run_cli("enhance", src, tmp_path / "c.nii.gz", "--precision", "int8")
    assert bad.returncode == 2 and "--precision" in bad.stderr and not (tmp_path / "c.nii.gz").exists()
