"""SR-UNet: a small U-Net on the low-resolution grid, a sub-pixel head and a global interpolation residual."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from monai_sr.checks import check_scale
from monai_sr.networks.blocks import ConvAct, conv_layer, pixel_shuffle

__all__ = ["SRUNet"]


class _Up(nn.Module):
    """Double the grid (transposed conv, kernel 2, stride 2), concatenate the skip, fuse by a 3x3 conv."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        tconv = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.up = tconv(in_channels, out_channels, kernel_size=2, stride=2)
        self.fuse = ConvAct(spatial_dims, 2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


class SRUNet(nn.Module):
    """U-Net super-resolution network with a sub-pixel head and a global interpolation residual.

    The encoder-decoder (stride-2 convolutions down, transposed convolutions up, skip connections)
    works on the low-resolution grid; a convolution to ``out_channels * prod(scale)`` channels and
    :func:`~monai_sr.networks.blocks.pixel_shuffle` bring it to the fine grid; with ``residual`` the
    result is added to the interpolated input::

        out = F.interpolate(x, scale_factor=scale, mode="bicubic" (2D) | "trilinear" (3D),
                            align_corners=False) + head(body(x))

    ``align_corners=False`` places output voxel ``j`` at input index ``(j + 0.5) / s - 0.5``: the
    field-of-view rule of the package (:func:`monai_sr.geometry.scaled_affine`). The last convolution
    starts at zero, so an untrained network is exactly the interpolation.

    Inputs of any spatial size are accepted: they are padded internally (edge replication, at the
    end of each axis) to a multiple of ``2 ** (len(channels) - 1)`` and the features cropped back, so
    the output is exactly ``input size * scale``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` when ``residual`` is on.
        scale: integer up-sampling factor, one for all axes or one per spatial axis (1 leaves an axis).
        channels: feature channels per U-Net level, finest first; ``len(channels)`` levels.
        residual: add the interpolated input to the output.

    Takes ``(N, in_channels, *spatial)`` and returns ``(N, out_channels, *(spatial * scale))``.

    Examples::

        net = SRUNet(2, scale=2)                                   # 2D x2, e.g. MRI slices
        y = net(torch.rand(4, 1, 45, 54))                          # -> (4, 1, 90, 108)
        net3 = SRUNet(3, 1, 1, scale=(2, 2, 1), channels=(16, 32))  # in-plane x2 on volumes
        y3 = net3(torch.rand(1, 1, 20, 24, 10))                    # -> (1, 1, 40, 48, 10)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        scale: int | Sequence[int] = 2,
        channels: Sequence[int] = (32, 64, 128),
        residual: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if residual and in_channels != out_channels:
            raise ValueError(
                f"a global residual needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        channels = tuple(channels)
        if len(channels) == 0:
            raise ValueError("channels must name at least one level, got ()")
        for c in channels:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"channels must be positive integers, got {c!r} in {channels}")
        self.scale: tuple[int, ...] = check_scale(scale, spatial_dims)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.channels = channels
        self.residual = residual
        self._scale_list: List[int] = list(self.scale)
        self._scale_factor: List[float] = [float(s) for s in self.scale]
        self._mode = "bicubic" if spatial_dims == 2 else "trilinear"
        self._multiple = 2 ** (len(channels) - 1)

        down = [nn.Sequential(ConvAct(spatial_dims, in_channels, channels[0]), ConvAct(spatial_dims, channels[0], channels[0]))]
        for c_prev, c in zip(channels[:-1], channels[1:]):
            down.append(nn.Sequential(ConvAct(spatial_dims, c_prev, c, stride=2), ConvAct(spatial_dims, c, c)))
        self.down = nn.ModuleList(down)
        # up[i] goes from level len-1-i to level len-2-i (coarsest first)
        self.up = nn.ModuleList(
            [_Up(spatial_dims, channels[i + 1], channels[i]) for i in range(len(channels) - 2, -1, -1)]
        )
        n_sub = 1
        for s in self.scale:
            n_sub *= s
        self.head = conv_layer(spatial_dims, channels[0], out_channels * n_sub)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad: List[int] = []
        for n in x.shape[2:]:
            pad = [0, (-n) % self._multiple] + pad  # F.pad lists the last axis first
        if sum(pad) == 0:
            return x
        return F.pad(x, pad, mode="replicate")

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """Features on the low-resolution grid, ``(N, channels[0], *spatial)``."""
        h = self._pad(x)
        skips: List[torch.Tensor] = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        n_up = len(skips) - 1
        for i, up in enumerate(self.up):
            h = up(h, skips[n_up - 1 - i])
        if self.spatial_dims == 2:
            return h[:, :, : x.shape[2], : x.shape[3]]
        return h[:, :, : x.shape[2], : x.shape[3], : x.shape[4]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        out = pixel_shuffle(self.head(self.body(x)), self._scale_list)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self._scale_factor, mode=self._mode, align_corners=False)
        return out
