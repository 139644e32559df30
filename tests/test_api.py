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


def test_the_fit_runs_guarded_when_asked_and_says_so(volume):
    img = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(AFFINE))
    out = monai_sr.enhance(img, internal_learning=True, **{"internal_learning_fit#steps": 3})
    assert any("guard (" in n for n in out.meta["monai_sr_notes"])
    default = monai_sr.enhance(img)  # mri_sr_unet 0.5.0: no fit by default
    assert not any("per-volume fit" in n for n in default.meta["monai_sr_notes"])


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


def test_superresolved_in_a_compose_equals_the_cli_and_inverts(tmp_path, bundle):
    """MONAI's transforms before (LoadImaged, EnsureChannelFirstd, Spacingd, Orientationd) and after
    (SaveImaged): the same voxels as monai-sr enhance on the same preprocessed volume, the field-of-view
    affine, and Invertd brings the result back onto the file's own grid."""
    from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, SaveImaged, Spacingd

    lps = np.array([[-1.2, 0.0, 0.0, 20.0], [0.0, -1.1, 0.0, 15.0], [0.0, 0.0, 2.5, -7.0], [0, 0, 0, 1]])
    x, y = np.meshgrid(np.arange(24), np.arange(20), indexing="ij")
    vol = np.stack([200 + 80 * np.sin(x / 3.0) * np.cos(y / 4.0) + 30 * k for k in range(4)], -1).astype(np.float32)
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(vol, lps), src)
    pre = [LoadImaged("image", image_only=True), EnsureChannelFirstd("image"),
           Spacingd("image", pixdim=(1.0, 1.0, 2.5)), Orientationd("image", axcodes="RAS")]
    full = Compose([*pre, SuperResolved("image", bundle=bundle),
                    SaveImaged("image", output_dir=tmp_path / "saved", output_postfix="sr", separate_folder=False,
                               resample=False, print_log=False)])
    data = full({"image": str(src)})
    sr = data["image"]
    assert [op["class"] for op in sr.applied_operations] == ["SpatialResample", "Orientation", "SuperResolve"]

    prepared = Compose(pre)({"image": str(src)})["image"]  # (1, 29, 22, 4), RAS
    assert prepared.shape == (1, 29, 22, 4) and sr.shape == (1, 58, 44, 4)
    expected_affine = geometry.scaled_affine(prepared.affine.numpy(), (2, 2, 1))
    saved = nib.load(tmp_path / "saved" / "case_sr.nii.gz")
    np.testing.assert_allclose(saved.affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(sr.affine.numpy(), expected_affine, atol=1e-6)
    # the CLI on the same preprocessed volume
    nib.save(nib.Nifti1Image(prepared[0].numpy(), prepared.affine.numpy()), tmp_path / "prepared.nii.gz")
    assert run_cli("enhance", tmp_path / "prepared.nii.gz", tmp_path / "cli.nii.gz", "--fast", "--quiet").returncode == 0
    cli = nib.load(tmp_path / "cli.nii.gz")
    np.testing.assert_allclose(np.asarray(saved.dataobj), np.asarray(cli.dataobj), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cli.affine, expected_affine, atol=1e-6)

    # inversion: SuperResolved alone gives back the prepared grid (its measured band: data consistency)
    sr_t = full.transforms[4]
    alone = sr_t.inverse({"image": sr.clone()})["image"]
    assert alone.shape == prepared.shape and [op["class"] for op in alone.applied_operations] == ["SpatialResample", "Orientation"]
    np.testing.assert_allclose(alone.affine.numpy(), prepared.affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(alone.numpy(), prepared.numpy(), atol=0.01 * float(prepared.max()))
    # Invertd through the whole chain: the file's own grid (shape, LPS-style affine), values close
    back = Invertd("image", transform=full, orig_keys="image")(data)["image"]
    assert back.shape == (1, 24, 20, 4)
    np.testing.assert_allclose(back.affine.numpy(), lps, atol=1e-5)
    assert np.corrcoef(back[0].numpy().ravel(), vol.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="empty .applied_operations."):  # an image it never made: not "inverted"
        sr_t.transform.inverse(MetaTensor(torch.zeros(1, 58, 44, 4), affine=torch.eye(4)))


def test_uncertainty_is_near_zero_on_a_constant_and_larger_on_an_edge(bundle):
    """The real network on a constant volume: the members nearly agree (the residue is the network's
    border handling: 0.52 % of the intensity at the outer rows with the 0.5.0 weights, 0.11 % from four output
    pixels in, 0.06 % from eight in); a step edge has a much larger spread than flat tissue.
    An ensemble whose members agree exactly (a flip-equivariant interpolator) has a spread of exactly 0."""
    from monai_sr.inference import ZeroFilledInterpolation
    from monai_sr.inference.uncertainty import ensemble_mean_and_spread

    affine = torch.as_tensor(np.diag([1.2, 1.1, 3.0, 1.0]))
    constant = MetaTensor(torch.full((1, 32, 32, 3), 200.0), affine=affine)
    result, spread = monai_sr.enhance(constant, bundle=bundle, uncertainty=True)
    assert float(spread.max()) < 0.01 * 200 and abs(float(result.mean()) - 200) < 1.0
    assert float(spread[0, 4:-4, 4:-4].max()) < 0.002 * 200  # away from the border, nearly nothing
    _, exact = ensemble_mean_and_spread(constant, ZeroFilledInterpolation(2), bundle.inferer)
    assert float(exact.max()) < 1e-4

    step = np.full((32, 32, 3), 100.0, np.float32)
    step[16:] = 300.0
    _, spread = monai_sr.enhance(MetaTensor(torch.from_numpy(step[None]), affine=affine), bundle=bundle, uncertainty=True)
    s = spread[0].numpy()  # output rows 32 (x2): the edge lies between rows 31 and 32
    edge, flat = s[28:36, 8:56].mean(), s[6:20, 8:56].mean()
    assert edge > 5 * flat, (edge, flat)


def test_a_map_that_is_zero_everywhere_says_it_means_nothing(volume, bundle, tmp_path):
    """A flip-equivariant network (what a guarded fit may fall back to) gives a map of zeros; the result's
    notes say the map tells nothing then. With an output, both files are written beside each other."""
    from monai_sr.inference import ZeroFilledInterpolation

    zf = monai_sr.api.Bundle(name="zero-filled", network=ZeroFilledInterpolation(2), inferer=bundle.inferer)
    img = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(AFFINE))
    result, spread = monai_sr.enhance(img, tmp_path / "zf.nii", bundle=zf, uncertainty=True)
    assert float(spread.abs().max()) < 1e-5 * float(result.abs().max())
    assert any("zero everywhere" in n for n in result.meta["monai_sr_notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zf.nii", "zf_uncertainty.nii"]
    plain, spread = monai_sr.enhance(img, bundle=bundle, uncertainty=True)
    assert not any("zero everywhere" in n for n in plain.meta["monai_sr_notes"])
