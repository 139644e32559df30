"""The mri_sr_unet bundle: runnable by MONAI's bundle runner and through ConfigWorkflow, weights load
safely, and the network's output is the input times the declared scale."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from helpers import REPO

from monai_sr import geometry
from monai_sr.io.dicom.reader import load_dicom_series

BUNDLE = REPO / "bundles" / "mri_sr_unet"


def test_layout():
    for rel in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "models/model.pt", "models/model.ts",
                "docs/README.md", "LICENSE"):
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


def _workflow(**overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer", bundle_root=str(BUNDLE), **overrides
    )
    wf.initialize()
    return wf


def test_config_workflow_folder_of_cases_to_nifti(cases, tmp_path):
    import nibabel as nib

    folder, src = cases
    out = tmp_path / "out"
    wf = _workflow(input_path=str(folder), output_path=str(out), output_format="nifti")
    wf.run()
    wf.finalize()
    assert sorted(p.name for p in out.iterdir()) == ["series_a.nii.gz", "volume_b.nii.gz"]
    a, b = nib.load(out / "series_a.nii.gz"), nib.load(out / "volume_b.nii.gz")
    for img in (a, b):
        assert img.shape == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])
        np.testing.assert_allclose(img.affine, geometry.scaled_affine(src.affine.numpy(), (2, 2, 1)), atol=1e-4)
    np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), rtol=1e-3, atol=1e-2 * float(np.abs(a.get_fdata()).max()))


def test_internal_learning_switch(small_series, tmp_path):
    """internal_learning=True fits a copy of the network on the input before inference (2 steps here)."""
    import nibabel as nib

    outs = {}
    for switch in (False, True):
        out = tmp_path / f"il_{switch}"
        wf = _workflow(input_path=str(small_series), output_path=str(out), output_format="nifti",
                       internal_learning=switch, **{"internal_learning_fit#steps": 2, "internal_learning_fit#seconds": None,
                                                    "internal_learning_fit#lr_size": 8})
        wf.run()
        fit = wf.parser.get_parsed_content("internal_learning_fit")
        assert [r.steps for r in fit.records] == ([2] if switch else [])
        outs[switch] = nib.load(next(out.iterdir())).get_fdata()
    assert outs[True].shape == outs[False].shape
    assert not np.allclose(outs[True], outs[False])


def test_bundle_runner_writes_dicom(small_series, tmp_path):
    out = tmp_path / "bundle_out"
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "inference.json"),
         "--bundle_root", str(BUNDLE), "--input_path", str(small_series), "--output_path", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    back = load_dicom_series(out / small_series.name)
    src = load_dicom_series(small_series)
    assert back.shape[1:] == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])


def test_cli_runs_the_same_bundle(small_series, tmp_path):
    from helpers import run_cli

    out = tmp_path / "cli.nii.gz"
    run = run_cli("enhance", small_series, out, "--bundle", "mri_sr_unet", "--quiet")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    import nibabel as nib

    src = load_dicom_series(small_series)
    assert nib.load(out).shape == (src.shape[1] * 2, src.shape[2] * 2, src.shape[3])


def test_self_ensemble_switch_reaches_the_inferer():
    from monai_sr.bundles import load_inference_parts

    assert load_inference_parts(BUNDLE)["inferer"].self_ensemble == "full"  # the default: 8 flips and transposes
    assert load_inference_parts(BUNDLE, self_ensemble="true")["inferer"].self_ensemble == "full"
    assert load_inference_parts(BUNDLE, self_ensemble="false")["inferer"].self_ensemble == "none"
    assert load_inference_parts(BUNDLE, self_ensemble="FULL")["inferer"].self_ensemble == "full"
