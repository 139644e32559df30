"""CBAM: Convolutional Block Attention Module (Woo et al., ECCV 2018), for 2D and 3D feature maps.

S. Woo, J. Park, J.-Y. Lee, I. S. Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_sr.checks import check_positive_int, check_spatial_dims
from monai_sr.networks.blocks import conv_layer

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM"]


class ChannelAttention(nn.Module):
    """CBAM's channel gate: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` multiplies each channel.

    The shared MLP is two 1x1 convolutions ``channels -> max(channels // reduction, 1) -> channels``
    with a ReLU between them.
    """

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        if reduction > channels:
            raise ValueError(f"reduction ({reduction}) must not exceed channels ({channels})")
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            conv_layer(spatial_dims, channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, hidden, channels, kernel_size=1),
        )
        self._axes = [2, 3] if spatial_dims == 2 else [2, 3, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=self._axes, keepdim=True)
        mx = x.amax(dim=self._axes, keepdim=True)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM's spatial gate: ``sigmoid(conv_k([mean_c(x), max_c(x)]))`` multiplies each voxel."""

    def __init__(self, spatial_dims: int, *, kernel_size: int = 7) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.conv = conv_layer(spatial_dims, 2, 1, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention (Woo et al. 2018).

    A shape-preserving refinement of a feature map ``(N, channels, *spatial)``; 2D and 3D.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels of the input (and output).
        reduction: channel reduction of the channel-attention MLP (paper: 16); ``<= channels``.
        spatial_kernel: odd kernel size of the spatial-attention convolution (paper: 7).

    Examples::

        cbam = CBAM(2, 64)
        y = cbam(torch.rand(2, 64, 40, 40))         # -> (2, 64, 40, 40)
        cbam3 = CBAM(3, 16, reduction=4, spatial_kernel=3)
        y3 = cbam3(torch.rand(1, 16, 8, 8, 8))      # -> (1, 16, 8, 8, 8)
    """

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(spatial_dims, channels, reduction=reduction)
        self.spatial = SpatialAttention(spatial_dims, kernel_size=spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
