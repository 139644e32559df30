"""Slice-wise along several axes, averaged: a 3D-consistent result from a 2D denoiser.

A 2D network trained on slices along all three axes makes three estimates of the same volume when run
along axes 0, 1 and 2; their errors are partly independent, so the voxel-wise mean has less residual
noise than any one of them (the mri_denoise_dncnn bundle measured +1.49 dB over axial slices alone on
Colin27 at Rician 5%, see its docs/README.md). Scale 1 only (one grid to average on). Not streaming:
the average needs every axis' estimate of each output slice, so the whole input and one output volume
(plus the estimate being added) are held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.slicewise import SliceWiseInferer

__all__ = ["PlaneMeanInferer"]


class PlaneMeanInferer(Inferer):
    """Run :class:`~monai_sr.inference.SliceWiseInferer` along each of ``axes`` and average the results.

    Takes a channel-first volume ``(1, X, Y, Z)`` MetaTensor and a 2D network of ``scale`` ``(1, 1)``
    (a denoiser); returns the same shape and geometry (the inputs' affine). ``kwargs`` go to each
    ``SliceWiseInferer`` (``batch_size``, ``threads``, ``amp`` ...). Holds one output volume per axis
    while it runs (no streaming).

    Examples::

        den = PlaneMeanInferer(axes=(0, 1, 2))(volume, dncnn)   # (1, 181, 217, 181) -> same
    """

    def __init__(self, axes: Sequence[int] = (0, 1, 2), **kwargs: Any) -> None:
        super().__init__()
        axes = tuple(int(a) for a in axes)
        if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"axes must be distinct spatial axes among 0, 1, 2, got {axes}")
        self.axes = axes
        self.inferers = [SliceWiseInferer(axis=a, **kwargs) for a in axes]

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        """``(1, 1, 1)``; ModelError for a network that changes the grid (averaging needs one grid)."""
        scales = {inf.volume_scale(network) for inf in self.inferers}
        if scales != {(1, 1, 1)}:
            raise ModelError(f"{type(self).__name__} averages denoised volumes: the network must keep the grid (scale 1), got {scales}")
        return (1, 1, 1)

    def __call__(  # type: ignore[override]
        self, inputs: MetaTensor, network: nn.Module, progress: Callable[[int, int], None] | None = None
    ) -> MetaTensor:
        self.volume_scale(network)
        total: MetaTensor | None = None
        n = len(self.inferers)
        for i, inferer in enumerate(self.inferers):
            step = None
            if progress is not None:
                step = lambda done, count, i=i: progress(i * count + done, n * count)  # noqa: E731
            out = inferer(inputs, network, progress=step)
            total = out if total is None else total + out.as_tensor()
        assert total is not None
        return total / n
