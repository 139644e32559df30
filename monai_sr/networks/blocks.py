"""Building blocks shared by the SR networks.

:func:`pixel_shuffle` is the sub-pixel rearrangement with one integer factor *per axis* (MONAI's
``monai.networks.utils.pixelshuffle`` only takes one factor for all axes), for 2D and 3D tensors. Its
channel order is the one of :func:`torch.nn.functional.pixel_shuffle`: input channel
``c * prod(s) + offset`` feeds output channel ``c``, with ``offset`` running over the sub-pixel position
in row-major order, so for an isotropic factor both give the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
from torch import nn

__all__ = [
    "pixel_shuffle",
    "conv_layer",
    "ConvAct",
    "upsample_stages",
    "SubpixelUpsample",
    "NearestConvUpsample",
]


def pixel_shuffle(x: torch.Tensor, scale: List[int]) -> torch.Tensor:
    """Rearrange ``(N, C * prod(scale), *spatial)`` into ``(N, C, *(spatial * scale))``.

    Args:
        x: a 4D (2D images) or 5D (3D volumes) tensor.
        scale: one positive integer factor per spatial axis, e.g. ``[2, 2]``, ``[1, 2]`` or ``[2, 2, 1]``.

    Returns:
        The tensor with ``C`` channels and every spatial axis ``scale`` times longer.

    Raises:
        ValueError: ``x`` is not 4D/5D, ``scale`` has the wrong length or a non-positive factor, or the
            channel count is not divisible by ``prod(scale)``.

    Examples::

        y = pixel_shuffle(torch.zeros(1, 8, 10, 12), [2, 4])   # -> (1, 1, 20, 48)
    """
    dims = x.dim() - 2
    if dims != 2 and dims != 3:
        raise ValueError(f"pixel_shuffle expects a 4D or 5D tensor, got {x.dim()}D")
    if len(scale) != dims:
        raise ValueError(f"scale {scale} must have one factor per spatial axis ({dims})")
    prod = 1
    for s in scale:
        if s < 1:
            raise ValueError(f"scale factors must be positive, got {scale}")
        prod *= s
    n = x.shape[0]
    c_in = x.shape[1]
    if c_in % prod != 0:
        raise ValueError(f"channels ({c_in}) must be divisible by the product of scale {scale} ({prod})")
    c = c_in // prod
    if dims == 2:
        h, w = x.shape[2], x.shape[3]
        y = x.reshape(n, c, scale[0], scale[1], h, w)
        y = y.permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c, h * scale[0], w * scale[1])
    d, h, w = x.shape[2], x.shape[3], x.shape[4]
    y = x.reshape(n, c, scale[0], scale[1], scale[2], d, h, w)
    y = y.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(n, c, d * scale[0], h * scale[1], w * scale[2])


def conv_layer(spatial_dims: int, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """A 2D or 3D convolution with "same" padding for odd ``kernel_size`` (with bias)."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return conv(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


class ConvAct(nn.Sequential):
    """Convolution followed by a LeakyReLU(0.2); no normalisation (it hurts intensity fidelity in SR)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            conv_layer(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, stride=stride),
            nn.LeakyReLU(0.2, inplace=True),
        )


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def upsample_stages(scale: Sequence[int]) -> list[tuple[int, ...]]:
    """Split per-axis factors into stages of prime factors, the way EDSR/ESRGAN chain x2 stages.

    Each axis contributes its prime factors (smallest first); stage ``k`` takes the ``k``-th factor of
    every axis (1 where an axis has run out). ``(4, 4)`` gives ``[(2, 2), (2, 2)]`` (ESRGAN's x4),
    ``(4, 2, 1)`` gives ``[(2, 2, 1), (2, 1, 1)]``, ``(3, 3)`` gives ``[(3, 3)]`` and ``(1, 1)`` gives ``[]``.
    """
    factors = [_prime_factors(int(s)) for s in scale]
    n = max((len(f) for f in factors), default=0)
    return [tuple(f[k] if k < len(f) else 1 for f in factors) for k in range(n)]


class _SubpixelStage(nn.Module):
    def __init__(self, spatial_dims: int, channels: int, factors: tuple[int, ...]) -> None:
        super().__init__()
        prod = 1
        for f in factors:
            prod *= f
        self.conv = conv_layer(spatial_dims, channels, channels * prod)
        self.factors: List[int] = list(factors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(self.conv(x), self.factors)


class SubpixelUpsample(nn.Sequential):
    """EDSR/RCAN up-sampler with per-axis factors: per stage of :func:`upsample_stages`, a 3x3
    convolution to ``channels * prod(stage)`` and :func:`pixel_shuffle`. Identity for scale 1."""

    def __init__(self, spatial_dims: int, channels: int, scale: Sequence[int]) -> None:
        super().__init__(*[_SubpixelStage(spatial_dims, channels, st) for st in upsample_stages(scale)])


class _NearestConvStage(nn.Module):
    def __init__(self, spatial_dims: int, channels: int, factors: tuple[int, ...]) -> None:
        super().__init__()
        self.conv = conv_layer(spatial_dims, channels, channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.factors: List[float] = [float(f) for f in factors]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(nn.functional.interpolate(x, scale_factor=self.factors, mode="nearest")))


class NearestConvUpsample(nn.Sequential):
    """ESRGAN up-sampler with per-axis factors: per stage of :func:`upsample_stages`, nearest-neighbour
    interpolation, a 3x3 convolution and LeakyReLU(0.2). Identity for scale 1."""

    def __init__(self, spatial_dims: int, channels: int, scale: Sequence[int]) -> None:
        super().__init__(*[_NearestConvStage(spatial_dims, channels, st) for st in upsample_stages(scale)])
