"""Through-plane super-resolution with a 2D network on the two orthogonal planes that hold the
low-resolution axis, fused by their mean.

A volume with thick slices along ``lr_axis`` is cut into planes along each of the two other axes; every
such plane holds the low-resolution axis and one fine in-plane axis. A 2D network that upsamples one of
its axes (``scale`` ``(1, s)`` or ``(s, 1)``) makes each plane ``s`` times finer along the low-resolution
axis; the two stacks are two estimates of the same fine volume and the output is their voxel-wise mean
(the fusion used by SMORE-style methods; with two estimates the mean and the median are the same). The
affine comes from :func:`monai_sr.transforms.spacing.apply_sr_geometry` with scale ``s`` on ``lr_axis``.
"""

from __future__ import annotations

import torch
from monai.utils import StrEnum, look_up_option
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.base import ScaleAwareInferer, network_scale

__all__ = ["Fusion", "OrthogonalPlanesInferer"]


class Fusion(StrEnum):
    """How the two plane stacks are combined: ``mean`` (voxel-wise average)."""

    MEAN = "mean"


class OrthogonalPlanesInferer(ScaleAwareInferer):
    """Through-plane SR along ``lr_axis`` from a 2D network applied on the two orthogonal plane stacks.

    Streaming runs in blocks of ``slab`` input slices along axis 2 with ``halo`` extra slices on each
    side: the result equals the whole-volume run when ``halo`` covers the network's receptive field along
    axis 2 (exactly for interpolation); ``halo=None`` (default) computes the volume as one block.

    Args:
        lr_axis: the spatial axis with the coarse spacing (2: across the slices of a DICOM series).
        fusion: :class:`Fusion` (``"mean"``).
        halo, slab: blocks along axis 2 (see above).
        batch_size, memory_budget, max_batch, channels_last, threads, amp: see
            :class:`~monai_sr.inference.base.ScaleAwareInferer`.

    Examples::

        net = SRUNet(2, scale=(1, 4))                  # upsamples the second axis of a plane
        hr = OrthogonalPlanesInferer(lr_axis=2)(volume, net)   # (1, 256, 256, 40) -> (1, 256, 256, 160)
    """

    def __init__(
        self,
        lr_axis: int = 2,
        *,
        fusion: str = "mean",
        halo: int | None = None,
        slab: int = 16,
        batch_size: int | str = 8,
        memory_budget: int | str | None = None,
        max_batch: int | None = None,
        channels_last: bool | str = "auto",
        threads: int | None = None,
        amp: str | None = None,
    ) -> None:
        super().__init__(
            batch_size=batch_size, memory_budget=memory_budget, max_batch=max_batch,
            channels_last=channels_last, threads=threads, amp=amp,
        )
        if lr_axis not in (0, 1, 2):
            raise ValueError(f"lr_axis must be 0, 1 or 2 (a spatial axis), got {lr_axis}")
        self._set_blocks(halo, slab)
        self.lr_axis = lr_axis
        self.fusion = look_up_option(fusion, Fusion)

    def _factor(self, network: nn.Module) -> tuple[int, int]:
        """(upsampling factor, which plane axis the network upsamples: 0 or 1)."""
        s = network_scale(network)
        if len(s) != 2 or min(s) != 1 or max(s) < 1 or (s[0] > 1 and s[1] > 1):
            raise ModelError(
                f"through-plane SR on orthogonal planes needs a 2D network that upsamples one axis "
                f"(scale (1, s) or (s, 1)), got scale {s}"
            )
        return (s[1], 1) if s[0] == 1 else (s[0], 0)

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        factor, _ = self._factor(network)
        out = [1, 1, 1]
        out[self.lr_axis] = factor
        return tuple(out)  # type: ignore[return-value]

    def _halo(self, network: nn.Module) -> int | None:
        return self.halo

    def _block_slices(self, n_slices: int, batch: int) -> int:
        return self.slab

    def _plane_axes(self, a: int, up_axis: int) -> tuple[int, int]:
        """The two spatial axes of the planes cut along ``a``, in the order the network sees them."""
        p, q = (i for i in range(3) if i != a)
        lr_first = p == self.lr_axis
        return (p, q) if lr_first == (up_axis == 0) else (q, p)

    def _sample_shape(self, block_shape, network):
        up_axis = self._factor(network)[1]
        shapes = []
        for a in (i for i in range(3) if i != self.lr_axis):
            p, q = self._plane_axes(a, up_axis)
            shapes.append((1, block_shape[p], block_shape[q]))
        return max(shapes, key=lambda s: s[1] * s[2])

    def _infer_block(self, block: torch.Tensor, network: nn.Module, batch: int) -> torch.Tensor:
        factor, up_axis = self._factor(network)
        out_shape = list(block.shape)
        out_shape[self.lr_axis] *= factor
        out = torch.zeros(out_shape, dtype=torch.float32)
        for a in (i for i in range(3) if i != self.lr_axis):
            p, q = self._plane_axes(a, up_axis)
            planes = block.permute(a, p, q)  # (n, p, q): a view
            target = out.permute(a, p, q)  # the same layout on the fine grid
            for start in range(0, planes.shape[0], batch):
                pred = self._forward(network, planes[start : start + batch].unsqueeze(1))
                if pred.ndim != 4 or tuple(pred.shape[2:]) != tuple(target.shape[1:]):
                    raise ModelError(
                        f"{type(network).__name__} returned shape {tuple(pred.shape)} for planes "
                        f"{tuple(planes[start : start + batch].shape)}; expected (N, 1, {target.shape[1]}, {target.shape[2]})"
                    )
                target[start : start + pred.shape[0]] += pred[:, 0]
        return out.mul_(0.5)
