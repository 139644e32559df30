"""RCAN: shapes 2D/3D incl. anisotropic scales, channel attention, ill cases, TorchScript, ONNX, FLOPs."""

from __future__ import annotations


import pytest
import torch
from helpers import assert_onnx_matches_onnxruntime

from monai_sr.networks import RCAN, count_flops, count_parameters
from monai_sr.networks.blocks import pixel_shuffle
from monai_sr.networks.rcan import RCAB, ChannelAttentionLayer, ResidualGroup

torch.set_num_threads(1)

TINY = {"features": 8, "num_groups": 2, "num_blocks": 1, "reduction": 4}

SHAPE_CASES = [
    (2, {"scale": 2}, (2, 1, 8, 8), (2, 1, 16, 16)),
    (2, {"scale": (2, 2)}, (1, 1, 7, 9), (1, 1, 14, 18)),
    (2, {"scale": (1, 2)}, (1, 1, 6, 5), (1, 1, 6, 10)),
    (2, {"scale": (4, 3), "in_channels": 2, "out_channels": 3}, (1, 2, 3, 4), (1, 3, 12, 12)),
    (2, {"scale": 1}, (1, 1, 9, 7), (1, 1, 9, 7)),
    (3, {"scale": 2}, (1, 1, 4, 5, 3), (1, 1, 8, 10, 6)),
    (3, {"scale": (2, 2, 1)}, (1, 1, 6, 5, 4), (1, 1, 12, 10, 4)),
    (3, {"scale": (1, 1, 4)}, (2, 1, 4, 4, 3), (2, 1, 4, 4, 12)),
]


@pytest.mark.parametrize("dims, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shapes(dims, kwargs, in_shape, out_shape):
    kwargs = dict(kwargs)
    in_ch, out_ch = kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1)
    net = RCAN(dims, in_ch, out_ch, **TINY, **kwargs).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(in_shape)).shape) == out_shape
    assert len(net.scale) == dims and all(type(s) is int for s in net.scale)


def test_paper_configuration():
    net = RCAN(2, 3, 3, scale=2)
    assert sum(isinstance(m, ResidualGroup) for m in net.modules()) == 10
    assert sum(isinstance(m, RCAB) for m in net.modules()) == 200
    assert 15_000_000 < count_parameters(net) < 16_000_000  # the paper's ~16 M


def test_channel_attention_gates_channels():
    ca = ChannelAttentionLayer(3, 8, reduction=4)
    x = torch.rand(2, 8, 3, 4, 5)
    with torch.no_grad():
        gate = ca.gate(x.mean(dim=(2, 3, 4), keepdim=True))
        torch.testing.assert_close(ca(x), x * gate)
    assert gate.shape == (2, 8, 1, 1, 1) and bool(((gate > 0) & (gate < 1)).all())


def test_subpixel_upsampler_is_pixel_shuffle():
    net = RCAN(2, scale=(1, 2), **TINY).eval()
    stage = net.upsample[0]
    f = torch.rand(1, 8, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(stage(f), pixel_shuffle(stage.conv(f), [1, 2]))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1,), {}, "spatial_dims must be 2 or 3, got 1"),
        ((3,), {"scale": (2, 2)}, r"\(2, 2\) must have 3 factors"),
        ((2,), {"scale": (2, -1)}, "got -1 in"),
        ((2,), {"features": 8, "reduction": 16}, r"reduction \(16\) must not exceed features \(8\)"),
        ((2,), {"num_groups": 0}, "num_groups .* got 0"),
        ((2,), {"num_blocks": 0}, "num_blocks .* got 0"),
        ((2,), {"res_scale": 1.5}, r"res_scale must be in \(0, 1\], got 1.5"),
        ((2, 1, 0), {}, "out_channels .* got 0"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RCAN(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expected a 5D input"):
        RCAN(3, **TINY)(torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize("dims, scale, shape", [(2, (2, 2), (2, 1, 7, 6)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_torchscript_round_trip(tmp_path, dims, scale, shape):
    net = RCAN(dims, scale=scale, **TINY).eval()
    x = torch.rand(shape)
    path = tmp_path / "rcan.ts"
    torch.jit.script(net).save(str(path))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), net(x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # static channel checks in pixel_shuffle
@pytest.mark.parametrize("dims, scale, shape", [(2, (1, 2), (1, 1, 8, 7)), (3, (2, 2, 1), (1, 1, 4, 5, 3))])
def test_onnx_matches_onnxruntime(dims, scale, shape):
    net = RCAN(dims, scale=scale, **TINY).eval()
    x = torch.rand(shape)
    assert_onnx_matches_onnxruntime(net, x)


def test_flops_and_params():
    shape = (1, 1, 16, 16)
    f1 = count_flops(RCAN(2, scale=1, features=16, num_groups=2, num_blocks=2, reduction=4), shape)
    f2 = count_flops(RCAN(2, scale=1, features=32, num_groups=2, num_blocks=2, reduction=4), shape)
    assert f1 > 0 and 3.7 < f2 / f1 < 4.1  # the 3x3 feature convs dominate: x4
    f_up = count_flops(RCAN(2, scale=2, features=16, num_groups=2, num_blocks=2, reduction=4), shape)
    # x2: one sub-pixel conv 16 -> 64 on the LR grid, the tail conv on 4x the pixels
    assert f_up - f1 == 2 * 9 * 256 * 16 * 64 + 3 * 2 * 9 * 256 * 16
    assert 0 < count_parameters(RCAN(2, **TINY)) < count_parameters(RCAN(2, **{**TINY, "num_groups": 3}))
