"""ZeroDCE and its zero-reference losses: shapes 2D/3D, curve properties, loss values, ill cases,
TorchScript, ONNX, FLOPs."""

from __future__ import annotations


import pytest
import torch
from helpers import assert_onnx_matches_onnxruntime

from monai_sr.networks import ZeroDCE, count_flops, count_parameters
from monai_sr.training.losses import (
    ZeroDCELoss,
    colour_constancy_loss,
    exposure_control_loss,
    illumination_smoothness_loss,
    spatial_consistency_loss,
)

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "dims, kwargs, in_shape",
    [
        (2, {}, (2, 1, 16, 16)),
        (2, {"in_channels": 3, "out_channels": 3}, (1, 3, 9, 12)),
        (2, {"n_iter": 1}, (1, 1, 8, 8)),
        (3, {}, (1, 1, 8, 8, 8)),
        (3, {"n_iter": 4}, (2, 1, 5, 6, 7)),
    ],
)
def test_shapes(dims, kwargs, in_shape):
    kwargs = dict(kwargs)
    in_ch, out_ch = kwargs.pop("in_channels", 1), kwargs.pop("out_channels", 1)
    net = ZeroDCE(dims, in_ch, out_ch, features=8, **kwargs).eval()
    x = torch.rand(in_shape)
    with torch.no_grad():
        y, a = net(x), net.curves(x)
    assert y.shape == x.shape and net.scale == (1,) * dims
    assert a.shape == (in_shape[0], in_ch * net.n_iter, *in_shape[2:])
    assert bool((a.abs() < 1).all())  # tanh
    assert bool(((y >= 0) & (y <= 1)).all())  # LE maps [0, 1] into [0, 1] for |a| <= 1


