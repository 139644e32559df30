"""The research-script API: monai_sr.enhance on paths, MetaTensors, nibabel and SimpleITK images, and the
SuperResolved transform in a MONAI pipeline; the same result as the CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import run_cli
from monai.data import MetaTensor

import monai_sr
from monai_sr import geometry
from monai_sr.errors import InputError
from monai_sr.transforms.superresolve import SuperResolved

AFFINE = np.array([[0.0, 0.0, 3.0, -40.0], [1.2, 0.0, 0.0, 10.0], [0.0, 1.1, 0.0, -7.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def bundle():
    return monai_sr.load_bundle("mri_sr_unet", fast=True)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return (rng.random((24, 20, 4)) * 300).astype(np.float32)


def test_path_in_memory_equals_the_cli(tmp_path, volume):
    src = tmp_path / "in.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), src)
    out = monai_sr.enhance(src, fast=True)
    assert isinstance(out, MetaTensor) and out.shape == (1, 48, 40, 4)
    np.testing.assert_allclose(out.affine.numpy(), geometry.scaled_affine(AFFINE, (2, 2, 1)), atol=1e-6)
    cli = tmp_path / "cli.nii.gz"
    assert run_cli("enhance", src, cli, "--fast", "--quiet").returncode == 0
    np.testing.assert_allclose(out[0].numpy(), np.asarray(nib.load(cli).dataobj), rtol=1e-4, atol=1e-3)


def test_nibabel_and_simpleitk_round_trip(volume, bundle):
    import SimpleITK as sitk

    img = nib.Nifti1Image(volume, AFFINE)
    out = monai_sr.enhance(img, bundle=bundle)
    assert isinstance(out, nib.Nifti1Image) and out.shape == (48, 40, 4)
    np.testing.assert_allclose(out.affine, geometry.scaled_affine(AFFINE, (2, 2, 1)), atol=1e-6)

    s = sitk.GetImageFromArray(volume.transpose(2, 1, 0).copy())  # (Z, Y, X)
    s.SetSpacing((0.9, 0.8, 2.5))
    s.SetOrigin((10.0, -5.0, 3.0))
    res = monai_sr.enhance(s, bundle=bundle)
    assert isinstance(res, sitk.Image) and res.GetSize() == (48, 40, 4)
    np.testing.assert_allclose(res.GetSpacing(), (0.45, 0.4, 2.5), atol=1e-9)
    # the field of view is kept: the outer corner of the first voxel is the same point
    corner_in = np.array(s.GetOrigin()) - 0.5 * np.array(s.GetSpacing())
    corner_out = np.array(res.GetOrigin()) - 0.5 * np.array(res.GetSpacing())
    np.testing.assert_allclose(corner_in[:2], corner_out[:2], atol=1e-6)
    # same voxels as the nibabel route for the same data (LPS <-> RAS only moves the geometry)
    np.testing.assert_allclose(sitk.GetArrayFromImage(res).transpose(2, 1, 0), out.get_fdata(), rtol=1e-4, atol=1e-3)


def test_superresolved_in_a_pipeline(volume, bundle):
    img = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(AFFINE))
    t = SuperResolved("image", bundle="mri_sr_unet", fast=True)
    out = t({"image": img, "label": 1})
    sr = out["image"]
    assert sr.shape == (1, 48, 40, 4) and out["label"] == 1
    np.testing.assert_allclose(sr.affine.numpy(), geometry.scaled_affine(AFFINE, (2, 2, 1)), atol=1e-6)
    op = sr.applied_operations[-1]
    assert op["class"] == "SuperResolve" and op["orig_size"] == (24, 20, 4) and op["extra_info"]["scale"] == [2, 2, 1]
    assert torch.equal(img.as_tensor(), torch.from_numpy(volume[None]))  # the input is untouched


def test_default_runs_the_guarded_fit_and_says_so(volume):
    img = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(AFFINE))
    out = monai_sr.enhance(img, **{"internal_learning_fit#steps": 3})
    assert any("guard (" in n for n in out.meta["monai_sr_notes"])


def test_bad_inputs():
    with pytest.raises(InputError, match="MetaTensor, a nibabel or a SimpleITK"):
        monai_sr.enhance(np.zeros((4, 4, 4)))
    bad = MetaTensor(torch.full((1, 8, 8, 2), float("nan")))
    with pytest.raises(InputError, match="NaN"):
        monai_sr.enhance(bad, fast=True)
    with pytest.raises(AttributeError):
        monai_sr.no_such_name  # noqa: B018


def test_fast_switches_only_the_fit_off():
    from monai_sr.bundles import without_fit
    from monai_sr.training.internal import InternalLearning, ThroughPlaneFit

    hook = InternalLearning(steps=5)
    off = without_fit(hook)
    assert off is not hook and off.enabled is False and hook.enabled is True
    tp = without_fit(ThroughPlaneFit(seconds=10, factor="spacing"))
    assert tp.enabled is False and tp.factor == "spacing"  # the factor from the spacing stays
    report = object()  # a hook that fits nothing (e.g. the denoiser's noise report) is kept
    assert without_fit(report) is report and without_fit(None) is None


def test_uncertainty_is_the_spread_of_the_flips(volume, bundle, tmp_path):
    from monai_sr.inference import ZeroFilledInterpolation
    from monai_sr.inference.uncertainty import ensemble_members
    from monai_sr.transforms.kspace import fourier_resample

    img = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(AFFINE))
    result, spread = monai_sr.enhance(img, bundle=bundle, uncertainty=True)
    plain = monai_sr.enhance(img, bundle=bundle)  # the bundle's own 4-flip self-ensemble
    assert spread.shape == result.shape and float(spread.min()) >= 0 and float(spread.max()) > 0
    np.testing.assert_allclose(result.numpy(), plain.numpy(), rtol=1e-3, atol=1e-2 * float(plain.abs().max()))
    # data consistency gives every member the measured band: the members differ only outside it
    members = ensemble_members(img, bundle.network, bundle.inferer)
    for m in members[1:]:
        diff = (m - members[0])[0].numpy().astype(np.float64)
        assert np.abs(diff).max() > 1e-3 * volume.max()
        assert np.abs(fourier_resample(diff, (24, 20), (0, 1))).max() < 1e-3 * volume.max()
    # a flip-equivariant "network" has no spread
    members = ensemble_members(img, ZeroFilledInterpolation(2), bundle.inferer)
    assert all(torch.allclose(m.as_tensor(), members[0].as_tensor(), atol=1e-3) for m in members)
    # written beside the output
    nii = nib.Nifti1Image(volume, AFFINE)
    monai_sr.enhance(nii, tmp_path / "sr.nii.gz", bundle=bundle, uncertainty=True)
    assert nib.load(tmp_path / "sr_uncertainty.nii.gz").shape == (48, 40, 4)
