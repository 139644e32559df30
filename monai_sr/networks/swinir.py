"""A light SwinIR (2D): residual groups of MONAI's shifted-window transformer blocks, a sub-pixel head and
a global interpolation residual."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_sr.checks import check_scale
from monai_sr.networks.blocks import pixel_shuffle

__all__ = ["SwinIRLight"]


class _ResidualSwinGroup(nn.Module):
    """SwinIR's RSTB: ``depth`` Swin blocks (MONAI's :class:`BasicLayer`, windows alternately shifted),
    a 3x3 convolution, and the group's input added back. ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        # imported here: `import monai` costs seconds, and monai_sr.networks is imported without it
        from monai.networks.nets.swin_unetr import BasicLayer

        self.blocks = BasicLayer(dim=dim, depth=depth, num_heads=num_heads, window_size=(window, window),
                                 drop_path=[0.0] * depth, mlp_ratio=mlp_ratio, qkv_bias=True, downsample=None)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class SwinIRLight(nn.Module):
    """SwinIR (Liang et al., ICCV workshops 2021) in its light form, 2D, with the SR-UNet's interpolation
    residual::

        out = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
              + head(f + conv(groups(f))),   f = conv_first(x)

    The transformer blocks are MONAI's (:class:`monai.networks.nets.swin_unetr.BasicLayer`: window
    attention with a relative position bias, shifted windows on every second block, the input padded
    to a multiple of the window inside each block), so inputs of any size work. The head is SwinIR's
    "pixelshuffledirect" of its light model: one 3x3 convolution to ``out_channels * prod(scale)``
    channels and a pixel shuffle; it starts at zero, so an untrained network is exactly the
    interpolation (the field-of-view rule of :func:`monai_sr.geometry.scaled_affine`, as SR-UNet).

    The first three arguments are SR-UNet's, so that a bundle's ``network_def`` can name either.

    Args:
        spatial_dims: 2 (the only one).
        in_channels: input channels.
        out_channels: must equal ``in_channels`` (the interpolation residual).
        scale: integer up-sampling factor, one for both axes or one per axis.
        dim: feature channels of the transformer (SwinIR-light: 60).
        depths: Swin blocks in each residual group (SwinIR-light: four groups of six).
        num_heads: attention heads (``dim`` must be divisible by it).
        window: attention window, pixels of the input grid (SwinIR: 8).
        mlp_ratio: hidden width of each block's MLP relative to ``dim``.

    Takes ``(N, in_channels, H, W)`` and returns ``(N, in_channels, H * scale[0], W * scale[1])``. Needs
    ``einops`` (MONAI's optional dependency for its Swin blocks; in the ``test`` extra here).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int | Sequence[int] = 2,
        dim: int = 48,
        depths: Sequence[int] = (4, 4, 4),
        num_heads: int = 4,
        window: int = 8,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        try:
            import einops  # noqa: F401  (MONAI's Swin blocks import it only when they first run)
        except ImportError:
            raise ImportError("SwinIRLight needs einops for MONAI's Swin blocks: pip install einops") from None
        if spatial_dims != 2:
            raise ValueError(f"SwinIRLight is 2D only, got spatial_dims={spatial_dims}")
        if out_channels != in_channels:
            raise ValueError(f"out_channels {out_channels} must equal in_channels {in_channels} (interpolation residual)")
        self.scale = check_scale(scale, 2)
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.conv_first = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.groups = nn.Sequential(*[_ResidualSwinGroup(dim, d, num_heads, window, mlp_ratio) for d in depths])
        self.norm = nn.LayerNorm(dim)
        self.conv_after = nn.Conv2d(dim, dim, 3, padding=1)
        factor = self.scale[0] * self.scale[1]
        self.head = nn.Conv2d(dim, in_channels * factor, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"SwinIRLight takes (N, C, H, W), got shape {tuple(x.shape)}")
        f = self.conv_first(x)
        body = self.groups(f)
        body = self.norm(body.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        detail = pixel_shuffle(self.head(self.conv_after(body) + f), self.scale)
        base = F.interpolate(x, scale_factor=tuple(float(s) for s in self.scale), mode="bicubic", align_corners=False)
        return base + detail
