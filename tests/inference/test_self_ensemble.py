"""Geometric self-ensemble: the mean over flips (and transposes for a square scale), each mapped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_sr import geometry
from monai_sr.inference import SliceWiseInferer
from monai_sr.networks import SRUNet


def _manual(net, x: np.ndarray, transposes: bool) -> np.ndarray:
    """Independent numpy computation of the ensemble for planes ``x`` ``(N, 1, H, W)``."""
    outs = []
    for t in ([False, True] if transposes else [False]):
        for fh in (False, True):
            for fw in (False, True):
                g = x[:, :, ::-1] if fh else x
                g = g[:, :, :, ::-1] if fw else g
                g = np.swapaxes(g, 2, 3) if t else g
                with torch.inference_mode():
                    y = net(torch.from_numpy(np.ascontiguousarray(g))).numpy()
                y = np.swapaxes(y, 2, 3) if t else y
                y = y[:, :, :, ::-1] if fw else y
                y = y[:, :, ::-1] if fh else y
                outs.append(y)
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("scale,transposes", [((2, 2), True), ((1, 4), False)])
def test_ensemble_equals_the_manual_mean(scale, transposes):
    torch.manual_seed(0)
    net = SRUNet(2, scale=scale, channels=(4, 8)).eval()
    for p in net.parameters():  # an untrained SR-UNet is bicubic + zero residual: make it asymmetric
        p.data.normal_(0, 0.2)
    vol = torch.rand(1, 12, 16, 3)
    affine = torch.diag(torch.tensor([0.8, 0.9, 2.5, 1.0], dtype=torch.float64))
    img = MetaTensor(vol, affine=affine)
    out = SliceWiseInferer(batch_size=2, self_ensemble=True, channels_last=False)(img, net)
    planes = vol[0].permute(2, 0, 1)[:, None].numpy()  # (Z, 1, X, Y)
    expected = np.moveaxis(_manual(net, planes, transposes)[:, 0], 0, 2)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    plain = SliceWiseInferer(batch_size=2, channels_last=False)(img, net)
    assert not np.allclose(out.numpy(), plain.numpy(), atol=1e-4)  # the ensemble did something
    np.testing.assert_allclose(out.affine.numpy(), geometry.scaled_affine(affine.numpy(), (*scale, 1)), atol=1e-9)


def test_self_ensemble_must_be_a_bool():
    with pytest.raises(ValueError, match="self_ensemble"):
        SliceWiseInferer(self_ensemble="yes")


def test_flips_ensemble_is_the_mean_of_the_four_flips():
    torch.manual_seed(1)
    net = SRUNet(2, scale=2, channels=(4, 8)).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.2)
    vol = torch.rand(1, 10, 12, 2)
    img = MetaTensor(vol, affine=torch.eye(4, dtype=torch.float64))
    out = SliceWiseInferer(batch_size=2, self_ensemble="flips", channels_last=False)(img, net)
    planes = vol[0].permute(2, 0, 1)[:, None].numpy()
    np.testing.assert_allclose(out[0].numpy(), np.moveaxis(_manual(net, planes, False)[:, 0], 0, 2), atol=1e-5)
