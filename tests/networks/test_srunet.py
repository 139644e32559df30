"""SRUNet and pixel_shuffle: shapes (2D/3D, anisotropic, odd sizes), ill cases, TorchScript, residual."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_sr.networks import SRUNet, pixel_shuffle

SMALL = (8, 16, 32)

SHAPE_CASES = [
    # (spatial_dims, kwargs, input shape, expected output shape)
    (2, {"scale": 2}, (2, 1, 32, 32), (2, 1, 64, 64)),
    (2, {"scale": (2, 2)}, (1, 1, 45, 54), (1, 1, 90, 108)),
    (2, {"scale": (1, 2)}, (1, 1, 17, 20), (1, 1, 17, 40)),
    (2, {"scale": 3, "channels": (8,)}, (1, 1, 7, 5), (1, 1, 21, 15)),
    (2, {"scale": (2, 4), "channels": (8, 16)}, (1, 1, 9, 8), (1, 1, 18, 32)),
    (2, {"scale": 2, "residual": False, "in_channels": 2, "out_channels": 3}, (1, 2, 12, 13), (1, 3, 24, 26)),
    (3, {"scale": 2, "channels": (4, 8)}, (1, 1, 8, 8, 8), (1, 1, 16, 16, 16)),
    (3, {"scale": (2, 2, 1), "channels": (4, 8)}, (1, 1, 9, 10, 7), (1, 1, 18, 20, 7)),
    (3, {"scale": (1, 1, 3), "channels": (4, 8, 8)}, (2, 1, 5, 6, 3), (2, 1, 5, 6, 9)),
]


@pytest.mark.parametrize("dims, kwargs, in_shape, out_shape", SHAPE_CASES)
def test_shapes(dims, kwargs, in_shape, out_shape):
    kwargs = dict(kwargs)
    in_ch = kwargs.pop("in_channels", 1)
    out_ch = kwargs.pop("out_channels", 1)
    kwargs.setdefault("channels", SMALL)
    net = SRUNet(dims, in_ch, out_ch, **kwargs).eval()
    with torch.no_grad():
        y = net(torch.rand(in_shape))
    assert tuple(y.shape) == out_shape
    assert len(net.scale) == dims and all(isinstance(s, int) for s in net.scale)


def test_default_config_size_and_scale():
    net = SRUNet(2)
    assert net.scale == (2, 2)
    n_params = sum(p.numel() for p in net.parameters())
    assert 100_000 < n_params < 500_000


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((1,), {}, "spatial_dims"),
        ((4,), {}, "spatial_dims"),
        ((2,), {"scale": (2, 2, 2)}, r"\(2, 2, 2\)"),
        ((3,), {"scale": (2, 2)}, r"\(2, 2\)"),
        ((2,), {"scale": 0}, "0"),
        ((2,), {"scale": (2, -1)}, "-1"),
        ((2,), {"scale": 1.5}, "1.5"),
        ((2,), {"scale": (2, 2.5)}, "2.5"),
        ((2, 1, 2), {}, "in_channels == out_channels"),
        ((2,), {"channels": ()}, "channels"),
        ((2,), {"channels": (16, 0)}, "0"),
        ((2, 0, 0), {"residual": False}, "in_channels"),
    ],
)
def test_ill_cases(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRUNet(*args, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="4D"):
        SRUNet(2, channels=SMALL)(torch.rand(1, 1, 8, 8, 8))


def test_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SRUNet(2, scale=(2, 2), channels=SMALL).eval()
    with torch.no_grad():  # non-zero head so the body's path is compared too
        net.head.weight.normal_(std=0.1)
    x = torch.rand(2, 1, 23, 30)
    scripted = torch.jit.script(net)
    path = tmp_path / "srunet.ts"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected)
        torch.testing.assert_close(loaded(x), expected)


def test_torchscript_3d():
    net = SRUNet(3, scale=(2, 2, 1), channels=(4, 8)).eval()
    x = torch.rand(1, 1, 7, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_zero_head_is_bicubic():
    net = SRUNet(2, scale=(2, 2), channels=SMALL).eval()  # the head starts at zero
    x = torch.rand(3, 1, 21, 18)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x), expected)
        net.head.weight.normal_()  # a trained-like head changes it
        assert not torch.equal(net(x), expected)
        net.head.weight.zero_()
        assert torch.equal(net(x), expected)


def test_zero_head_is_trilinear_3d_anisotropic():
    net = SRUNet(3, scale=(2, 1, 2), channels=(4, 8)).eval()
    x = torch.rand(1, 1, 6, 5, 4)
    expected = F.interpolate(x, scale_factor=(2.0, 1.0, 2.0), mode="trilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def test_pixel_shuffle_matches_torch_isotropic():
    x = torch.arange(2 * 12 * 5 * 7, dtype=torch.float32).reshape(2, 12, 5, 7)
    torch.testing.assert_close(pixel_shuffle(x, [2, 2]), F.pixel_shuffle(x, 2))


def test_pixel_shuffle_matches_monai_3d():
    from monai.networks.utils import pixelshuffle

    x = torch.rand(1, 16, 3, 4, 5)
    torch.testing.assert_close(pixel_shuffle(x, [2, 2, 2]), pixelshuffle(x, spatial_dims=3, scale_factor=2))


def test_pixel_shuffle_anisotropic_placement():
    # channel k = i * s1 + j lands at output (r * s0 + i, c * s1 + j)
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1, 1).repeat(1, 1, 2, 2)
    y = pixel_shuffle(x, [2, 3])
    assert y.shape == (1, 1, 4, 6)
    expected = torch.tensor([[0.0, 1, 2], [3, 4, 5]]).repeat(2, 2)
    torch.testing.assert_close(y[0, 0], expected)
    y3 = pixel_shuffle(torch.rand(2, 4, 3, 4, 5), [2, 2, 1])
    assert y3.shape == (2, 1, 6, 8, 5)


@pytest.mark.parametrize(
    "shape, scale, match",
    [((1, 4, 3), [2], "4D or 5D"), ((1, 4, 3, 3), [2, 2, 1], "one factor"), ((1, 6, 3, 3), [2, 2], "divisible"),
     ((1, 4, 3, 3), [0, 2], "positive")],
)
def test_pixel_shuffle_ill_cases(shape, scale, match):
    with pytest.raises(ValueError, match=match):
        pixel_shuffle(torch.zeros(shape), scale)
