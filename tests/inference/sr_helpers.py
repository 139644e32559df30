"""Helpers of the inference tests: an interpolating "network" with a declared scale, an oblique
volume whose voxels hold a linear function of their world position."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import nn


class Interp(nn.Module):
    """Up-sampling by interpolation (``align_corners=False``: output ``j`` at input ``(j + 0.5) / s - 0.5``)."""

    def __init__(self, scale, mode: str = "bilinear", in_channels: int = 1) -> None:
        super().__init__()
        self.scale = tuple(scale)
        self.mode = mode
        self.in_channels = in_channels

    def forward(self, x):
        kw = {} if self.mode in ("nearest", "nearest-exact") else {"align_corners": False}
        return F.interpolate(x, scale_factor=[float(s) for s in self.scale], mode=self.mode, **kw)


def oblique_affine() -> np.ndarray:
    """RAS affine with a rotation, unequal spacings and an offset."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]]
    )
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.9, 1.1, 3.0])
    a[:3, 3] = [-40.0, 25.0, 12.5]
    return a


#: World-space linear function the test volumes hold: f(p) = W . p + 7.
W = np.array([0.5, -0.25, 0.75])


def world(affine: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """World positions (…, 3) of voxel indices (…, 3)."""
    return idx @ affine[:3, :3].T + affine[:3, 3]


def ramp_volume(shape=(12, 10, 8), affine=None) -> MetaTensor:
    """(1, *shape) MetaTensor with voxel value f(world position of the voxel centre)."""
    affine = oblique_affine() if affine is None else affine
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    vals = world(affine, idx) @ W + 7.0
    return MetaTensor(torch.from_numpy(vals.astype(np.float32))[None], affine=torch.from_numpy(affine))
