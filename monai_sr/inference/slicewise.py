"""Slice-wise (2D) and 2.5D super-resolution with a 2D network along one axis of a 3D volume."""

from __future__ import annotations

import torch
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.base import STREAM_AXIS, ScaleAwareInferer, network_scale
from monai_sr.inference.consistency import project_acquired_band

__all__ = ["SliceWiseInferer", "network_scale"]


class SliceWiseInferer(ScaleAwareInferer):
    """Run a 2D SR network on every slice of a 3D volume along ``axis`` and fix the geometry.

    Takes a channel-first MetaTensor ``(1, X, Y, Z)`` with a RAS affine; returns a MetaTensor whose
    in-plane axes are the network's scale times larger and whose affine follows the field-of-view rule
    (via :func:`monai_sr.transforms.spacing.apply_sr_geometry`). Slices go through in batches under
    ``torch.inference_mode``; the input is never copied as a whole.

    **2.5D** (``context = c > 0``): each slice goes in with its ``c`` neighbours on either side as
    channels, ``(2c + 1, a, b)`` in slice order; at the ends of the volume the edge slice is repeated.
    The network returns one channel, or ``2c + 1`` of which the centre one is kept.

    Streaming (:meth:`stream`): with ``axis=2`` (the DICOM slice axis) every batch of slices is finished
    as it comes, so memory is a batch plus the model. With another axis every plane crosses all output
    slices: ``halo=None`` (default) computes the whole volume as one block; an int computes blocks of
    ``slab`` slices along axis 2 with ``halo`` extra input slices on each side (the same as the whole
    run when ``halo`` covers the network's receptive field along the planes).

    **Data consistency** (``data_consistency``: ``True`` or a weight in ``(0, 1]``): each output plane's
    k-space band that the input plane measured is replaced by the input's own
    (:func:`~monai_sr.inference.consistency.project_acquired_band`), for k-space-limited in-plane input;
    the network then contributes only what lies outside the measured band.

    Args:
        axis: the spatial axis across the slices the 2D network sees (0, 1 or 2).
        context: neighbours on each side given as extra channels (0: plain 2D).
        halo, slab: blocks for ``axis != 2`` (see above).
        data_consistency: ``False``, ``True`` (hard) or a soft weight in ``(0, 1]`` (see above).
        batch_size, memory_budget, max_batch, channels_last, threads, amp, self_ensemble: see
            :class:`~monai_sr.inference.base.ScaleAwareInferer`.

    Examples::

        inferer = SliceWiseInferer(axis=2)   # batch_size None: 1 slice per pass on CPU, 8 on a GPU
        hr = inferer(volume, network)   # (1, 90, 108, 60) -> (1, 180, 216, 60)
        for k, plane in SliceWiseInferer(batch_size="auto", memory_budget="1GiB").stream(volume, network):
            writer.write_slice(k, plane)
    """

    def __init__(
        self,
        axis: int = 2,
        batch_size: int | str | None = None,
        *,
        context: int = 0,
        halo: int | None = None,
        slab: int = 16,
        memory_budget: int | str | None = None,
        max_batch: int | None = None,
        channels_last: bool | str = "auto",
        threads: int | None = None,
        amp: str | None = None,
        self_ensemble: bool | str = False,
        data_consistency: bool | float = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size, memory_budget=memory_budget, max_batch=max_batch,
            channels_last=channels_last, threads=threads, amp=amp, self_ensemble=self_ensemble,
        )
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis), got {axis}")
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"context must be a non-negative int, got {context!r}")
        self._set_blocks(halo, slab)
        self.axis = axis
        self.context = context
        if isinstance(data_consistency, bool):
            self.dc_weight = 1.0 if data_consistency else 0.0
        elif isinstance(data_consistency, (int, float)) and 0.0 < float(data_consistency) <= 1.0:
            self.dc_weight = float(data_consistency)
        else:
            raise ValueError(f"data_consistency must be True, False or a weight in (0, 1], got {data_consistency!r}")

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        """The 3D scale of the whole volume: the 2D net's scale in-plane, 1 along ``axis``."""
        s2 = network_scale(network)
        if len(s2) != 2:
            raise ModelError(f"slice-wise inference needs a 2D network, got scale {s2}")
        s = list(s2)
        s.insert(self.axis, 1)
        return tuple(s)  # type: ignore[return-value]

    def _halo(self, network: nn.Module) -> int | None:
        return self.context if self.axis == STREAM_AXIS else self.halo

    def _block_slices(self, n_slices: int, batch: int) -> int:
        return batch if self.axis == STREAM_AXIS else self.slab

    def _sample_shape(self, block_shape, network):
        plane = [n for i, n in enumerate(block_shape) if i != self.axis]
        return (2 * self.context + 1, *plane)

    def _infer_block(self, block: torch.Tensor, network: nn.Module, batch: int) -> torch.Tensor:
        planes = torch.movedim(block, self.axis, 0)  # (n, a, b), a view
        n, c = planes.shape[0], self.context
        out = None
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            if c == 0:
                x = planes[start:stop].unsqueeze(1)
            else:
                idx = (torch.arange(start, stop)[:, None] + torch.arange(-c, c + 1)[None, :]).clamp_(0, n - 1)
                x = planes[idx]  # (b, 2c + 1, a, b): neighbours as channels, edges repeated
            pred = self._forward(network, x)
            if pred.ndim != 4 or pred.shape[1] not in (1, 2 * c + 1):
                raise ModelError(
                    f"{type(network).__name__} returned shape {tuple(pred.shape)} for input {tuple(x.shape)}; "
                    f"expected (N, 1 or {2 * c + 1}, H, W)"
                )
            pred = pred[:, pred.shape[1] // 2]
            if self.dc_weight:
                pred = project_acquired_band(pred, x[:, c], weight=self.dc_weight)
            if out is None:
                out = torch.empty((n, *pred.shape[1:]), dtype=torch.float32)
            out[start:stop] = pred
        return torch.movedim(out, 0, self.axis)
