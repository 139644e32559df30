"""DnCNN (+CBAM): shapes 2D/3D, residual learning, CBAM placement, ill cases, TorchScript, ONNX, FLOPs."""

from __future__ import annotations


import pytest
import torch
from helpers import assert_onnx_matches_onnxruntime

from monai_sr.networks import CBAM, DnCNN, count_flops, count_parameters

torch.set_num_threads(1)

SHAPE_CASES = [
    (2, {}, (2, 1, 16, 16)),
    (2, {"cbam_every": 2}, (1, 1, 15, 9)),
    (2, {"in_channels": 2, "out_channels": 3, "residual": False}, (1, 2, 8, 8)),
    (2, {"batch_norm": False, "cbam_every": 1}, (1, 1, 8, 8)),
    (3, {}, (1, 1, 8, 8, 8)),
    (3, {"cbam_every": 3}, (2, 1, 6, 7, 5)),
]


def tiny(dims, **kwargs):
    kwargs.setdefault("depth", 5)
    kwargs.setdefault("features", 8)
    kwargs.setdefault("cbam_reduction", 4)
    in_ch, out_ch = kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1)
    return DnCNN(dims, in_ch, out_ch, **kwargs)


@pytest.mark.parametrize("dims, kwargs, in_shape", SHAPE_CASES)
def test_shapes(dims, kwargs, in_shape):
    net = tiny(dims, **kwargs).eval()
    with torch.no_grad():
        y = net(torch.rand(in_shape))
    assert y.shape == (in_shape[0], net.out_channels, *in_shape[2:])
    assert net.scale == (1,) * dims


def test_paper_configuration():
    net = DnCNN(2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 17 and sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 15
    assert not any(isinstance(m, CBAM) for m in net.modules())
    assert 500_000 < count_parameters(net) < 600_000  # 0.56 M, as in the paper


@pytest.mark.parametrize("depth, every, n_cbam", [(17, 4, 4), (17, 16, 1), (5, 1, 4), (6, 2, 2)])
def test_cbam_every_k_layers(depth, every, n_cbam):
    net = DnCNN(2, depth=depth, features=16, cbam_every=every, cbam_reduction=4)
    assert sum(isinstance(m, CBAM) for m in net.modules()) == n_cbam


def test_residual_learning_predicts_noise():
    net = tiny(2).eval()
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        last = net.body[-1]
        last.weight.zero_()
        last.bias.fill_(0.25)  # a constant "noise" estimate
        torch.testing.assert_close(net(x), x - 0.25)
        net.residual = False
        torch.testing.assert_close(net(x), torch.full_like(x, 0.25))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1,), {}, "spatial_dims must be 2 or 3, got 1"),
        ((2, 1, 2), {}, "in_channels == out_channels, got 1 and 2"),
        ((2,), {"depth": 1}, "depth .* got 1"),
        ((2,), {"features": 0}, "features .* got 0"),
        ((2,), {"cbam_every": 0}, "cbam_every .* got 0"),
        ((2,), {"depth": 5, "cbam_every": 5}, r"cbam_every \(5\) exceeds the 4 hidden layers"),
        ((2,), {"features": 8, "cbam_every": 2, "cbam_reduction": 16}, r"reduction \(16\) must not exceed channels \(8\)"),
        ((2, 0, 0), {"residual": False}, "in_channels .* got 0"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DnCNN(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expected a 5D input"):
        tiny(3)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("dims, shape", [(2, (2, 1, 13, 10)), (3, (1, 1, 6, 5, 7))])
def test_torchscript_round_trip(tmp_path, dims, shape):
    net = tiny(dims, cbam_every=2).eval()
    x = torch.rand(shape)
    path = tmp_path / "dncnn.ts"
    torch.jit.script(net).save(str(path))
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), net(x))


@pytest.mark.parametrize("dims, shape", [(2, (1, 1, 16, 12)), (3, (1, 1, 6, 8, 5))])
def test_onnx_matches_onnxruntime(dims, shape):
    net = tiny(dims, cbam_every=2).eval()
    x = torch.rand(shape)
    assert_onnx_matches_onnxruntime(net, x)


def test_flops_and_params():
    shape = (1, 1, 16, 16)
    narrow, wide = DnCNN(2, depth=6, features=8), DnCNN(2, depth=6, features=16)
    f8, f16 = count_flops(narrow, shape), count_flops(wide, shape)
    # exact: 2 FLOPs per MAC, 3x3 kernels, 16*16 pixels; conv1 1->8, 4 x 8->8, 8->1
    assert f8 == 2 * 9 * 256 * (8 + 4 * 64 + 8)
    assert 3.5 < f16 / f8 < 4.1  # the middle layers dominate: x4
    assert count_flops(narrow, (1, 1, 32, 32)) == 4 * f8  # proportional to the pixels
    assert 0 < count_parameters(narrow) < count_parameters(wide)
    f_att = count_flops(DnCNN(2, depth=6, features=8, cbam_every=1, cbam_reduction=4), shape)
    # 5 CBAMs: shared MLP 8->2->8 on the avg and max descriptors + a 7x7 conv 2->1 on every pixel
    assert f_att - f8 == 5 * (2 * 2 * (8 * 2 + 2 * 8) + 2 * 49 * 2 * 256)
