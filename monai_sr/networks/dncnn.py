"""DnCNN: residual-learning denoiser (Zhang et al. 2017), 2D/3D, with optional CBAM attention.

K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep
CNN for Image Denoising", IEEE TIP 26(7), 2017, https://arxiv.org/abs/1608.03981.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_sr.checks import check_positive_int, check_spatial_dims
from monai_sr.networks.blocks import conv_layer
from monai_sr.networks.cbam import CBAM

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """DnCNN: ``depth`` convolutions predict the noise; the output is ``input - noise``.

    Layer 1 is conv + ReLU, layers 2 .. depth-1 are conv + batch norm + ReLU, the last layer is a
    conv to ``out_channels`` (the noise estimate). With ``cbam_every=k`` a :class:`~monai_sr.networks.cbam.CBAM`
    block follows every k-th of the layers 1 .. depth-1 (after its ReLU); the paper has none.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` when ``residual`` is on.
        depth: number of convolution layers (paper: 17 for a known noise level); at least 2.
        features: feature channels of the hidden layers (paper: 64).
        batch_norm: batch normalisation in the middle layers (paper: yes).
        residual: return ``input - noise`` (residual learning, paper); off returns the last conv's output.
        cbam_every: insert CBAM after every ``cbam_every``-th hidden layer; ``None`` for no attention.
            Must be between 1 and ``depth - 1``.
        cbam_reduction: channel reduction of the CBAM channel gate (``<= features``).

    Takes ``(N, in_channels, *spatial)`` and returns ``(N, out_channels, *spatial)``; ``scale`` is all 1s.

    Examples::

        net = DnCNN(2)                                     # 17 layers, 64 features, 2D
        y = net(torch.rand(4, 1, 64, 64))                  # -> (4, 1, 64, 64)
        att = DnCNN(3, depth=8, features=16, cbam_every=2, cbam_reduction=4)
        y3 = att(torch.rand(1, 1, 16, 16, 16))             # -> (1, 1, 16, 16, 16)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        depth: int = 17,
        features: int = 64,
        batch_norm: bool = True,
        residual: bool = True,
        cbam_every: int | None = None,
        cbam_reduction: int = 16,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("depth", depth, minimum=2)
        check_positive_int("features", features)
        if residual and in_channels != out_channels:
            raise ValueError(
                f"residual learning needs in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        if cbam_every is not None:
            check_positive_int("cbam_every", cbam_every)
            if cbam_every > depth - 1:
                raise ValueError(f"cbam_every ({cbam_every}) exceeds the {depth - 1} hidden layers of depth {depth}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual
        self.scale: tuple[int, ...] = (1,) * spatial_dims
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d

        layers: list[nn.Module] = []
        for i in range(depth - 1):
            conv = conv_layer(spatial_dims, in_channels if i == 0 else features, features)
            if i == 0 or not batch_norm:
                layers += [conv, nn.ReLU(inplace=True)]
            else:
                conv.bias = None  # a bias before batch norm is redundant
                layers += [conv, norm(features), nn.ReLU(inplace=True)]
            if cbam_every is not None and (i + 1) % cbam_every == 0:
                layers.append(CBAM(spatial_dims, features, reduction=cbam_reduction))
        layers.append(conv_layer(spatial_dims, features, out_channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        noise = self.body(x)
        return x - noise if self.residual else noise
