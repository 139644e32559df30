"""Sliding-window super-resolution: MONAI's ``sliding_window_inference`` with a zooming network.

MONAI's sliding window accepts a predictor whose output is larger than its ROI by a fixed factor (it
stitches the zoomed windows on a zoomed grid); the geometry of the result is then made right by
:func:`monai_sr.transforms.spacing.apply_sr_geometry`, as for every monai_sr inferer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.base import STREAM_AXIS, ScaleAwareInferer, network_scale

__all__ = ["SlidingWindowSRInferer"]


class SlidingWindowSRInferer(ScaleAwareInferer):
    """Windows of ``roi_size`` over the volume (3D network) or over each slice along axis 2 (2D network).

    * 3D ROI: the network has three scale factors; windows overlap by ``overlap`` and are blended with
      ``mode`` (MONAI ``BlendMode``). Streaming in blocks of ``slab`` slices along axis 2 with ``halo``
      extra input slices on each side (``halo=None``, the default: the whole volume is one block, the same
      windows as a single MONAI call). With a halo the windows are placed per block, so the result near a
      block border can differ slightly from the whole-volume run (the blend weights differ).
    * 2D ROI: a 2D network; slices along axis 2 go through in batches of ``batch_size`` slices, each batch
      one ``sliding_window_inference`` call over ``(batch, C, X, Y)``; streaming is exact.

    Args:
        roi_size: window size (2 or 3 values, or an int for all axes of the network).
        overlap: fraction of a window shared with its neighbour.
        mode: ``"constant"`` or ``"gaussian"`` blending.
        padding_mode: how a volume smaller than a window is padded.
        halo, slab: blocks of ``slab`` slices along axis 2 (see above; a 2D ROI needs no halo).
        batch_size: windows per forward pass (MONAI's ``sw_batch_size``); ``"auto"``: the most that fit
            ``memory_budget``.
        memory_budget, max_batch, channels_last, threads, amp: see
            :class:`~monai_sr.inference.base.ScaleAwareInferer`.

    Examples::

        inferer = SlidingWindowSRInferer((64, 64, 32), overlap=0.25)
        hr = inferer(volume, net3d)          # net3d.scale == (2, 2, 1)
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        *,
        overlap: float = 0.25,
        mode: str = "gaussian",
        padding_mode: str = "replicate",
        halo: int | None = None,
        slab: int = 32,
        batch_size: int | str = 4,
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
        roi = (roi_size,) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        if len(roi) not in (1, 2, 3) or min(roi) < 1:
            raise ValueError(f"roi_size must be positive, one value or one per axis (2 or 3), got {roi_size!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self._set_blocks(halo, slab)
        self.roi_size = roi
        self.overlap = float(overlap)
        self.mode = mode
        self.padding_mode = padding_mode

    def _roi(self, network: nn.Module) -> tuple[int, ...]:
        dims = len(network_scale(network))
        if dims not in (2, 3):
            raise ModelError(f"sliding-window SR needs a 2D or 3D network, got scale {network_scale(network)}")
        roi = self.roi_size * dims if len(self.roi_size) == 1 else self.roi_size
        if len(roi) != dims:
            raise ValueError(f"roi_size {self.roi_size} has {len(roi)} values for a {dims}D network")
        return roi

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        s = network_scale(network)
        self._roi(network)
        return (*s, 1) if len(s) == 2 else s  # type: ignore[return-value]

    def _is_2d(self, network: nn.Module) -> bool:
        return len(network_scale(network)) == 2

    def _halo(self, network: nn.Module) -> int | None:
        return 0 if self._is_2d(network) else self.halo

    def _block_slices(self, n_slices: int, batch: int) -> int:
        return self.slab

    def _sample_shape(self, block_shape, network):
        return (int(getattr(network, "in_channels", 1)), *self._roi(network))

    def _infer_block(self, block: torch.Tensor, network: nn.Module, batch: int) -> torch.Tensor:
        roi = self._roi(network)
        if self._is_2d(network):
            x = torch.movedim(block, STREAM_AXIS, 0).unsqueeze(1)  # (n, 1, X, Y)
        else:
            x = block[None, None]
        out = sliding_window_inference(
            x, roi, batch, lambda w: self._forward(network, w), overlap=self.overlap, mode=self.mode,
            padding_mode=self.padding_mode,
        )
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        if self._is_2d(network):
            return torch.movedim(out[:, 0], 0, STREAM_AXIS)
        return out[0, 0]
