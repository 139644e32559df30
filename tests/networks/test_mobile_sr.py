"""MobileSR: shapes 2D/3D incl. anisotropic scales, interpolation residual, ill cases, TorchScript, ONNX, FLOPs."""

from __future__ import annotations


import pytest
import torch
from helpers import assert_onnx_matches_onnxruntime
import torch.nn.functional as F

from monai_sr.networks import MobileSR, count_flops, count_parameters
from monai_sr.networks.mobile_sr import InvertedResidual

torch.set_num_threads(1)

TINY = {"features": 8, "num_blocks": 2}

SHAPE_CASES = [
    (2, {"scale": 2}, (2, 1, 8, 8), (2, 1, 16, 16)),
    (2, {"scale": (2, 2)}, (1, 1, 7, 9), (1, 1, 14, 18)),
    (2, {"scale": (1, 2)}, (1, 1, 6, 5), (1, 1, 6, 10)),
    (2, {"scale": 3, "in_channels": 2, "out_channels": 3, "residual": False}, (1, 2, 4, 5), (1, 3, 12, 15)),
    (2, {"scale": 1, "kernel_size": 5}, (1, 1, 9, 7), (1, 1, 9, 7)),
    (3, {"scale": 2}, (1, 1, 4, 5, 3), (1, 1, 8, 10, 6)),
    (3, {"scale": (2, 2, 1)}, (1, 1, 6, 5, 4), (1, 1, 12, 10, 4)),
    (3, {"scale": (1, 1, 3)}, (2, 1, 4, 4, 3), (2, 1, 4, 4, 9)),
]


@pytest.mark.parametrize("dims, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shapes(dims, kwargs, in_shape, out_shape):
    kwargs = dict(kwargs)
    in_ch, out_ch = kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1)
    net = MobileSR(dims, in_ch, out_ch, **TINY, **kwargs).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(in_shape)).shape) == out_shape
    assert len(net.scale) == dims and all(type(s) is int for s in net.scale)


def test_block_is_mobilenet_v3():
    block = InvertedResidual(2, 8, expansion=4)
    layers = list(block.body)
    assert layers[0].kernel_size == (1, 1) and layers[0].out_channels == 32  # expansion
    assert layers[2].groups == 32 and layers[2].kernel_size == (3, 3)  # depthwise
    assert isinstance(layers[1], torch.nn.Hardswish) and isinstance(layers[3], torch.nn.Hardswish)
    assert isinstance(layers[4].gate[-1], torch.nn.Hardsigmoid)  # squeeze-excitation
    assert layers[5].kernel_size == (1, 1) and layers[5].out_channels == 8  # linear projection
    with torch.no_grad():
        layers[5].weight.zero_()
        layers[5].bias.zero_()
        x = torch.rand(1, 8, 5, 5)
        torch.testing.assert_close(block(x), x)  # identity residual


def test_default_is_lightweight():
    assert 30_000 < count_parameters(MobileSR(2)) < 100_000


def test_zero_head_is_bicubic():
    net = MobileSR(2, scale=(2, 2), **TINY).eval()
    x = torch.rand(2, 1, 9, 7)
    with torch.no_grad():
        assert torch.equal(net(x), F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
        net.head.weight.normal_()
        assert not torch.equal(net(x), F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))


def test_zero_head_is_trilinear_3d_anisotropic():
    net = MobileSR(3, scale=(2, 1, 2), **TINY).eval()
    x = torch.rand(1, 1, 6, 5, 4)
    expected = F.interpolate(x, scale_factor=(2.0, 1.0, 2.0), mode="trilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x), expected)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1,), {}, "spatial_dims must be 2 or 3, got 1"),
        ((2,), {"scale": (2, 2, 1)}, r"\(2, 2, 1\) must have 2 factors"),
        ((2,), {"scale": (2, 2.5)}, "2.5"),
        ((2, 1, 2), {}, "in_channels == out_channels, got 1 and 2"),
        ((2,), {"kernel_size": 4}, "odd .* got 4"),
        ((2,), {"features": 2, "expansion": 1, "se_reduction": 4}, r"se_reduction \(4\) must not exceed the expanded channels \(2\)"),
        ((2,), {"num_blocks": 0}, "num_blocks .* got 0"),
        ((2,), {"expansion": 0}, "expansion .* got 0"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MobileSR(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expected a 4D input"):
        MobileSR(2, **TINY)(torch.rand(1, 1, 4, 4, 4))


def _trained_like(net):
    torch.manual_seed(0)
    with torch.no_grad():
        net.head.weight.normal_(std=0.1)  # so that the body is compared too
    return net.eval()


@pytest.mark.parametrize("dims, scale, shape", [(2, (1, 2), (2, 1, 7, 6)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_torchscript_round_trip(tmp_path, dims, scale, shape):
    net = _trained_like(MobileSR(dims, scale=scale, **TINY))
    x = torch.rand(shape)
    path = tmp_path / "mobile_sr.ts"
    torch.jit.script(net).save(str(path))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), net(x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # static channel checks in pixel_shuffle
@pytest.mark.parametrize("dims, scale, shape", [(2, (2, 2), (1, 1, 8, 7)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_onnx_matches_onnxruntime(dims, scale, shape):
    net = _trained_like(MobileSR(dims, scale=scale, **TINY))
    x = torch.rand(shape)
    assert_onnx_matches_onnxruntime(net, x)  # bicubic included: ONNX Resize cubic, a = -0.75


def test_flops_and_params():
    shape = (1, 1, 16, 16)
    f1 = count_flops(MobileSR(2, scale=2, features=16, num_blocks=2), shape)
    f2 = count_flops(MobileSR(2, scale=2, features=32, num_blocks=2), shape)
    # 1x1 convs and the 3x3 convs between features grow x4, the depthwise convs and 1-channel ends x2
    assert f1 > 0 and 3.3 < f2 / f1 < 4.0
    # a depthwise conv costs a fraction of a dense one: the whole block is cheaper than one dense 3x3 conv 64->64
    block = count_flops(InvertedResidual(2, 16, expansion=4), (1, 16, 16, 16))
    assert block < 2 * 9 * 256 * 64 * 64
    assert 0 < count_parameters(MobileSR(2, **TINY)) < count_parameters(MobileSR(2, features=16, num_blocks=2))
