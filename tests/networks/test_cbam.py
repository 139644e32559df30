"""CBAM: shape preservation 2D/3D, the two gates, ill cases, TorchScript."""

from __future__ import annotations

import pytest
import torch

from monai_sr.networks import CBAM

torch.set_num_threads(1)


@pytest.mark.parametrize("dims, shape", [(2, (2, 16, 9, 7)), (3, (1, 8, 5, 6, 4))])
def test_shape_and_gates(dims, shape):
    cbam = CBAM(dims, shape[1], reduction=4, spatial_kernel=3).eval()
    x = torch.rand(shape)
    axes = tuple(range(2, 2 + dims))
    with torch.no_grad():
        y = cbam(x)
        ch = torch.sigmoid(cbam.channel.mlp(x.mean(dim=axes, keepdim=True)) + cbam.channel.mlp(x.amax(dim=axes, keepdim=True)))
        xc = x * ch
        sp = torch.sigmoid(cbam.spatial.conv(torch.cat([xc.mean(1, keepdim=True), xc.amax(1, keepdim=True)], 1)))
    assert y.shape == x.shape and ch.shape == (shape[0], shape[1]) + (1,) * dims and sp.shape == (shape[0], 1, *shape[2:])
    torch.testing.assert_close(y, xc * sp)  # channel first, then spatial (Woo et al.)
    assert cbam.spatial.conv.kernel_size == (3,) * dims


def test_paper_defaults():
    cbam = CBAM(2, 64)
    assert cbam.channel.mlp[0].out_channels == 4 and cbam.spatial.conv.kernel_size == (7, 7)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1, 8), {}, "spatial_dims must be 2 or 3, got 1"),
        ((2, 0), {}, "channels .* got 0"),
        ((2, 8), {"reduction": 16}, r"reduction \(16\) must not exceed channels \(8\)"),
        ((2, 16), {"spatial_kernel": 4}, "odd .* got 4"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CBAM(*args, **kwargs)


def test_torchscript_round_trip(tmp_path):
    cbam = CBAM(3, 8, reduction=2).eval()
    x = torch.rand(1, 8, 4, 5, 6)
    path = tmp_path / "cbam.ts"
    torch.jit.script(cbam).save(str(path))
    torch.testing.assert_close(torch.jit.load(str(path))(x), cbam(x))