def test_paper_configuration():
    net = ZeroDCE(2, 3, 3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7 and convs[-1].out_channels == 24  # the paper's 3 x 8 curve maps
    assert count_parameters(net) == 79_416  # the paper's 79,416 trainable parameters
    assert ZeroDCE(2).conv7.out_channels == 8  # one-channel MRI: 8 maps


def test_curve_iterations():
    net = ZeroDCE(2, features=8, n_iter=3)
    x = torch.rand(1, 1, 6, 6)
    torch.testing.assert_close(net.apply_curves(x, torch.zeros(1, 3, 6, 6)), x)  # a = 0: identity
    a = torch.full((1, 3, 6, 6), 0.5)
    expected = x
    for _ in range(3):
        expected = expected + 0.5 * expected * (1 - expected)
    torch.testing.assert_close(net.apply_curves(x, a), expected)
    assert bool((net.apply_curves(x, a) >= x).all())  # a > 0 brightens


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1,), {}, "spatial_dims must be 2 or 3, got 1"),
        ((2, 1, 3), {}, "in_channels must equal out_channels, got 1 and 3"),
        ((2,), {"n_iter": 0}, "n_iter .* got 0"),
        ((2,), {"features": 0}, "features .* got 0"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZeroDCE(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expected a 4D input"):
        ZeroDCE(2, features=8)(torch.rand(1, 1, 4, 4, 4))


@pytest.mark.parametrize("dims, shape", [(2, (2, 1, 13, 10)), (3, (1, 1, 6, 5, 7))])
def test_torchscript_round_trip(tmp_path, dims, shape):
    net = ZeroDCE(dims, features=8).eval()
    x = torch.rand(shape)
    path = tmp_path / "zero_dce.ts"
    torch.jit.script(net).save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
        torch.testing.assert_close(loaded.curves(x), net.curves(x))


@pytest.mark.parametrize("dims, shape", [(2, (1, 1, 16, 12)), (3, (1, 1, 6, 8, 5))])
def test_onnx_matches_onnxruntime(dims, shape):
    net = ZeroDCE(dims, features=8).eval()
    x = torch.rand(shape)
    assert_onnx_matches_onnxruntime(net, x)


def test_flops_and_params():
    shape = (1, 1, 16, 16)
    f8, f16 = count_flops(ZeroDCE(2, features=8), shape), count_flops(ZeroDCE(2, features=16), shape)
    # exact: conv1 1->f, conv2-4 f->f, conv5-6 2f->f, conv7 2f->8, 3x3 on 256 pixels
    assert f8 == 2 * 9 * 256 * (8 + 3 * 64 + 2 * 128 + 16 * 8)
    assert 3.5 < f16 / f8 < 4.0
    assert 0 < count_parameters(ZeroDCE(2, features=8)) < count_parameters(ZeroDCE(2, features=16))


# --- zero-reference losses -------------------------------------------------------------------------


def test_spatial_consistency():
    x = torch.rand(2, 1, 16, 16)
    assert spatial_consistency_loss(x, x) == 0
    assert spatial_consistency_loss(x + 0.2, x) < 1e-12  # a constant shift keeps neighbour contrasts
    assert spatial_consistency_loss(0.5 * x, x) > 0  # halving contrast is penalised
    # one pair of 4x4 regions, contrast 1 -> 0: K = 2 regions, 2 ordered neighbour terms of (0 - 1)^2
    two = torch.cat([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)], dim=3)
    torch.testing.assert_close(spatial_consistency_loss(torch.full_like(two, 0.5), two), torch.tensor(1.0))
    v = torch.rand(1, 1, 8, 8, 8)
    assert spatial_consistency_loss(v, v) == 0 and spatial_consistency_loss(0.5 * v, v) > 0  # 3D: 6 neighbours


def test_exposure_control():
    torch.testing.assert_close(exposure_control_loss(torch.full((1, 1, 32, 32), 0.2)), torch.tensor(0.4))
    torch.testing.assert_close(exposure_control_loss(torch.full((1, 1, 16, 16, 16), 0.5), level=0.5), torch.tensor(0.0))


def test_colour_constancy_is_zero_for_one_channel():
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    loss = colour_constancy_loss(x)
    assert loss == 0
    loss.backward()  # keeps the graph
    rgb = torch.stack([torch.full((8, 8), v) for v in (0.2, 0.4, 0.8)]).unsqueeze(0)
    # pairs: (0.2-0.4)^2 + (0.2-0.8)^2 + (0.4-0.8)^2
    torch.testing.assert_close(colour_constancy_loss(rgb), torch.tensor(0.04 + 0.36 + 0.16))


def test_illumination_smoothness():
    assert illumination_smoothness_loss(torch.full((1, 8, 6, 6), 0.3)) == 0
    ramp = torch.arange(6.0).reshape(1, 1, 6, 1).expand(1, 1, 6, 6)
    torch.testing.assert_close(illumination_smoothness_loss(ramp), torch.tensor(2.0))  # 2 * (1 + 0)
    assert illumination_smoothness_loss(torch.rand(1, 4, 5, 5, 5)) > 0


def test_total_loss_trains_the_network():
    torch.manual_seed(0)
    net, loss_fn = ZeroDCE(2, features=8), ZeroDCELoss()
    x = 0.2 * torch.rand(2, 1, 32, 32)  # dark input
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        a = net.curves(x)
        loss = loss_fn(net.apply_curves(x, a), x, a)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        assert net(x).mean() > x.mean()  # exposure control brightens


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spatial_consistency_loss(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9)), r"\[1, 1, 8, 8\] differs"),
        (lambda: exposure_control_loss(torch.rand(1, 1, 8, 8)), "pooling size 16"),
        (lambda: exposure_control_loss(torch.rand(1, 1, 16, 16), level=1.5), "level must be in .* got 1.5"),
        (lambda: illumination_smoothness_loss(torch.rand(4, 4)), r"4D or 5D .* \[4, 4\]"),
        (lambda: ZeroDCELoss(tv_weight=-1.0), "tv_weight must be >= 0, got -1.0"),
    ],
)
def test_loss_ill_cases(call, match):
    with pytest.raises(ValueError, match=match):
        call()
