"""Per-volume fitting (monai_sr.training.internal): the loop lowers the loss on real data, budgets are
respected, and the adapt hooks fit a copy (the pretrained network is left as it was)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import SAMPLE_REFERENCE
from monai.data import MetaTensor

from monai_sr.errors import ModelError
from monai_sr.networks import SRUNet
from monai_sr.training.guard import split_held_out
from monai_sr.training.internal import FitRecord, InternalLearning, fit_on_volume, in_plane_pairs
from monai_sr.transforms.intensity import robust_max


@pytest.fixture(scope="module")
def volume() -> MetaTensor:
    """A real 1 x 1 x 2 mm crop of the Colin27 sample reference (96 x 96 x 8), normalised as the pipeline does."""
    img = nib.load(SAMPLE_REFERENCE)
    data = np.asarray(img.dataobj, dtype=np.float32)[40:136, 60:156, 26:34]
    data = data / robust_max(data)
    return MetaTensor(torch.from_numpy(data[None].copy()), affine=torch.as_tensor(img.affine))


def _eval_loss(net, x, y) -> float:
    with torch.inference_mode():
        return float(torch.nn.functional.l1_loss(net(torch.from_numpy(x)), torch.from_numpy(y)))


def test_fit_lowers_the_loss_on_unseen_pairs_of_the_same_volume(volume):
    # no global residual: the untrained network outputs ~0, so a working loop must cut the loss fast
    # (from the bicubic start of a residual SR-UNet the gain of a few seconds is too small to assert on)
    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(8, 16), residual=False)
    x, y = in_plane_pairs(volume, 2, lr_size=24, seed=123).batch(32)  # a fixed batch the fit never draws
    before = _eval_loss(net, x, y)
    net, rec = fit_on_volume(net, in_plane_pairs(volume, 2, lr_size=24, seed=0), steps=40, lr=3e-3, batch_size=8, threads=1)
    after = _eval_loss(net, x, y)
    assert isinstance(rec, FitRecord) and rec.steps == 40 and rec.stopped_by == "steps"
    assert not net.training
    assert after < 0.5 * before, (before, after)
    assert rec.loss_last < rec.loss_first


def test_time_budget_is_respected(volume):
    """The time budget is checked before each step: a fit overruns it by at most one step. The clock is a
    tick counter (one tick per reading: the start, then one check per step), so the budget is a step count
    and nothing here depends on how fast the machine is."""
    net = SRUNet(2, scale=2, channels=(8, 16))
    ticks = itertools.count()
    clock = lambda: float(next(ticks))  # noqa: E731
    _, rec = fit_on_volume(net, in_plane_pairs(volume, 2, lr_size=16), seconds=5, steps=10_000, batch_size=4, threads=1,
                           clock=clock)
    assert rec.stopped_by == "seconds" and rec.steps == 4  # checks at ticks 1..4 pass, the one at tick 5 stops
    assert rec.seconds == 6.0  # the record's reading: one tick past the budget, not one step


def test_zero_budget_and_bad_budgets(volume):
    net = SRUNet(2, scale=2, channels=(8,))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    _, rec = fit_on_volume(net, in_plane_pairs(volume, 2), steps=0)
    assert rec.steps == 0
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    for bad in ({}, {"steps": -1}, {"seconds": float("nan")}, {"steps": 1.5}):
        with pytest.raises(ValueError):
            fit_on_volume(net, in_plane_pairs(volume, 2), **bad)


def test_in_plane_pairs_are_kspace_truncated_input_slices(volume):
    src = in_plane_pairs(volume, 2, lr_size=16, seed=0)
    x, y = src.batch(4)
    assert x.shape == (4, 1, 16, 16) and y.shape == (4, 1, 32, 32)
    # the targets are crops of the input's own slices (up to flips/transposes and the gain)
    stack = src.stacks[0]
    assert stack.hr.shape == (8, 96, 96) and stack.lr.shape == (8, 48, 48)
    np.testing.assert_allclose(stack.hr, np.moveaxis(volume[0].numpy(), 2, 0))


def test_hook_fits_a_copy_and_switch_off_returns_the_network(volume):
    net = SRUNet(2, scale=2, channels=(8, 16)).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hook = InternalLearning(steps=5, batch_size=2, lr_size=16, lr=1e-2, threads=1, guard=False)
    volume = volume.clone()
    volume.meta["monai_sr_notes"] = []
    fitted = hook(volume, net)
    assert volume.meta["monai_sr_notes"][-1].startswith("per-volume fit (InternalLearning): 5 steps")
    assert fitted is not net and not fitted.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # pretrained weights kept
    assert any(not torch.equal(v, fitted.state_dict()[k]) for k, v in state.items())
    assert hook.last_record.steps == 5 and hook.last_record.setup_seconds >= 0
    assert InternalLearning(enabled=False, steps=None)(volume, net) is net


def test_hook_refuses_a_network_that_is_not_in_plane(volume):
    with pytest.raises(ModelError, match="scale"):
        InternalLearning(steps=1)(volume, SRUNet(2, scale=(1, 4), channels=(8,)))


def test_split_held_out_slices_or_halves():
    vol = np.arange(10 * 12 * 9, dtype=np.float32).reshape(10, 12, 9)
    train, held, how = split_held_out(vol, 2)
    assert held.shape == (10, 12, 2) and train.shape == (10, 12, 7) and "2 of 9 slices" in how
    np.testing.assert_array_equal(held, vol[:, :, [2, 6]])
    train, held, how = split_held_out(vol[:, :, :3], 2)  # too few slices: halves of each slice
    assert train.shape == (5, 12, 3) and held.shape == (5, 12, 3) and "half" in how
    np.testing.assert_array_equal(held, vol[5:, :, :3])


def test_guard_rejects_a_sabotaged_fit(volume):
    net = SRUNet(2, scale=2, channels=(8, 16)).eval()  # zero head: bicubic, a sound start
    state = {k: v.clone() for k, v in net.state_dict().items()}
    hook = InternalLearning(steps=10, batch_size=2, lr_size=16, lr=0.5, threads=1,  # a learning rate that wrecks it
                            fallback_zero_filled=False)
    volume = volume.clone()
    volume.meta["monai_sr_notes"] = []
    out = hook(volume, net)
    rec = hook.last_record
    assert out is net and not rec.kept
    assert rec.held_out_after < rec.held_out_before
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert "rejected" in volume.meta["monai_sr_notes"][-1] and "guard (2 of 8 slices held out)" in volume.meta["monai_sr_notes"][-1]


def test_guard_keeps_a_fit_that_helps_on_held_out_slices(volume):
    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(8, 16)).eval()
    hook = InternalLearning(steps=60, batch_size=4, lr_size=16, lr=2e-3, threads=1, guard_consistent=False)
    out = hook(volume, net)
    rec = hook.last_record
    assert rec.kept and out is not net
    assert rec.held_out_after > rec.held_out_before


def test_guard_falls_back_to_zero_filled_when_no_network_beats_it(volume):
    from monai_sr.inference import ZeroFilledInterpolation

    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(8, 16)).eval()
    for p in net.parameters():  # a network that invents garbage
        p.data.normal_(0, 0.3)
    hook = InternalLearning(steps=2, batch_size=2, lr_size=16, lr=1e-6, threads=1, guard_consistent=False)
    volume = volume.clone()
    volume.meta["monai_sr_notes"] = []
    out = hook(volume, net)
    rec = hook.last_record
    assert isinstance(out, ZeroFilledInterpolation) and out.scale == (2, 2) and rec.fallback_used
    assert rec.held_out_fallback >= max(rec.held_out_before, rec.held_out_after)
    assert "ZeroFilledInterpolation scores" in volume.meta["monai_sr_notes"][-1]

