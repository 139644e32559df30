"""Streaming output: finished slices go to the file as the inferer makes them.

The writers that take them slice by slice live with the other file code:
:class:`monai_sr.io.nifti.NiftiSliceWriter` and :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter`.
:func:`stream_planes` runs an inferer's stream through a per-plane post-processing (e.g. the inverse of
the intensity normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["stream_planes"]


def stream_planes(
    planes: Iterator[tuple[int, np.ndarray]], post: Callable[[np.ndarray], np.ndarray] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(k, post(plane))`` for every ``(k, plane)`` of ``planes`` (an inferer's :meth:`stream`)."""
    for k, plane in planes:
        yield k, (post(plane) if post is not None else plane)
