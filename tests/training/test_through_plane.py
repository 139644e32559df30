"""Through-plane (SMORE-style) pairs: a pair made from a high-resolution plane is exactly the plane the
OrthogonalPlanesInferer feeds the network when the volume was degraded along its slice axis; pairs from
the input take the header's thickness; the per-volume fit learns within its step budget. The factor from
the spacing (integer and non-integer ratios, the note, refusals), a network rebuilt for another factor (the
pretrained body loads, phase / zero / pretrained heads) and the output geometry of a fit at x8."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SAMPLE_REFERENCE
from monai.data import MetaTensor
from torch import nn

from monai_sr import geometry
from monai_sr.errors import InputError, ModelError
from monai_sr.inference import OrthogonalPlanesInferer
from monai_sr.networks import SRUNet
from monai_sr.training.internal import ThroughPlaneFit, fit_on_volume
from monai_sr.training.through_plane import (
    ThroughPlanePairMaker,
    ThroughPlanePairs,
    ThroughPlaneStack,
    degrade_plane,
    profile_thickness_px,
    rescale_through_plane_network,
    through_plane_factor,
    through_plane_factor_from_spacing,
)
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.lowres import SimulateLowResolution
from monai_sr.transforms.spacing import SLICE_THICKNESS_KEY


class Recorder(nn.Module):
    """Declares ``scale`` and records every batch of planes it is given (nearest upsampling out)."""

    def __init__(self, scale):
        super().__init__()
        self.scale = tuple(scale)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


@pytest.fixture(scope="module")
def hr() -> np.ndarray:
    """A real, roughly isotropic block of the Colin27 sample reference (1 x 1 x 2 mm), 24 x 28 x 32, normalised."""
    data = np.asarray(nib.load(SAMPLE_REFERENCE).dataobj, dtype=np.float32)[70:94, 90:118, 14:46]
    return data / robust_max(data)


@pytest.fixture(scope="module")
def lr_volume() -> MetaTensor:
    """The reference's in-plane-sharp crop degraded along its slice axis: 1 x 1 x 8 mm, 8 mm Gaussian slices."""
    img = nib.load(SAMPLE_REFERENCE)
    data = np.asarray(img.dataobj, dtype=np.float32)[40:136, 60:156, 10:42]
    hr = MetaTensor(torch.from_numpy(data[None] / robust_max(data)), affine=torch.as_tensor(img.affine))
    return SimulateLowResolution((1, 1, 4), slice_axis=2)(hr)  # (1, 96, 96, 8), thickness 8 mm in meta


@pytest.mark.parametrize("scale", [(1, 4), (4, 1)])
@pytest.mark.parametrize("thickness", [4.0, 2.5])
def test_pair_geometry_matches_what_the_inferer_feeds_the_network(hr, scale, thickness):
    """Degrade the volume along Z (the inferer's lr_axis), record the planes the inferer hands the network,
    and compare them with pairs made plane by plane from the HR volume: identical, both plane stacks."""
    factor = max(scale)
    lr = SimulateLowResolution((1, 1, factor), slice_axis=2, slice_thickness=thickness)(hr[None])
    net = Recorder(scale)
    OrthogonalPlanesInferer(lr_axis=2, batch_size=1000)(MetaTensor(torch.from_numpy(np.asarray(lr))), net)
    assert len(net.seen) == 2  # one batch per plane stack: cut along X, then along Y
    _, coarse = through_plane_factor(net)
    for seen, (axis, hr_planes) in zip(net.seen, [(0, hr), (1, np.moveaxis(hr, 1, 0))]):
        # HR planes (fine, coarse) = (the other in-plane axis, Z); the pair's coarse axis is Z
        pair_lr, pair_hr = degrade_plane(hr_planes, factor, coarse_axis=1, thickness=thickness)
        if coarse == 0:
            pair_lr = np.swapaxes(pair_lr, 1, 2)
        assert seen.shape[0] == hr.shape[axis] and seen.shape[1] == 1
        np.testing.assert_allclose(seen[:, 0].numpy(), pair_lr, atol=1e-5)
        # and the pair maker (the pretraining pairs) lays out input and target the same way
        maker = ThroughPlanePairMaker(factor, thickness=thickness, coarse_axis=coarse)
        item = maker.slice_pair(hr_planes[3])
        np.testing.assert_allclose(item["image"][0].numpy(), seen[3, 0].numpy(), atol=1e-5)
        expect_hr = hr_planes[3] if coarse == 1 else hr_planes[3].T
        np.testing.assert_array_equal(item["label"][0].numpy(), expect_hr)


