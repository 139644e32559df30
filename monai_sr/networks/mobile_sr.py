"""MobileSR: a lightweight SR network built from MobileNetV3 inverted residual blocks, 2D/3D.

The block is MobileNetV3's (A. Howard et al., "Searching for MobileNetV3", ICCV 2019,
https://arxiv.org/abs/1905.02244): 1x1 expansion, depthwise convolution, h-swish, squeeze-excitation
with a hard sigmoid, 1x1 linear projection and an identity residual. The head and the global
residual are the ones of :class:`~monai_sr.networks.srunet.SRUNet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from monai_sr.checks import check_positive_int, check_scale, check_spatial_dims
from monai_sr.networks.blocks import conv_layer, pixel_shuffle

__all__ = ["SqueezeExcitation", "InvertedResidual", "MobileSR"]


class SqueezeExcitation(nn.Module):
    """MobileNetV3 squeeze-excitation: global average pool, 1x1 conv down, ReLU, 1x1 conv up, hard sigmoid."""

    def __init__(self, spatial_dims: int, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.gate = nn.Sequential(
            conv_layer(spatial_dims, channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, hidden, channels, kernel_size=1),
            nn.Hardsigmoid(),
        )
        self._axes = [2, 3] if spatial_dims == 2 else [2, 3, 4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=self._axes, keepdim=True))


class InvertedResidual(nn.Module):
    """``x + project(SE(hswish(depthwise(hswish(expand(x))))))`` with ``channels * expansion`` hidden channels.

    No batch normalisation (as in :class:`~monai_sr.networks.blocks.ConvAct`: it hurts intensity
    fidelity in SR); the convolutions carry biases instead.
    """

    def __init__(self, spatial_dims: int, channels: int, *, expansion: int = 4, kernel_size: int = 3, se_reduction: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.body = nn.Sequential(
            conv(channels, hidden, 1),
            nn.Hardswish(),
            conv(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
            nn.Hardswish(),
            SqueezeExcitation(spatial_dims, hidden, reduction=se_reduction),
            conv(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MobileSR(nn.Module):
    """Lightweight SR: MobileNetV3 inverted residuals on the low-resolution grid, a sub-pixel head and
    a global interpolation residual::

        out = F.interpolate(x, scale_factor=scale, mode="bicubic" (2D) | "trilinear" (3D),
                            align_corners=False) + pixel_shuffle(head(f + conv(blocks(f))))

    with ``f = conv_first(x)``. ``align_corners=False`` keeps the field of view (the package's geometry
    rule, as in :class:`~monai_sr.networks.srunet.SRUNet`); the head starts at zero, so an untrained
    network is exactly the interpolation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` when ``residual`` is on.
        scale: integer factor, one for all axes or one per spatial axis (1 leaves an axis).
        features: channels between blocks.
        num_blocks: number of inverted residual blocks.
        expansion: expansion ratio of the 1x1 convolution (hidden = ``features * expansion``).
        kernel_size: odd kernel size of the depthwise convolution.
        se_reduction: squeeze-excitation reduction (MobileNetV3: 4); ``<= features * expansion``.
        residual: add the interpolated input to the output.

    Takes ``(N, in_channels, *spatial)`` and returns ``(N, out_channels, *(spatial * scale))``.

    Examples::

        net = MobileSR(2, scale=2)                                         # ~69k parameters
        y = net(torch.rand(2, 1, 40, 48))                                  # -> (2, 1, 80, 96)
        net3 = MobileSR(3, scale=(2, 2, 1), features=8, num_blocks=2)
        y3 = net3(torch.rand(1, 1, 10, 12, 6))                             # -> (1, 1, 20, 24, 6)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        scale: int | Sequence[int] = 2,
        features: int = 24,
        num_blocks: int = 6,
        expansion: int = 4,
        kernel_size: int = 3,
        se_reduction: int = 4,
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("features", features)
        check_positive_int("num_blocks", num_blocks)
        check_positive_int("expansion", expansion)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("se_reduction", se_reduction)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        if se_reduction > features * expansion:
            raise ValueError(
                f"se_reduction ({se_reduction}) must not exceed the expanded channels ({features * expansion})"
            )
        if residual and in_channels != out_channels:
            raise ValueError(
                f"a global residual needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        self.scale: tuple[int, ...] = check_scale(scale, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual
        self._scale_list: List[int] = list(self.scale)
        self._scale_factor: List[float] = [float(s) for s in self.scale]
        self._mode = "bicubic" if spatial_dims == 2 else "trilinear"

        self.conv_first = conv_layer(spatial_dims, in_channels, features)
        self.blocks = nn.Sequential(
            *[
                InvertedResidual(spatial_dims, features, expansion=expansion, kernel_size=kernel_size, se_reduction=se_reduction)
                for _ in range(num_blocks)
            ]
        )
        self.conv_body = conv_layer(spatial_dims, features, features)
        n_sub = 1
        for s in self.scale:
            n_sub *= s
        self.head = conv_layer(spatial_dims, features, out_channels * n_sub)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.blocks(feat))
        out = pixel_shuffle(self.head(feat), self._scale_list)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self._scale_factor, mode=self._mode, align_corners=False)
        return out
