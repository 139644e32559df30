"""Data consistency: the output's acquired k-space band equals the input's; outside it the SR is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_sr.inference import SliceWiseInferer
from monai_sr.inference.consistency import project_acquired_band
from monai_sr.networks import SRUNet
from monai_sr.transforms.kspace import fourier_resample


def _band_limited(rng, shape_hr, shape_lr):
    """An input slice as a scanner gives it: the k-space truncation of a finer random image."""
    hr = rng.random(shape_hr)
    return fourier_resample(hr, shape_lr, (-2, -1))


@pytest.mark.parametrize("lo,s", [((16, 20), (2, 2)), ((15, 12), (2, 3)), ((9, 9), (4, 4))])
def test_hard_projection_keeps_the_acquired_band(lo, s):
    rng = np.random.default_rng(0)
    hi = (lo[0] * s[0], lo[1] * s[1])
    x = _band_limited(rng, (3, 4 * hi[0], 4 * hi[1]), lo)
    y = rng.normal(size=(3, *hi))  # an SR that is wrong everywhere
    out = project_acquired_band(torch.from_numpy(y), torch.from_numpy(x)).numpy().astype(np.float64)
    assert out.dtype == np.float64 and out.shape == y.shape
    # the band the input measured is now the input's, to float32 precision
    np.testing.assert_allclose(fourier_resample(out, lo, (1, 2)), x, atol=1e-5)
    # what changed is band-limited: outside the band the SR is untouched
    change = out - y
    np.testing.assert_allclose(fourier_resample(fourier_resample(change, lo, (1, 2)), hi, (1, 2)), change, atol=1e-5)
    assert not np.allclose(out, y, atol=1e-3)


def test_soft_projection_moves_the_band_part_way():
    rng = np.random.default_rng(1)
    x = _band_limited(rng, (2, 64, 64), (16, 16))
    y = rng.normal(size=(2, 32, 32))
    out = project_acquired_band(torch.from_numpy(y), torch.from_numpy(x), weight=0.25).double().numpy()
    ty = fourier_resample(y, (16, 16), (1, 2))
    np.testing.assert_allclose(fourier_resample(out, (16, 16), (1, 2)), ty + 0.25 * (x - ty), atol=1e-5)


@pytest.mark.parametrize("weight", [0.0, -0.5, 1.5])
def test_weight_outside_zero_one_is_refused(weight):
    with pytest.raises(ValueError, match="weight"):
        project_acquired_band(torch.zeros(1, 8, 8), torch.zeros(1, 4, 4), weight=weight)


def test_shapes_must_be_integer_multiples():
    with pytest.raises(ValueError, match="integer multiple"):
        project_acquired_band(torch.zeros(1, 9, 8), torch.zeros(1, 4, 4))


@pytest.mark.parametrize("ensemble", [False, "flips"])
def test_inferer_output_is_consistent_with_its_input(ensemble):
    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(4, 8)).eval()
    for p in net.parameters():  # an untrained SR-UNet is bicubic + zero residual: make it do something
        p.data.normal_(0, 0.2)
    rng = np.random.default_rng(2)
    lr = np.stack([_band_limited(rng, (48, 40), (12, 10)) for _ in range(3)], axis=-1)  # (12, 10, 3)
    img = MetaTensor(torch.from_numpy(lr[None].astype(np.float32)), affine=torch.eye(4, dtype=torch.float64))
    out = SliceWiseInferer(batch_size=2, data_consistency=True, self_ensemble=ensemble)(img, net)[0].numpy()
    plain = SliceWiseInferer(batch_size=2, self_ensemble=ensemble)(img, net)[0].numpy()
    np.testing.assert_allclose(fourier_resample(out, (12, 10), (0, 1)), lr, atol=1e-5)
    assert np.abs(fourier_resample(plain, (12, 10), (0, 1)) - lr).max() > 1e-2  # the network alone is not


def test_inferer_refuses_a_bad_data_consistency():
    with pytest.raises(ValueError, match="data_consistency"):
        SliceWiseInferer(data_consistency=2.0)


@pytest.mark.parametrize("shape,new", [((3, 20, 17), (10, 9)), ((2, 9, 8), (18, 16)), ((2, 31, 30), (62, 60))])
def test_torch_fourier_resample_is_the_numpy_operator(shape, new):
    x = np.random.default_rng(2).normal(size=shape)
    ref = fourier_resample(x, new, (1, 2))
    np.testing.assert_allclose(fourier_resample(torch.from_numpy(x), new, (1, 2)).numpy(), ref, atol=1e-12)
    got32 = fourier_resample(torch.from_numpy(x).float(), new, (-2, -1))
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, atol=1e-5)


def test_acquired_band_loss_reaches_the_network_only_outside_the_band():
    from monai_sr.training.losses import AcquiredBandLoss

    rng = np.random.default_rng(3)
    hr = torch.from_numpy(rng.random((2, 1, 32, 32))).float()
    lr = fourier_resample(hr, (16, 16), (-2, -1))
    sr = torch.from_numpy(rng.random((2, 1, 32, 32))).float().requires_grad_()
    AcquiredBandLoss(band_weight=0.0)(sr, lr, hr).backward()
    grad = sr.grad.double().numpy()
    assert np.abs(grad).max() > 0
    # the gradient has no component in the measured band: truncating it onto the input's grid gives zero
    assert np.abs(fourier_resample(grad, (16, 16), (-2, -1))).max() < 1e-6 * np.abs(grad).max()
    # a network that is right outside the band and wrong inside it has (almost) no loss ...
    wrong_inside = hr + fourier_resample(torch.from_numpy(rng.normal(size=(2, 1, 16, 16))).float(), (32, 32), (-2, -1))
    assert AcquiredBandLoss(0.0)(wrong_inside, lr, hr) < 1e-5
    # ... unless the unprojected term is weighted in
    assert AcquiredBandLoss(0.1)(wrong_inside, lr, hr) > 1e-3
