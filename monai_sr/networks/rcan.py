"""RCAN: residual channel attention network (Zhang et al. 2018), 2D/3D with per-axis integer scales.

Y. Zhang, K. Li, K. Li, L. Wang, B. Zhong, Y. Fu, "Image Super-Resolution Using Very Deep Residual
Channel Attention Networks", ECCV 2018, https://arxiv.org/abs/1807.02758.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_sr.checks import check_positive_int, check_scale, check_spatial_dims
from monai_sr.networks.blocks import SubpixelUpsample, conv_layer

__all__ = ["ChannelAttentionLayer", "RCAB", "ResidualGroup", "RCAN"]


class ChannelAttentionLayer(nn.Module):
    """RCAN's channel attention: global average pool, 1x1 conv down by ``reduction``, ReLU, 1x1 conv up,
    sigmoid; multiplies each channel."""

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            conv_layer(spatial_dims, channels, max(channels // reduction, 1), kernel_size=1),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, max(channels // reduction, 1), channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self._axes = [2, 3] if spatial_dims == 2 else [2, 3, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=self._axes, keepdim=True))


class RCAB(nn.Module):
    """Residual channel attention block: ``x + res_scale * CA(conv(ReLU(conv(x))))``."""

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_layer(spatial_dims, channels, channels),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, channels, channels),
            ChannelAttentionLayer(spatial_dims, channels, reduction=reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class ResidualGroup(nn.Module):
    """``num_blocks`` RCABs and a conv, with a short skip: ``x + conv(RCABs(x))``."""

    def __init__(self, spatial_dims: int, channels: int, num_blocks: int, *, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            RCAB(spatial_dims, channels, reduction=reduction, res_scale=res_scale) for _ in range(num_blocks)
        ]
        blocks.append(conv_layer(spatial_dims, channels, channels))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """RCAN: residual-in-residual groups of channel-attention blocks, a long skip, a sub-pixel up-sampler.

    ``x -> head conv -> f; f + conv(groups(f)) -> SubpixelUpsample -> tail conv``. The up-sampler is
    EDSR/RCAN's conv + pixel shuffle per stage, with one factor per axis
    (:class:`~monai_sr.networks.blocks.SubpixelUpsample`); ``scale=1`` gives a restoration network.
    RCAN subtracts/adds the RGB mean of DIV2K around the network; MRI intensities are normalised by the
    pipeline instead, so there is no mean shift here.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        scale: integer factor, one for all axes or one per spatial axis (1 leaves an axis).
        features: feature channels (paper: 64).
        num_groups: residual groups (paper: 10).
        num_blocks: RCABs per group (paper: 20).
        reduction: channel-attention reduction (paper: 16); ``<= features``.
        res_scale: scaling of each RCAB's residual branch (paper: 1); in ``(0, 1]``.

    Takes ``(N, in_channels, *spatial)`` and returns ``(N, out_channels, *(spatial * scale))``.

    Examples::

        net = RCAN(2, scale=2)                                                # the paper's RCAN, x2
        y = net(torch.rand(1, 1, 24, 24))                                     # -> (1, 1, 48, 48)
        net3 = RCAN(3, scale=(1, 1, 2), features=16, num_groups=2, num_blocks=2, reduction=4)
        y3 = net3(torch.rand(1, 1, 10, 10, 5))                                # -> (1, 1, 10, 10, 10)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        scale: int | Sequence[int] = 2,
        features: int = 64,
        num_groups: int = 10,
        num_blocks: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("features", features)
        check_positive_int("num_groups", num_groups)
        check_positive_int("num_blocks", num_blocks)
        check_positive_int("reduction", reduction)
        if reduction > features:
            raise ValueError(f"reduction ({reduction}) must not exceed features ({features})")
        if not 0.0 < res_scale <= 1.0:
            raise ValueError(f"res_scale must be in (0, 1], got {res_scale!r}")
        self.scale: tuple[int, ...] = check_scale(scale, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.head = conv_layer(spatial_dims, in_channels, features)
        groups: list[nn.Module] = [
            ResidualGroup(spatial_dims, features, num_blocks, reduction=reduction, res_scale=res_scale)
            for _ in range(num_groups)
        ]
        groups.append(conv_layer(spatial_dims, features, features))
        self.body = nn.Sequential(*groups)
        self.upsample = SubpixelUpsample(spatial_dims, features, self.scale)
        self.tail = conv_layer(spatial_dims, features, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        feat = self.head(x)
        feat = feat + self.body(feat)
        return self.tail(self.upsample(feat))
