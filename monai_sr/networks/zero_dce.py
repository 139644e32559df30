"""Zero-DCE: zero-reference deep curve estimation (Guo et al. 2020), adapted to one-channel MRI, 2D/3D.

C. Guo, C. Li, J. Guo, C. C. Loy, J. Hou, S. Kwong, R. Cong, "Zero-Reference Deep Curve Estimation for
Low-Light Image Enhancement", CVPR 2020, https://arxiv.org/abs/2001.06826.

The four zero-reference losses live in :mod:`monai_sr.training.losses`
(:class:`~monai_sr.training.losses.ZeroDCELoss`).
"""

from __future__ import annotations

import torch
from torch import nn

from monai_sr.checks import check_positive_int, check_spatial_dims
from monai_sr.networks.blocks import conv_layer

__all__ = ["ZeroDCE"]


class ZeroDCE(nn.Module):
    """Zero-DCE: DCE-Net estimates per-voxel curve parameters; ``n_iter`` light-enhancement curves
    ``LE(x) = x + a * x * (1 - x)`` are applied to the input.

    DCE-Net is 7 convolutions (3x3 / 3x3x3, ``features`` channels, ReLU) with symmetric skip
    concatenations: ``x5 = conv5([x3, x4])``, ``x6 = conv6([x2, x5])``,
    ``a = tanh(conv7([x1, x6]))``, so every ``a`` lies in ``(-1, 1)``. The paper's RGB net has
    ``3 * 8 = 24`` output maps; here there are ``in_channels * n_iter`` (8 for one-channel MRI). The
    curve maps ``[0, 1]`` into ``[0, 1]``, so the input is expected normalised to ``[0, 1]``.
    Train it with :class:`~monai_sr.training.losses.ZeroDCELoss` on ``(self(x), x, self.curves(x))``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; must equal ``in_channels`` (the curves act per channel).
        features: DCE-Net feature channels (paper: 32).
        n_iter: number of curve iterations (paper: 8).

    Takes ``(N, in_channels, *spatial)`` and returns the enhanced ``(N, in_channels, *spatial)``;
    ``scale`` is all 1s.

    Examples::

        net = ZeroDCE(2)                                   # one-channel MRI slices
        x = torch.rand(2, 1, 64, 64)
        y = net(x)                                         # -> (2, 1, 64, 64), in [0, 1]
        a = net.curves(x)                                  # -> (2, 8, 64, 64), for the smoothness loss
        net3 = ZeroDCE(3, features=8, n_iter=4)
        y3 = net3(torch.rand(1, 1, 16, 16, 16))            # -> (1, 1, 16, 16, 16)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        *,
        features: int = 32,
        n_iter: int = 8,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("features", features)
        check_positive_int("n_iter", n_iter)
        if in_channels != out_channels:
            raise ValueError(
                f"the curves act per channel, so in_channels must equal out_channels, got {in_channels} and {out_channels}"
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_iter = n_iter
        self.scale: tuple[int, ...] = (1,) * spatial_dims
        f = features
        self.conv1 = conv_layer(spatial_dims, in_channels, f)
        self.conv2 = conv_layer(spatial_dims, f, f)
        self.conv3 = conv_layer(spatial_dims, f, f)
        self.conv4 = conv_layer(spatial_dims, f, f)
        self.conv5 = conv_layer(spatial_dims, 2 * f, f)
        self.conv6 = conv_layer(spatial_dims, 2 * f, f)
        self.conv7 = conv_layer(spatial_dims, 2 * f, in_channels * n_iter)
        self.act = nn.ReLU(inplace=True)

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        """Curve parameter maps ``(N, n_iter * in_channels, *spatial)`` in ``(-1, 1)``; iteration ``k`` uses
        channels ``k * in_channels .. (k + 1) * in_channels - 1``."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (N, C, *spatial), got shape {list(x.shape)}")
        x1 = self.act(self.conv1(x))
        x2 = self.act(self.conv2(x1))
        x3 = self.act(self.conv3(x2))
        x4 = self.act(self.conv4(x3))
        x5 = self.act(self.conv5(torch.cat([x3, x4], dim=1)))
        x6 = self.act(self.conv6(torch.cat([x2, x5], dim=1)))
        return torch.tanh(self.conv7(torch.cat([x1, x6], dim=1)))

    def apply_curves(self, x: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        """Apply ``LE(x) = x + a_k x (1 - x)`` for ``k = 1 .. n_iter``."""
        c = self.in_channels
        for k in range(self.n_iter):
            a = curves[:, k * c : (k + 1) * c]
            x = x + a * x * (1.0 - x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_curves(x, self.curves(x))