def test_pair_maker_crops_are_aligned_with_whole_plane_degradation(hr):
    maker = ThroughPlanePairMaker(4, min_foreground=0.0)
    item = maker(hr, np.random.default_rng(3), 5)
    x, y = item["image"], item["label"]
    assert x.shape == (1, 5, 5) and y.shape == (1, 5, 20)
    # the target is a crop of one plane of hr; its own degradation (rows are independent) contains x
    hits = []
    for a in range(3):
        for c in range(3):
            if a == c:
                continue
            for k in range(hr.shape[a]):
                plane = np.take(hr, k, axis=a)
                plane = plane if 3 - a - c < c else plane.T
                for i in range(plane.shape[0] - 4):
                    for start in range(plane.shape[1] - 19):
                        if np.array_equal(plane[i : i + 5, start : start + 20], y[0].numpy()):
                            hits.append((plane, i, start))
    assert hits, "the target is not a crop of any plane"
    plane, i, start = hits[0]
    phase = start % 4
    full_lr, _ = degrade_plane(plane[i : i + 5, phase:], 4)
    np.testing.assert_allclose(x[0].numpy(), full_lr[:, (start - phase) // 4 : (start - phase) // 4 + 5], atol=1e-6)


def test_pairs_from_input_use_the_header_thickness(lr_volume):
    net = SRUNet(2, scale=(1, 4), channels=(8,))
    assert lr_volume.meta[SLICE_THICKNESS_KEY] == pytest.approx(8.0)
    pairs = ThroughPlanePairs.from_input(lr_volume, net, lr_axis=2, lr_size=(16, 8), seed=0)
    assert len(pairs.stacks) == 2 and pairs.factor == 4
    # in-plane slices (96 x 96 at 1 mm) degraded along X, then along Y: coarse along the last axis
    s_x, s_y = pairs.stacks
    assert s_y.hr.shape == (8, 96, 96) and s_y.lr.shape == (8, 96, 24)
    np.testing.assert_array_equal(s_y.hr, np.moveaxis(lr_volume[0].numpy(), 2, 0))
    np.testing.assert_array_equal(s_x.hr, np.transpose(lr_volume[0].numpy(), (2, 1, 0)))
    expect = degrade_plane(s_y.hr, 4, thickness=profile_thickness_px(4, slice_spacing=8.0, slice_thickness=8.0))[0]
    np.testing.assert_allclose(s_y.lr, expect, atol=1e-6)
    x, y = pairs.batch(3)
    assert x.shape == (3, 1, 16, 8) and y.shape == (3, 1, 16, 32)
    # a thinner slice (gap) from the override: a narrower profile, so sharper LR planes
    thin = ThroughPlanePairs.from_input(lr_volume, net, slice_thickness=4.0)
    assert np.abs(np.diff(thin.stacks[0].lr, axis=2)).mean() > np.abs(np.diff(s_y.lr, axis=2)).mean()
    t = SRUNet(2, scale=(4, 1), channels=(8,))
    x, y = ThroughPlanePairs.from_input(lr_volume, t, lr_size=(16, 8)).batch(2)
    assert x.shape == (2, 1, 8, 16) and y.shape == (2, 1, 32, 16)
    with pytest.raises(ModelError):
        ThroughPlanePairs.from_input(lr_volume, SRUNet(2, scale=2, channels=(8,)))


def test_through_plane_fit_learns_within_its_step_budget(lr_volume):
    """30 steps (the fit's time budget is tested with a tick clock in test_internal.py: no timing here)."""
    torch.manual_seed(0)
    net = SRUNet(2, scale=(1, 4), channels=(8, 16), residual=False)  # starts at ~0: a working fit must cut the loss
    probe = ThroughPlanePairs.from_input(lr_volume, net, lr_size=16, seed=99)
    x, y = (torch.from_numpy(a) for a in probe.batch(16))
    with torch.inference_mode():
        before = float(F.l1_loss(net(x), y))
    hook = ThroughPlaneFit(steps=30, seconds=None, lr=3e-3, lr_size=16, threads=1)
    fitted = hook(lr_volume, net)
    rec = hook.last_record
    assert rec.stopped_by == "steps" and rec.steps == 30
    with torch.inference_mode():
        after = float(F.l1_loss(fitted(x), y))
    assert after < 0.5 * before, (before, after)
    # and the fitted network runs in the inferer on the input: 4 times finer along the slice axis
    out = OrthogonalPlanesInferer(lr_axis=2)(lr_volume, fitted)
    assert tuple(out.shape) == (1, 96, 96, 32)


def test_stack_and_factor_errors(hr):
    with pytest.raises(ValueError):
        ThroughPlaneStack.from_volume(hr, plane_axis=1, coarse_axis=1, factor=4)
    with pytest.raises(ModelError):
        through_plane_factor(SRUNet(2, scale=(2, 2), channels=(8,)))
    with pytest.raises(ValueError):
        degrade_plane(np.zeros((4, 3)), 4)
    with pytest.raises(ValueError):
        fit_on_volume(SRUNet(2, scale=(1, 4), channels=(8,)), None)


# --- the factor from the spacing, and a network rebuilt for it -------------------------------------------

BUNDLE_WEIGHTS = Path(__file__).resolve().parents[2] / "bundles" / "mri_sr_selfsupervised" / "models" / "model.pt"


def test_factor_from_spacing_integer_and_non_integer_with_the_note():
    f = through_plane_factor_from_spacing((1.0, 1.0, 4.0), 2)
    assert (f.factor, f.output_spacing, f.exact) == (4, 1.0, True)
    assert f.note().startswith("through-plane factor x4 from the spacing (ratio 4 / 1 = 4)")
    # the clinical thick-slice case: 0.86 x 0.86 x 7 mm -> x8, output slices 7 / 8 = 0.875 mm
    f = through_plane_factor_from_spacing((0.86, 0.86, 7.0), 2)
    assert f.factor == 8 and not f.exact and f.ratio == pytest.approx(8.1395, abs=1e-3)
    assert f.output_spacing == pytest.approx(0.875)
    note = f.note()
    assert "policy 'round' takes 8" in note and "7 / 8 = 0.875 mm" in note and "target 0.86 mm" in note
    # the slice axis is lr_axis; the target defaults to the mean in-plane spacing
    assert through_plane_factor_from_spacing((5.0, 1.0, 1.0), 0).factor == 5
    assert through_plane_factor_from_spacing((1.0, 1.0, 4.5), 2).factor == 5
    assert through_plane_factor_from_spacing((1.0, 1.0, 4.5), 2, policy="floor").factor == 4
    assert through_plane_factor_from_spacing((1.0, 1.0, 7.0), 2, target_spacing=2.0).factor == 4  # 3.5 -> 4
    with pytest.raises(InputError, match=r"4.5 / 1 = 4.5 mm/mm is not an integer \(policy 'exact'"):
        through_plane_factor_from_spacing((1.0, 1.0, 4.5), 2, policy="exact")


@pytest.mark.parametrize(
    "spacing,kwargs,match",
    [
        ((2.0, 2.0, 2.0), {}, r"slice spacing 2 mm is only 1 times the target 2 mm .*at least 2"),  # isotropic
        ((1.0, 1.0, 1.3), {}, r"only 1.3 times"),  # thin slices
        ((1.0, 1.0, 14.0), {}, r"x14 is beyond x10, too thick"),
        ((0.86, 0.86, 7.0), {"max_factor": 6}, r"x8 is beyond x6"),
        ((1.0, 1.0, 5.0), {"target_spacing": 6.0}, r"only 0.833 times"),  # a target coarser than the slices
    ],
)
def test_too_thin_or_too_thick_ratios_are_refused_clearly(spacing, kwargs, match):
    with pytest.raises(InputError, match=match):
        through_plane_factor_from_spacing(spacing, 2, **kwargs)


def test_a_network_of_another_factor_keeps_the_pretrained_body():
    pretrained = torch.load(BUNDLE_WEIGHTS, map_location="cpu", weights_only=True)
    net = SRUNet(2, scale=(1, 4), channels=(32, 64, 128))
    net.load_state_dict(pretrained)
    assert rescale_through_plane_network(net, 4) is net  # the pretrained factor: nothing rebuilt
    x = torch.rand(2, 1, 20, 12)
    for factor in (2, 5, 8):
        for head in ("phase", "zero"):
            new = rescale_through_plane_network(net, factor, head_init=head)
            assert new.scale == (1, factor) and net.scale == (1, 4)  # the original is untouched
            state = new.state_dict()
            for key, value in pretrained.items():  # every body weight loads as it was
                if not key.startswith("head."):
                    torch.testing.assert_close(state[key], value, rtol=0, atol=0)
            assert state["head.weight"].shape == (factor, 32, 3, 3)
            with torch.inference_mode():
                y = new(x)
            assert y.shape == (2, 1, 20, 12 * factor)
            if head == "zero":  # the interpolation residual alone
                torch.testing.assert_close(y, F.interpolate(x, scale_factor=(1.0, float(factor)), mode="bicubic"))
    # the phase head is the pretrained sub-pixel filters, interpolated in sub-pixel offset: a head whose
    # filters are linear in the offset is reproduced exactly at the new offsets
    lin = SRUNet(2, scale=(4, 1), channels=(8,))
    base, slope = torch.randn(8, 3, 3), torch.randn(8, 3, 3)
    offsets = (torch.arange(4) + 0.5) / 4 - 0.5
    with torch.no_grad():
        lin.head.weight.copy_(base + offsets[:, None, None, None] * slope)
        lin.head.bias.copy_(0.1 * offsets)
    new = rescale_through_plane_network(lin, 8)
    off8 = (torch.arange(8) + 0.5) / 8 - 0.5
    assert new.scale == (8, 1)
    torch.testing.assert_close(new.head.weight.detach(), base + off8[:, None, None, None] * slope)
    torch.testing.assert_close(new.head.bias.detach(), 0.1 * off8)
    with pytest.raises(ModelError, match="no sub-pixel 'head'"):
        rescale_through_plane_network(Recorder((1, 4)), 8)
    with pytest.raises(ModelError):
        rescale_through_plane_network(SRUNet(2, scale=2, channels=(8,)), 4)


def test_fit_with_the_factor_from_the_spacing_and_the_output_geometry(lr_volume):
    """1 x 1 x 8 mm slices (8 mm thick): x8 from the spacing, a rebuilt x4 network fitted on the input,
    the output 8 times finer along the slices with the field-of-view rule and 1 mm slice spacing."""
    net = SRUNet(2, scale=(1, 4), channels=(8, 16))
    image = MetaTensor(lr_volume.as_tensor().clone(), meta=dict(lr_volume.meta))
    image.meta["monai_sr_notes"] = []
    hook = ThroughPlaneFit(steps=2, seconds=None, lr_size=16, threads=1, factor="spacing")
    fitted = hook(image, net)
    assert fitted.scale == (1, 8) and net.scale == (1, 4) and hook.last_record.steps == 2
    notes = image.meta["monai_sr_notes"]
    assert notes[0].startswith("through-plane factor x8 from the spacing (ratio 8 / 1 = 8)")
    assert "network rebuilt from scale (1, 4)" in notes[0] and notes[1].startswith("per-volume fit")
    out = OrthogonalPlanesInferer(lr_axis=2)(lr_volume, fitted.eval())
    assert tuple(out.shape) == (1, 96, 96, 64)
    a_in, a_out = lr_volume.affine.numpy(), out.affine.numpy()
    np.testing.assert_allclose(a_out, geometry.scaled_affine(a_in, (1, 1, 8)), atol=1e-9)
    sp_in, sp_out = geometry.spacing_from_affine(a_in), geometry.spacing_from_affine(a_out)
    np.testing.assert_allclose(sp_out, [sp_in[0], sp_in[1], sp_in[2] / 8], atol=1e-9)  # slice spacing / s
    # FOV rule: output slice j sits at input index (j + 0.5) / 8 - 0.5: the first 3.5 / 8 of an input step below
    first_in, first_out = a_in[:3, 3], a_out[:3, 3]
    np.testing.assert_allclose(first_out, first_in - a_in[:3, 2] * 3.5 / 8, atol=1e-9)
    # the same hook with the fit off still builds the network for the factor (no fit record)
    off = ThroughPlaneFit(steps=2, seconds=None, factor="spacing", enabled=False, head_init="zero")
    plain = off(lr_volume, net)
    assert plain.scale == (1, 8) and off.records == []
    # a given factor, and the default (None): the network's own
    assert ThroughPlaneFit(steps=1, factor=2, enabled=False)(lr_volume, net).scale == (1, 2)
    assert ThroughPlaneFit(steps=1, enabled=False)(lr_volume, net) is net
    with pytest.raises(ValueError, match="factor must be None, 'spacing' or a positive int"):
        ThroughPlaneFit(steps=1, factor="auto")


def test_pretrained_heads_per_factor_load_safely_and_fall_back_to_phase(tmp_path, lr_volume):
    from monai_sr.training.through_plane import load_heads

    net = SRUNet(2, scale=(1, 4), channels=(8, 16))
    w5, b5 = torch.randn(5, 8, 3, 3), torch.randn(5)
    torch.save({"5.weight": w5, "5.bias": b5}, tmp_path / "heads.pt")
    heads = load_heads(tmp_path / "heads.pt")
    assert set(heads) == {5}
    new = rescale_through_plane_network(net, 5, head_init="pretrained", heads=heads)
    torch.testing.assert_close(new.head.weight.detach(), w5)
    torch.testing.assert_close(new.head.bias.detach(), b5)
    # the hook: a factor with a trained head uses it, one without falls back to the phase head (noted)
    image = MetaTensor(lr_volume.as_tensor(), meta={**lr_volume.meta, "monai_sr_notes": []})
    hook = ThroughPlaneFit(steps=1, factor=5, enabled=False, head_init="pretrained", heads=str(tmp_path / "heads.pt"))
    torch.testing.assert_close(hook(image, net).head.weight.detach(), w5)
    assert "pretrained x5 head" in image.meta["monai_sr_notes"][-1]
    hook = ThroughPlaneFit(steps=1, factor="spacing", enabled=False, head_init="pretrained", heads=str(tmp_path / "heads.pt"))
    assert hook(image, net).scale == (1, 8) and "phase x8 head" in image.meta["monai_sr_notes"][-1]
    with pytest.raises(ModelError, match="needs"):
        rescale_through_plane_network(SRUNet(2, scale=(1, 4), channels=(4,)), 5, head_init="pretrained", heads=heads)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the through-plane heads"):
        load_heads(tmp_path / "bad.pt")
    torch.save({"five.weight": w5}, tmp_path / "odd.pt")
    with pytest.raises(ModelError, match="unexpected entry 'five.weight'"):
        load_heads(tmp_path / "odd.pt")


def test_validate_through_plane_scores_the_network_and_cubic_and_keeps_the_mode():
    """The training scripts' shared validation: the untrained SR-UNet (its zero head: bicubic) and the
    cubic B-spline score alike on a smooth image, a network that returns zeros scores far lower, and the
    network's train/eval mode comes back as it was."""
    from monai_sr.networks import SRUNet
    from monai_sr.training.through_plane import validate_through_plane

    yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    hr = (0.5 + 0.4 * np.sin(3 * xx) * np.cos(2 * yy)).astype(np.float32)
    pair = {"image": torch.from_numpy(hr[None, :, ::2].copy()), "label": torch.from_numpy(hr[None])}
    net = SRUNet(2, scale=(1, 2), channels=(4, 8)).train()
    v_net, v_cubic = validate_through_plane(net, [pair, pair], 2)
    assert net.training
    assert v_cubic > 35 and abs(v_net - v_cubic) < 6, (v_net, v_cubic)

    class Zeros(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape[:-1], 2 * x.shape[-1])

    zeros = Zeros().eval()
    assert validate_through_plane(zeros, [pair], 2)[0] < v_net - 20
    assert not zeros.training
