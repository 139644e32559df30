"""RRDBNet (ESRGAN generator): shapes 2D/3D incl. anisotropic and scale 1, ill cases, TorchScript, ONNX, FLOPs."""

from __future__ import annotations


import pytest
import torch
from helpers import assert_onnx_matches_onnxruntime

from monai_sr.networks import RRDBNet, count_flops, count_parameters
from monai_sr.networks.blocks import upsample_stages

torch.set_num_threads(1)

TINY = {"features": 8, "growth": 4, "num_blocks": 1}

SHAPE_CASES = [
    # (spatial_dims, kwargs, input shape, expected output shape)
    (2, {"scale": 2}, (2, 1, 8, 8), (2, 1, 16, 16)),
    (2, {"scale": (2, 2)}, (1, 1, 7, 9), (1, 1, 14, 18)),
    (2, {"scale": (1, 2)}, (1, 1, 6, 5), (1, 1, 6, 10)),
    (2, {"scale": 4}, (1, 1, 5, 6), (1, 1, 20, 24)),
    (2, {"scale": 3, "in_channels": 2, "out_channels": 3}, (1, 2, 4, 5), (1, 3, 12, 15)),
    (2, {"scale": 1}, (1, 1, 9, 7), (1, 1, 9, 7)),
    (3, {"scale": 2}, (1, 1, 4, 5, 3), (1, 1, 8, 10, 6)),
    (3, {"scale": (2, 2, 1)}, (1, 1, 6, 5, 4), (1, 1, 12, 10, 4)),
    (3, {"scale": (1, 1, 3)}, (2, 1, 4, 4, 3), (2, 1, 4, 4, 9)),
    (3, {"scale": 1}, (1, 1, 5, 4, 3), (1, 1, 5, 4, 3)),
]


@pytest.mark.parametrize("dims, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shapes(dims, kwargs, in_shape, out_shape):
    kwargs = dict(kwargs)
    in_ch, out_ch = kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1)
    net = RRDBNet(dims, in_ch, out_ch, **TINY, **kwargs).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(in_shape)).shape) == out_shape
    assert len(net.scale) == dims and all(type(s) is int for s in net.scale)
    assert len(net.upsample) == len(upsample_stages(net.scale))


def test_paper_configuration():
    net = RRDBNet(2, 3, 3, scale=4)
    assert net.scale == (4, 4) and len(net.body) == 23 and len(net.upsample) == 2  # two x2 nearest+conv stages
    assert 16_000_000 < count_parameters(net) < 17_000_000  # ESRGAN's 16.7 M


def test_upsample_stages():
    assert upsample_stages((4, 4)) == [(2, 2), (2, 2)]
    assert upsample_stages((4, 2, 1)) == [(2, 2, 1), (2, 1, 1)]
    assert upsample_stages((6, 3)) == [(2, 3), (3, 1)]
    assert upsample_stages((1, 1)) == []


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((4,), {}, "spatial_dims must be 2 or 3, got 4"),
        ((2,), {"scale": (2, 2, 2)}, r"\(2, 2, 2\) must have 2 factors"),
        ((3,), {"scale": (2, 0, 1)}, "got 0 in"),
        ((2,), {"scale": 1.5}, "1.5"),
        ((2,), {"features": 0}, "features .* got 0"),
        ((2,), {"growth": -1}, "growth .* got -1"),
        ((2,), {"num_blocks": 0}, "num_blocks .* got 0"),
        ((2,), {"res_scale": 0.0}, r"res_scale must be in \(0, 1\], got 0.0"),
        ((2, 0), {}, "in_channels .* got 0"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RRDBNet(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expected a 4D input"):
        RRDBNet(2, **TINY)(torch.rand(1, 1, 4, 4, 4))


@pytest.mark.parametrize("dims, scale, shape", [(2, (1, 2), (2, 1, 7, 6)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_torchscript_round_trip(tmp_path, dims, scale, shape):
    net = RRDBNet(dims, scale=scale, **TINY).eval()
    x = torch.rand(shape)
    path = tmp_path / "rrdb.ts"
    torch.jit.script(net).save(str(path))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), net(x))


@pytest.mark.parametrize("dims, scale, shape", [(2, (2, 1), (1, 1, 8, 7)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_onnx_matches_onnxruntime(dims, scale, shape):
    net = RRDBNet(dims, scale=scale, **TINY).eval()
    x = torch.rand(shape)
    assert_onnx_matches_onnxruntime(net, x)


def test_flops_and_params():
    shape = (1, 1, 8, 8)
    f1 = count_flops(RRDBNet(2, scale=1, features=8, growth=8, num_blocks=1), shape)
    f2 = count_flops(RRDBNet(2, scale=1, features=16, growth=16, num_blocks=1), shape)
    assert f1 > 0 and 3.6 < f2 / f1 < 4.1  # doubling every width: x4, less the 1-channel first/last convs
    up = count_flops(RRDBNet(2, scale=(1, 2), features=8, growth=8, num_blocks=1), shape)
    # x2 along one axis: up-stage conv and conv_hr (8->8) and conv_last (8->1) now run on 2x the pixels
    assert up - f1 == 2 * 9 * 64 * (2 * 64 + 64 + 8)
    assert 0 < count_parameters(RRDBNet(2, **TINY)) < count_parameters(RRDBNet(2, features=16, growth=8, num_blocks=1))
