"""The mri_sr_selfsupervised bundle: metadata and declared scale, ConfigWorkflow inference on a folder of
cases (a DICOM series and a NIfTI volume, 0.5 x 0.5 x 2 mm: x4 from the spacing) with a tiny per-volume fit
budget, geometry of the outputs (FOV-preserving affine, 4x the slices, SliceThickness divided by 4), the fit
switch; a 0.86 x 0.86 x 7 mm series through ``monai-sr enhance --bundle``: x8 from the spacing (0.875 mm
slices, noted); a series too thick refused in one line."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers import REPO

from monai_sr import geometry
from monai_sr.io.dicom.reader import load_dicom_series

BUNDLE = REPO / "bundles" / "mri_sr_selfsupervised"
SCALE = (1, 1, 4)


def _with_spacing(affine: np.ndarray, spacing) -> np.ndarray:
    """``affine`` with the same directions and origin and the voxel size ``spacing``."""
    a = np.array(affine, dtype=np.float64)
    a[:3, :3] = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0) * np.asarray(spacing, dtype=np.float64)
    return a


@pytest.fixture
def thick_cases(cases):
    """``cases`` with 0.5 mm pixels (PixelSpacing rewritten; 2 mm slices kept): the factor from the
    spacing is 4, the pretrained network's own. ``(folder, source)``."""
    folder, _ = cases
    for f in sorted((folder / "series_a").iterdir()):
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = [0.5, 0.5]
        ds.save_as(f)
    src = load_dicom_series(folder / "series_a")
    nib.save(nib.Nifti1Image(src[0].numpy().astype(np.float32), src.affine.numpy()), folder / "volume_b.nii.gz")
    return folder, src


def test_layout_metadata_and_declared_scale():
    from monai_sr.bundles import check_sr_shape, verify_metadata_offline

    for rel in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == ["H", "4*W"]
    verify_metadata_offline(BUNDLE)
    assert check_sr_shape(BUNDLE) == ((2, 1, 37, 37), (2, 1, 37, 148))


def test_weights_load_safely():
    from monai_sr.bundles import load_inference_parts

    state = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and state
    parts = load_inference_parts(BUNDLE, fit_steps=2)
    assert tuple(parts["network"].scale) == (1, 4)
    assert parts["adapt"] is not None and parts["adapt"].steps == 2 and parts["adapt"].factor == "spacing"
    off = load_inference_parts(BUNDLE, fit=False)["adapt"]  # the fit off: the factor still comes from the spacing
    assert off is not None and not off.enabled and off.factor == "spacing"
    assert load_inference_parts(BUNDLE, factor="6")["adapt"].factor == 6


def test_config_workflow_fits_each_case_and_writes_the_scaled_geometry(thick_cases, tmp_path):
    from monai.bundle import ConfigWorkflow

    folder, src = thick_cases
    out = tmp_path / "out"
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        input_path=str(folder),
        output_path=str(out),
        fit_steps=3,
        fit_seconds=30,
        num_threads=1,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    fit = wf.parser.get_parsed_content("through_plane_fit")
    assert [r.steps for r in fit.records] == [3, 3]  # one fit per case, each from the pretrained weights
    expected = geometry.scaled_affine(src.affine.numpy(), SCALE)
    shape = tuple(n * s for n, s in zip(src.shape[1:], SCALE))

    series = load_dicom_series(out / "series_a")
    assert tuple(series.shape[1:]) == shape
    np.testing.assert_allclose(series.affine.numpy(), expected, atol=1e-4)
    first = pydicom.dcmread(next(iter(sorted((out / "series_a").iterdir()))))
    thickness = float(pydicom.dcmread(next(iter(sorted((folder / "series_a").iterdir())))).SliceThickness)
    assert float(first.SliceThickness) == pytest.approx(thickness / 4)

    img = nib.load(out / "volume_b.nii.gz")
    assert img.shape == shape
    np.testing.assert_allclose(img.affine, expected, atol=1e-4)
    # the fitted network still does what it was trained for: close to the input at the input's slices
    # (output slice 4k + 1.5 is input slice k; compare the mean of slices 4k+1 and 4k+2)
    hr = np.asarray(img.dataobj, np.float32)
    mid = 0.5 * (hr[:, :, 1::4] + hr[:, :, 2::4])
    lr = src[0].numpy()
    assert np.abs(mid - lr).mean() < 0.1 * np.abs(lr).mean()


def test_fit_switch_off(thick_cases, tmp_path):
    from monai.bundle import ConfigWorkflow

    folder, src = thick_cases
    out = tmp_path / "nofit"
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer", bundle_root=str(BUNDLE),
        input_path=str(folder / "volume_b.nii.gz"), output_path=str(out), fit=False,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    assert wf.parser.get_parsed_content("through_plane_fit").records == []
    assert nib.load(out / "volume_b.nii.gz").shape == tuple(n * s for n, s in zip(src.shape[1:], SCALE))


