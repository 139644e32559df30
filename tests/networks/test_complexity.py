"""count_parameters and count_flops against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_sr.networks import SRUNet, count_flops, count_parameters

torch.set_num_threads(1)


def test_count_parameters():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2))
    assert count_parameters(net) == (4 * 9 + 4) + (4 * 2 + 2)
    net[1].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == (4 * 9 + 4) + 2
    assert count_parameters(nn.ReLU()) == 0


@pytest.mark.parametrize(
    "net, shape, macs",
    [
        (nn.Conv2d(3, 8, 3, padding=1), (2, 3, 10, 12), 2 * 10 * 12 * 8 * 3 * 9),
        (nn.Conv3d(2, 4, 3, padding=1), (1, 2, 4, 5, 6), 4 * 5 * 6 * 4 * 2 * 27),
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), (1, 8, 6, 6), 36 * 8 * 9),  # depthwise
        (nn.ConvTranspose2d(4, 2, 2, stride=2), (1, 4, 5, 5), 25 * 4 * 2 * 4),
        (nn.Linear(16, 5), (3, 7, 16), 21 * 16 * 5),
        (nn.Sequential(nn.ReLU(), nn.Dropout()), (1, 1, 4, 4), 0),  # element-wise work is not counted
    ],
)
def test_count_flops_is_two_per_mac(net, shape, macs):
    assert count_flops(net, shape) == 2 * macs


def test_count_flops_restores_training_mode_and_scales_with_pixels():
    net = SRUNet(2, channels=(4, 8)).train()
    f = count_flops(net, (1, 1, 16, 16))
    assert net.training and f > 0
    assert count_flops(net, (1, 1, 32, 32)) == 4 * f  # fully convolutional
    assert count_flops(net.eval(), (1, 1, 16, 16)) == f and not net.training


def test_count_flops_ill_input_shape():
    with pytest.raises(ValueError, match=r"\(16, 16\)"):
        count_flops(nn.Conv2d(1, 1, 3), (16, 16))
