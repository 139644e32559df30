"""The mri_sr_unet bundle: runnable by MONAI's bundle runner and through ConfigWorkflow, weights load
safely, and the network's output is the input times the declared scale."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

from monai_sr import geometry
from monai_sr.io.dicom_reader import load_dicom_series

BUNDLE = REPO / "bundles" / "mri_sr_unet"


def test_layout():
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == ["2*H", "2*W"]


def test_weights_load_safely_and_scale_is_declared():
    from monai_sr.bundles import load_inference_parts

    state = torch.load(BUNDLE / "models" / "model.pt", weights_only=True)
    assert isinstance(state, dict) and state
    parts = load_inference_parts(BUNDLE)
    net = parts["network"]
    assert tuple(net.scale) == (2, 2)
    with torch.inference_mode():
        y = net(torch.rand(2, 1, 45, 54))
    assert y.shape == (2, 1, 90, 108)


def test_config_workflow_smoke(small_series, tmp_path):
    from monai.bundle import ConfigWorkflow

    out = tmp_path / "wf.nii.gz"
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        input_path=str(small_series),
        output_path=str(out),
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    src = load_dicom_series(small_series)
    import nibabel as nib

    img = nib.load(out)
    assert img.shape == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])
    np.testing.assert_allclose(img.affine, geometry.scaled_affine(src.affine.numpy(), (2, 2, 1)), atol=1e-4)


def test_bundle_runner_writes_dicom(small_series, tmp_path):
    out = tmp_path / "bundle_out"
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
         "--bundle_root", str(BUNDLE), "--input_path", str(small_series), "--output_path", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    back = load_dicom_series(out)
    src = load_dicom_series(small_series)
    assert back.shape[1:] == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])