def test_cli_thick_clinical_series_takes_its_factor_from_the_spacing(cases, tmp_path, capsys):
    """0.86 x 0.86 x 7 mm: 7 / 0.86 = 8.14 -> x8 (policy round), output slices 0.875 mm; the x4 network is
    rebuilt for x8 (body weights kept) and fitted; the note says what was chosen."""
    from monai_sr.cli import main

    _, src = cases
    affine = _with_spacing(src.affine.numpy(), (0.86, 0.86, 7.0))
    nib.save(nib.Nifti1Image(src[0].numpy().astype(np.float32), affine), tmp_path / "thick.nii.gz")
    out = tmp_path / "thin.nii.gz"
    code = main(["enhance", str(tmp_path / "thick.nii.gz"), str(out), "--bundle", "mri_sr_selfsupervised", "--quiet",
                 "--set", "fit_steps=2", "--set", "fit_seconds=null", "--set", "num_threads=1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    img = nib.load(out)
    assert img.shape == (40, 48, 6 * 8)
    np.testing.assert_allclose(img.affine, geometry.scaled_affine(affine, (1, 1, 8)), atol=1e-5)
    np.testing.assert_allclose(geometry.spacing_from_affine(img.affine), [0.86, 0.86, 0.875], atol=1e-5)
    assert "through-plane factor x8 from the spacing (ratio 7 / 0.86 = 8.14, not an integer: policy 'round' takes 8)" in printed
    assert "7 / 8 = 0.875 mm" in printed


def test_dicom_series_of_another_factor_gets_its_slice_thickness_divided_by_that_factor(cases, tmp_path, capsys):
    """A DICOM series of 0.86 mm pixels and 2 mm slices: 2 / 0.86 = 2.33 -> x2; the derived series has twice the
    slices, the FOV-preserving affine and SliceThickness / 2 (enhance reads the scale of the rebuilt network)."""
    from monai_sr.cli import main

    folder, _ = cases
    for f in sorted((folder / "series_a").iterdir()):
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = [0.86, 0.86]
        ds.save_as(f)
    src = load_dicom_series(folder / "series_a")
    out = tmp_path / "x2"
    code = main(["enhance", str(folder / "series_a"), str(out), "--bundle", "mri_sr_selfsupervised", "--quiet",
                 "--set", "fit_steps=2", "--set", "fit_seconds=null"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "through-plane factor x2 from the spacing (ratio 2 / 0.86 = 2.33" in printed and "scale 1 x 1 x 2" in printed
    series = load_dicom_series(out)
    assert tuple(series.shape[1:]) == (src.shape[1], src.shape[2], 2 * src.shape[3])
    np.testing.assert_allclose(series.affine.numpy(), geometry.scaled_affine(src.affine.numpy(), (1, 1, 2)), atol=1e-4)
    first = pydicom.dcmread(next(iter(sorted(out.iterdir()))))
    thickness = float(pydicom.dcmread(next(iter(sorted((folder / "series_a").iterdir())))).SliceThickness)
    assert float(first.SliceThickness) == pytest.approx(thickness / 2)


def test_cli_refuses_a_series_too_thick_or_isotropic_in_one_line(cases, tmp_path, capsys):
    from monai_sr.cli import main

    _, src = cases
    for name, spacing, match in (("thick", (0.5, 0.5, 7.0), "x14 is beyond x10, too thick"),
                                 ("iso", (2.0, 2.0, 2.0), "through-plane SR needs a ratio of at least 2")):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(src[0].numpy().astype(np.float32), _with_spacing(src.affine.numpy(), spacing)), path)
        code = main(["enhance", str(path), str(tmp_path / f"{name}_out.nii.gz"), "--bundle", "mri_sr_selfsupervised",
                     "--quiet", "--set", "fit_steps=2"])
        err = capsys.readouterr().err
        assert code != 0 and match in err and "Traceback" not in err, err
        assert not (tmp_path / f"{name}_out.nii.gz").exists()


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """train.json + multi_gpu_train.json under torchrun (2 processes, gloo on CPU), tiny overrides."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", "['configs/train.json','configs/multi_gpu_train.json']", "--logging_file", "configs/logging.conf",
           "--bundle_root", ".", "--output_dir", str(out), "--epoch_length", "2", "--batch_size", "2", "--max_epochs", "1",
           "--patch_schedule", "{'0': 8}", "--validate#dataset#step", "1000", "--num_threads", "1", "--val_interval", "1"]
    run = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])
