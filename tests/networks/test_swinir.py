"""SwinIRLight: shapes (odd sizes, per-axis scale), the zero-initialised head, learning, ill arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_sr.networks import SwinIRLight

pytest.importorskip("einops")  # MONAI's Swin blocks need it (the test extra installs it)

TINY = {"dim": 8, "depths": (2,), "num_heads": 2, "window": 4}


@pytest.mark.parametrize("scale, in_shape, out_shape", [
    (2, (2, 1, 16, 16), (2, 1, 32, 32)),
    ((2, 2), (1, 1, 13, 19), (1, 1, 26, 38)),  # not a multiple of the window: padded inside each block
    ((1, 3), (1, 1, 9, 10), (1, 1, 9, 30)),
])
def test_shapes(scale, in_shape, out_shape):
    net = SwinIRLight(2, 1, 1, scale=scale, **TINY).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(in_shape)).shape) == out_shape


def test_untrained_network_is_bicubic_and_it_learns():
    torch.manual_seed(0)
    net = SwinIRLight(2, 1, 1, scale=2, **TINY)
    x = torch.rand(4, 1, 12, 12)
    bicubic = F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x), bicubic)
    target = bicubic + 0.1 * torch.sin(torch.arange(24.0))  # a detail the interpolation lacks
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = F.l1_loss(net(x), target).item()
    for _ in range(40):
        opt.zero_grad()
        loss = F.l1_loss(net(x), target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_the_default_is_the_light_model_and_fits_a_bundle_network_def():
    net = SwinIRLight(spatial_dims=2, in_channels=1, out_channels=1, scale=[2, 2])
    assert 300_000 < sum(p.numel() for p in net.parameters()) < 350_000
    assert net.scale == (2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"spatial_dims": 3}, "2D only"),
    ({"out_channels": 2}, "must equal in_channels"),
    ({"dim": 10, "num_heads": 4}, "not divisible"),
    ({"scale": 0}, "scale"),
])
def test_ill_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwinIRLight(**kwargs)


def test_refuses_a_volume():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        SwinIRLight(**TINY)(torch.rand(1, 1, 4, 4, 4))


def test_without_einops_it_says_so_when_built(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "einops", None)
    with pytest.raises(ImportError, match="pip install einops"):
        SwinIRLight(**TINY)
