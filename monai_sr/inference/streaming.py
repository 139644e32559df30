"""Streaming output: finished slices go to the file as the inferer makes them.

The writers that take them slice by slice live with the other file code:
:class:`monai_sr.io.nifti.NiftiSliceWriter` and :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter`.
:func:`stream_planes` runs an inferer's stream through a per-plane post-processing (e.g. the inverse of
the intensity normalisation). :class:`WholeVolumeInferer` wraps a streaming inferer so that it does not
stream (the whole result first): the path a plain MONAI ``Inferer`` takes through
:func:`monai_sr.pipeline.enhance`, kept for comparisons (output equality, peak memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from monai.inferers import Inferer
from torch import nn

from monai_sr.io.atomic import pause_point

__all__ = ["stream_planes", "WholeVolumeInferer"]


def stream_planes(
    planes: Iterator[tuple[int, np.ndarray]], post: Callable[[np.ndarray], np.ndarray] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, post(plane))`` for every ``(k, plane)`` of ``planes`` (an inferer's :meth:`stream`)."""
    for k, plane in planes:
        pause_point("inference")  # the tests' kill -9 moment, a plane inferred (no effect without $MONAI_SR_TEST_PAUSE)
        yield k, (post(plane) if post is not None else plane)


class WholeVolumeInferer(Inferer):
    """``inner`` without its stream: calling it returns the whole result, as a plain MONAI ``Inferer`` does.

    ``inner`` is a :class:`~monai_sr.inference.ScaleAwareInferer`; :meth:`volume_scale` and ``__call__``
    are its own. Not being a ``ScaleAwareInferer`` itself, it makes :func:`monai_sr.pipeline.enhance`
    hold the whole float result before writing it (the non-streaming path).
    """

    def __init__(self, inner: Inferer) -> None:
        self.inner = inner

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        return self.inner.volume_scale(network)

    def __call__(self, inputs, network: nn.Module, progress: Callable[[int, int], None] | None = None):
        return self.inner(inputs, network, progress=progress)
