"""Training losses.

Zero-reference losses of Zero-DCE (C. Guo et al., "Zero-Reference Deep Curve Estimation for Low-Light
Image Enhancement", CVPR 2020, https://arxiv.org/abs/2001.06826) for 2D and 3D, ``(N, C, *spatial)``
tensors; used with :class:`monai_sr.networks.ZeroDCE`. :class:`AcquiredBandLoss`: L1 behind the data-consistency
projection, for in-plane SR networks that run with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from monai_sr.inference.consistency import project_acquired_band

__all__ = [
    "spatial_consistency_loss",
    "exposure_control_loss",
    "colour_constancy_loss",
    "illumination_smoothness_loss",
    "ZeroDCELoss",
    "AcquiredBandLoss",
]


def _spatial_dims(x: torch.Tensor) -> int:
    dims = x.dim() - 2
    if dims not in (2, 3):
        raise ValueError(f"expected a 4D or 5D tensor (N, C, *spatial), got shape {list(x.shape)}")
    return dims


def _avg_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    if min(x.shape[2:]) < size:
        raise ValueError(f"every spatial size must be >= the pooling size {size}, got shape {list(x.shape)}")
    return pool(x, size)


def spatial_consistency_loss(enhanced: torch.Tensor, original: torch.Tensor, *, region: int = 4) -> torch.Tensor:
    """L_spa: neighbouring regions keep their contrast.

    Both images are averaged over channels and over ``region``-sized blocks; for every block ``i`` and
    every neighbour ``j`` (4 in 2D, 6 in 3D, inside the image)::

        L_spa = 1/K sum_i sum_j (|Y_i - Y_j| - |I_i - I_j|)^2

    with ``K`` the number of blocks, averaged over the batch. (The paper's formula; its released code
    uses signed differences and zero padding at the border.)
    """
    if enhanced.shape != original.shape:
        raise ValueError(f"enhanced shape {list(enhanced.shape)} differs from original shape {list(original.shape)}")
    dims = _spatial_dims(enhanced)
    y = _avg_pool(enhanced.mean(dim=1, keepdim=True), region)
    i = _avg_pool(original.mean(dim=1, keepdim=True), region)
    k = 1
    for n in y.shape[2:]:
        k *= n
    total = enhanced.new_zeros(())
    for axis in range(2, 2 + dims):
        dy = torch.diff(y, dim=axis).abs()
        di = torch.diff(i, dim=axis).abs()
        total = total + 2.0 * ((dy - di) ** 2).sum() / (k * enhanced.shape[0])  # each pair is two (i, j) terms
    return total


def exposure_control_loss(enhanced: torch.Tensor, *, level: float = 0.6, patch: int = 16) -> torch.Tensor:
    """L_exp: the mean of every non-overlapping ``patch``-sized block (channel mean) stays near ``level``::

        L_exp = 1/M sum_k |Y_k - level|

    ``level`` 0.6 is the paper's well-exposedness for RGB in [0, 1]; for MRI normalised to [0, 1] pick it
    from the target intensity of tissue (background-heavy patches pull towards it too).
    """
    _spatial_dims(enhanced)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return (_avg_pool(enhanced.mean(dim=1, keepdim=True), patch) - level).abs().mean()


def colour_constancy_loss(enhanced: torch.Tensor) -> torch.Tensor:
    """L_col: channel means agree, ``sum_{p<q} (J_p - J_q)^2`` averaged over the batch (Gray-World).

    For one-channel MRI there is no pair of channels, so the term is **identically zero** (a zero that
    keeps the autograd graph): grey-world colour balance has no meaning for a single contrast. With
    several channels (e.g. RGB, or stacked contrasts) it is the paper's pairwise form over all channels;
    for stacked MR contrasts, whose means legitimately differ, leave its weight at 0.
    """
    _spatial_dims(enhanced)
    means = enhanced.flatten(2).mean(dim=2)  # (N, C)
    diff = means.unsqueeze(2) - means.unsqueeze(1)  # (N, C, C), each pair twice
    return (diff**2).sum(dim=(1, 2)).mean() / 2.0


def illumination_smoothness_loss(curves: torch.Tensor) -> torch.Tensor:
    """L_tvA: the curve-parameter maps vary smoothly: ``2 * sum_axes mean((A[.., i+1, ..] - A[.., i, ..])^2)``
    over all maps (the authors' released ``L_TV``; the paper writes ``(|grad_x A| + |grad_y A|)^2``)."""
    dims = _spatial_dims(curves)
    total = curves.new_zeros(())
    for axis in range(2, 2 + dims):
        total = total + (torch.diff(curves, dim=axis) ** 2).mean()
    return 2.0 * total


class ZeroDCELoss(nn.Module):
    """The Zero-DCE total loss ``w_spa L_spa + w_exp L_exp + w_col L_col + w_tv L_tvA``.

    Default weights are the authors' released ones (1, 10, 5, 200). For one channel ``L_col`` is zero
    (see :func:`colour_constancy_loss`).

    Examples::

        net, loss_fn = ZeroDCE(2), ZeroDCELoss()
        x = torch.rand(4, 1, 64, 64)
        a = net.curves(x)
        loss = loss_fn(net.apply_curves(x, a), x, a)
    """

    def __init__(
        self,
        *,
        spa_weight: float = 1.0,
        exp_weight: float = 10.0,
        col_weight: float = 5.0,
        tv_weight: float = 200.0,
        exposure_level: float = 0.6,
        exposure_patch: int = 16,
        region: int = 4,
    ) -> None:
        super().__init__()
        for name, w in (("spa_weight", spa_weight), ("exp_weight", exp_weight), ("col_weight", col_weight), ("tv_weight", tv_weight)):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w!r}")
        if not 0.0 < exposure_level < 1.0:
            raise ValueError(f"exposure_level must be in (0, 1), got {exposure_level!r}")
        self.weights = (spa_weight, exp_weight, col_weight, tv_weight)
        self.exposure_level = exposure_level
        self.exposure_patch = exposure_patch
        self.region = region

    def forward(self, enhanced: torch.Tensor, original: torch.Tensor, curves: torch.Tensor) -> torch.Tensor:
        w_spa, w_exp, w_col, w_tv = self.weights
        return (
            w_spa * spatial_consistency_loss(enhanced, original, region=self.region)
            + w_exp * exposure_control_loss(enhanced, level=self.exposure_level, patch=self.exposure_patch)
            + w_col * colour_constancy_loss(enhanced)
            + w_tv * illumination_smoothness_loss(curves)
        )


class AcquiredBandLoss(nn.Module):
    """L1 after data consistency: what an in-plane SR network is asked for when its output's measured
    k-space band is replaced by the input's at inference (:func:`monai_sr.inference.consistency.project_acquired_band`).

    ``loss = L1(P(sr, lr), hr) + band_weight * L1(sr, hr)`` with ``P`` the hard projection: the first term
    reaches the network only through the band the input did not measure (errors inside the band are
    undone at inference and cost nothing), the second, small, keeps the unprojected output usable
    (``data_consistency=false``). Takes ``sr`` ``(N, C, s h, s w)``, ``lr`` ``(N, C, h, w)`` and ``hr`` like
    ``sr``, in the same intensity units; returns a scalar.
    """

    def __init__(self, band_weight: float = 0.1) -> None:
        super().__init__()
        if band_weight < 0:
            raise ValueError(f"band_weight must be >= 0, got {band_weight}")
        self.band_weight = float(band_weight)

    def forward(self, sr: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = F.l1_loss(project_acquired_band(sr.float(), lr), hr.float())
        if self.band_weight:
            loss = loss + self.band_weight * F.l1_loss(sr.float(), hr.float())
        return loss
