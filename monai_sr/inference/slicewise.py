"""Slice-wise super-resolution with a 2D network along one axis of a 3D volume."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_sr.errors import ModelError
from monai_sr.transforms.spacing import apply_sr_geometry

__all__ = ["SliceWiseInferer", "network_scale"]


def network_scale(network: torch.nn.Module) -> tuple[int, ...]:
    """The integer scale a network declares (its ``scale`` attribute); ModelError if it declares none."""
    scale = getattr(network, "scale", None)
    if scale is None:
        raise ModelError(f"network {type(network).__name__} declares no 'scale' attribute")
    return tuple(int(s) for s in (scale if isinstance(scale, Sequence) else (scale,)))


class SliceWiseInferer(Inferer):
    """Run a 2D SR network on every slice of a 3D volume along ``axis`` and fix the geometry.

    Takes a channel-first MetaTensor ``(1, X, Y, Z)`` with a RAS affine; returns a MetaTensor whose
    in-plane axes are the network's scale times larger and whose affine follows the field-of-view rule
    (via :func:`monai_sr.transforms.spacing.apply_sr_geometry`). Slices go through in batches of
    ``batch_size`` under ``torch.inference_mode``; the input is never copied as a whole.

    Examples::

        inferer = SliceWiseInferer(axis=2, batch_size=8)
        hr = inferer(volume, network)   # (1, 90, 108, 60) -> (1, 180, 216, 60)
    """

    def __init__(self, axis: int = 2, batch_size: int = 8) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis), got {axis}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.axis = axis
        self.batch_size = batch_size

    def volume_scale(self, network: torch.nn.Module) -> tuple[int, int, int]:
        """The 3D scale of the whole volume: the 2D net's scale in-plane, 1 along ``axis``."""
        s2 = network_scale(network)
        if len(s2) != 2:
            raise ModelError(f"slice-wise inference needs a 2D network, got scale {s2}")
        s = list(s2)
        s.insert(self.axis, 1)
        return tuple(s)  # type: ignore[return-value]

    def __call__(  # type: ignore[override]
        self,
        inputs: MetaTensor,
        network: torch.nn.Module,
        progress: Callable[[int, int], None] | None = None,
    ) -> MetaTensor:
        if inputs.ndim != 4 or inputs.shape[0] != 1:
            raise ValueError(f"expected a channel-first 3D volume (1, X, Y, Z), got shape {tuple(inputs.shape)}")
        if inputs.shape[1 + self.axis] == 0:
            raise ValueError("the volume has no slices along the inference axis")
        scale = self.volume_scale(network)
        device = next(network.parameters()).device
        data = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        planes = torch.movedim(data[0], self.axis, 0)  # (n_slices, a, b), a view
        n = planes.shape[0]
        out = torch.empty(0)
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                batch = planes[start : start + self.batch_size].unsqueeze(1).to(device, torch.float32)
                pred = network(batch)[:, 0].to("cpu", torch.float32)
                if start == 0:
                    out = torch.empty((n, *pred.shape[1:]), dtype=torch.float32)
                out[start : start + pred.shape[0]] = pred
                if progress:
                    progress(min(start + self.batch_size, n), n)
        result = torch.movedim(out, 0, self.axis).unsqueeze(0)
        return apply_sr_geometry(result, inputs, scale)
