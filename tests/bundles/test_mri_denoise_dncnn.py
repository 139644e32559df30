"""The mri_denoise_dncnn bundle: a folder of cases through ConfigWorkflow keeps the grid, the trained
network removes Rician noise from a real held-out slab (Colin27), and the noise level is reported.

The generic checks (metadata schema, verify_net_in_out, shape = input x scale, ckpt_export, train /
evaluate smoke runs) are in tests/bundles/test_bundle_spec.py.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from data_volumes import needs_colin27
from helpers import REPO

from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.validation.metrics import head_mask, psnr
from monai_sr.training.datasets import shared_data_dir

BUNDLE = REPO / "bundles" / "mri_denoise_dncnn"
COLIN = shared_data_dir() / "colin27_t1_1mm.nii.gz"


def _workflow(**overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer", bundle_root=str(BUNDLE), **overrides
    )
    wf.initialize()
    return wf


def test_layout_and_declared_identity_scale():
    from monai_sr.bundles import load_inference_parts

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == ["H", "W"]
    state = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and state
    parts = load_inference_parts(BUNDLE)
    net = parts["network"]
    assert tuple(net.scale) == (1, 1)
    with torch.inference_mode():
        assert net(torch.rand(2, 1, 45, 54)).shape == (2, 1, 45, 54)
    assert parts["adapt"] is not None  # the noise report rides on enhance's adapt hook (CLI too)


def test_config_workflow_folder_of_cases(cases, tmp_path):
    folder, src = cases
    out = tmp_path / "out"
    wf = _workflow(input_path=str(folder), output_path=str(out), output_format="nifti")
    wf.run()
    report = wf.parser.get_parsed_content("noise_report")
    wf.finalize()
    assert sorted(p.name for p in out.iterdir()) == ["series_a.nii.gz", "volume_b.nii.gz"]
    for name in ("series_a.nii.gz", "volume_b.nii.gz"):
        img = nib.load(out / name)
        assert img.shape == tuple(src.shape[1:])  # a denoiser keeps the grid
        np.testing.assert_allclose(img.affine, src.affine.numpy(), atol=1e-4)
    assert len(report.records) == 2
    assert all(r["sigma"] > 0 and np.isfinite(r["sigma"]) for r in report.records)
    assert "% of the bright signal" in report.summary()


def test_dicom_output_is_a_derived_series_saying_denoised(small_series, tmp_path):
    import pydicom

    out = tmp_path / "dcm"
    wf = _workflow(input_path=str(small_series), output_path=str(out))
    wf.run()
    wf.finalize()
    series = out / small_series.name
    back = load_dicom_series(series)
    assert back.shape == load_dicom_series(small_series).shape
    ds = pydicom.dcmread(next(p for p in series.iterdir() if p.is_file()), stop_before_pixels=True)
    assert "Denoised" in ds.DerivationDescription
    assert "DERIVED" in ds.ImageType


@needs_colin27
def test_denoises_a_real_noisy_slab_and_reports_its_noise(tmp_path):
    """Colin27 (held out from training), 4 whole axial slices, Rician noise at 5% of the bright signal: the
    bundle's output is much closer to the clean slab than the noisy input, and the reported noise
    level is close to the 5% that was added."""
    img = nib.as_closest_canonical(nib.load(str(COLIN)))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    bright = robust_max(vol)
    clean = np.ascontiguousarray(vol[:, :, 88:92])
    noisy = rician_noise(clean, 0.05 * bright, np.random.default_rng(7))
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(noisy, img.affine), str(tmp_path / "in" / "colin_noisy.nii.gz"))
    wf = _workflow(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "out"), output_format="nifti")
    wf.run()
    report = wf.parser.get_parsed_content("noise_report")
    wf.finalize()
    den = np.asarray(nib.load(str(tmp_path / "out" / "colin_noisy.nii.gz")).dataobj, dtype=np.float32)
    mask = head_mask(vol)[:, :, 88:92]  # of the whole volume (the head, not the slab, decides the mask)
    before = psnr(noisy, clean, data_range=bright, mask=mask)
    after = psnr(den, clean, data_range=bright, mask=mask)
    assert after > before + 4.0, (before, after)
    # the pipeline normalises by the noisy slab's own 99.5th percentile; the report is a fraction of it
    (record,) = report.records
    (result,) = wf.parser.get_parsed_content("enhance")
    assert any("estimated noise sigma" in note for note in result.notes)  # in the summary the CLI prints
    assert record["method"].startswith("smaller: ")  # the estimate the SURE blend uses
    assert record["sigma"] * robust_max(noisy) == pytest.approx(0.05 * bright, rel=0.05)
    # 0.3.0: the SURE blend decided, said so, and its result is at least as good as the network's alone
    decision = wf.parser.get_parsed_content("inferer").last_decision
    assert decision is not None and not decision.skipped and sum(decision.weights.values()) == pytest.approx(1.0)
    assert decision.sigma == pytest.approx(record["sigma"], rel=1e-6)  # one noise level in the notes, not two
    assert any(note.startswith("SURE blend (noise sigma") for note in result.notes)
    assert list(decision.weights) == ["network", "nlmeans blockwise", "nlmeans classic", "input"]  # 0.4.0
    assert decision.risk["blend"] <= min(decision.risk.values()) + 1e-12


def test_cli_with_the_bundle_uses_its_derivation_text(small_series, tmp_path):
    import pydicom
    from helpers import run_cli

    out = tmp_path / "cli_dcm"
    proc = run_cli("enhance", str(small_series), str(out), "--bundle", "mri_denoise_dncnn", "--quiet")
    assert proc.returncode == 0, proc.stderr
    ds = pydicom.dcmread(next(p for p in out.iterdir() if p.is_file()), stop_before_pixels=True)
    assert ds.DerivationDescription.startswith("Denoised")
    assert "noise sigma" in proc.stdout


@pytest.mark.parametrize("spacing, planes", [((1.0, 1.0, 5.0), "1 plane orientation(s): slices along axis 2"),
                                             ((1.0, 1.0, 1.2), "3 plane orientation(s)"),
                                             ((4.0, 0.8, 0.8), "1 plane orientation(s): slices along axis 0")])
def test_voxel_size_chooses_the_planes(tmp_path, spacing, planes):
    """The default ``plane_axes: auto``: thick slices are denoised in their own plane only, near-isotropic
    voxels along the three orientations; the choice is in the result's notes."""
    rng = np.random.default_rng(3)
    vol = (rng.random((24, 20, 16)) * 100).astype(np.float32)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(vol, np.diag([*spacing, 1.0])), str(tmp_path / "in" / "case.nii.gz"))
    wf = _workflow(input_path=str(tmp_path / "in"), output_path=str(tmp_path / "out"), output_format="nifti")
    wf.run()
    (result,) = wf.parser.get_parsed_content("enhance")
    wf.finalize()
    assert any(planes in note for note in result.notes), result.notes
    assert nib.load(str(tmp_path / "out" / "case.nii.gz")).shape == vol.shape


def test_cli_takes_a_known_noise_sigma_and_refuses_a_bad_one(small_series, tmp_path):
    """``--set noise_sigma=N`` (the input's units): the blend uses it instead of its estimate and says so;
    a negative one is refused with a message naming the id, before any output."""
    from helpers import run_cli

    out = tmp_path / "given.nii.gz"
    proc = run_cli("enhance", str(small_series), str(out), "--bundle", "mri_denoise_dncnn", "--set", "noise_sigma=12.5")
    assert proc.returncode == 0, proc.stderr
    assert "given: 12.5 in the input's units" in proc.stdout
    bad = tmp_path / "bad.nii.gz"
    proc = run_cli("enhance", str(small_series), str(bad), "--bundle", "mri_denoise_dncnn", "--set", "noise_sigma=-1")
    assert proc.returncode != 0 and "noise_sigma must be a positive number" in proc.stderr and not bad.exists()
