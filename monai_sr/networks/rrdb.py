"""RRDBNet: the ESRGAN generator (Wang et al. 2018) for 2D/3D with per-axis integer scales.

X. Wang, K. Yu, S. Wu, J. Gu, Y. Liu, C. Dong, C. C. Loy, Y. Qiao, X. Tang, "ESRGAN: Enhanced
Super-Resolution Generative Adversarial Networks", ECCV Workshops 2018, https://arxiv.org/abs/1809.00219.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
from torch import nn

from monai_sr.checks import check_positive_int, check_scale, check_spatial_dims
from monai_sr.networks.blocks import NearestConvUpsample, conv_layer

__all__ = ["ResidualDenseBlock", "RRDB", "RRDBNet"]


class ResidualDenseBlock(nn.Module):
    """ESRGAN's dense block: 5 convolutions, each fed all previous outputs (growth ``growth``), LeakyReLU(0.2)
    after the first 4; ``x + res_scale * conv5(...)``."""

    def __init__(self, spatial_dims: int, features: int, growth: int, *, res_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [conv_layer(spatial_dims, features + i * growth, growth if i < 4 else features) for i in range(5)]
        )
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.res_scale = res_scale
        for conv in self.convs:  # ESRGAN's initialisation: Kaiming scaled by 0.1
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats: List[torch.Tensor] = [x]
        out = x
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, dim=1))
            if i < 4:
                out = self.act(out)
                feats.append(out)
        return x + self.res_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three :class:`ResidualDenseBlock` and ``x + res_scale * (...)``."""

    def __init__(self, spatial_dims: int, features: int, growth: int, *, res_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[ResidualDenseBlock(spatial_dims, features, growth, res_scale=res_scale) for _ in range(3)]
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class RRDBNet(nn.Module):
    """ESRGAN generator: conv, ``num_blocks`` RRDBs with a trunk skip, up-sampling, two convs.

    ``x -> conv_first -> f; f + conv_body(RRDBs(f)) -> upsample -> conv_hr + LeakyReLU -> conv_last``.
    The up-sampling is ESRGAN's nearest-neighbour interpolation + 3x3 conv + LeakyReLU per stage
    (:class:`~monai_sr.networks.blocks.NearestConvUpsample`), not a sub-pixel convolution: a factor per
    axis is split into prime stages (x4 is two x2 stages as in ESRGAN; (2, 2, 1) is one in-plane stage).
    ``scale=1`` leaves the grid alone: a denoiser/restorer with the same body.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        scale: integer factor, one for all axes or one per spatial axis (1 leaves an axis).
        features: trunk feature channels (paper: 64).
        growth: growth channels of the dense blocks (paper: 32).
        num_blocks: number of RRDBs (paper: 23).
        res_scale: residual scaling of dense blocks and RRDBs (paper: 0.2); in ``(0, 1]``.

    Takes ``(N, in_channels, *spatial)`` and returns ``(N, out_channels, *(spatial * scale))``.

    Examples::

        net = RRDBNet(2, 1, 1, scale=4)                                      # ESRGAN x4 for slices
        y = net(torch.rand(1, 1, 32, 32))                                    # -> (1, 1, 128, 128)
        net3 = RRDBNet(3, scale=(2, 2, 1), features=16, growth=8, num_blocks=2)
        y3 = net3(torch.rand(1, 1, 12, 12, 6))                               # -> (1, 1, 24, 24, 6)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        scale: int | Sequence[int] = 4,
        features: int = 64,
        growth: int = 32,
        num_blocks: int = 23,
        res_scale: float = 0.2,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("features", features)
        check_positive_int("growth", growth)
        check_positive_int("num_blocks", num_blocks)
        if not 0.0 < res_scale <= 1.0:
            raise ValueError(f"res_scale must be in (0, 1], got {res_scale!r}")
        self.scale: tuple[int, ...] = check_scale(scale, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.conv_first = conv_layer(spatial_dims, in_channels, features)
        self.body = nn.Sequential(*[RRDB(spatial_dims, features, growth, res_scale=res_scale) for _ in range(num_blocks)])
        self.conv_body = conv_layer(spatial_dims, features, features)
        self.upsample = NearestConvUpsample(spatial_dims, features, self.scale)
        self.conv_hr = conv_layer(spatial_dims, features, features)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.conv_last = conv_layer(spatial_dims, features, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        return self.conv_last(self.act(self.conv_hr(self.upsample(feat))))
