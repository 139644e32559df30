"""The mri_sr_selfsupervised bundle: metadata and declared scale, ConfigWorkflow inference on a folder of
cases (a DICOM series and a NIfTI volume) with a tiny per-volume fit budget, geometry of the outputs
(FOV-preserving affine, 4x the slices, SliceThickness divided by 4), the fit switch."""

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
    assert parts["adapt"] is not None and parts["adapt"].steps == 2
    assert load_inference_parts(BUNDLE, fit=False)["adapt"] is None


def test_config_workflow_fits_each_case_and_writes_the_scaled_geometry(cases, tmp_path):
    from monai.bundle import ConfigWorkflow

    folder, src = cases
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


def test_fit_switch_off(cases, tmp_path):
    from monai.bundle import ConfigWorkflow

    folder, src = cases
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
