"""Super-resolution geometry on MetaTensors: the field-of-view rule applied to a network's output.

This is the only place that turns "the network made the grid ``scale`` times finer" into an output
affine; it calls :func:`monai_sr.geometry.scaled_affine` and nothing else recomputes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys

from monai_sr import geometry

__all__ = ["apply_sr_geometry"]


def apply_sr_geometry(output: torch.Tensor, source: MetaTensor, scale: Sequence[int]) -> MetaTensor:
    """Wrap ``output`` (channel-first, spatial shape = source's times ``scale``) with the source's meta
    and the field-of-view-preserving affine.

    Args:
        output: tensor ``(C, *spatial)``.
        source: the MetaTensor the output was computed from (channel-first, RAS affine).
        scale: integer factor per spatial axis.

    Returns:
        MetaTensor with ``affine = scaled_affine(source.affine, scale)``, ``spatial_shape`` updated, and
        the rest of the source's meta (e.g. the DICOM headers) carried over.
    """
    scale = tuple(int(s) for s in scale)
    in_shape = tuple(source.shape[1:])
    expected = tuple(n * s for n, s in zip(in_shape, scale))
    if tuple(output.shape[1:]) != expected:
        raise ValueError(f"output spatial shape {tuple(output.shape[1:])} is not input {in_shape} times scale {scale}")
    affine = geometry.scaled_affine(np.asarray(source.affine, dtype=np.float64), scale)
    meta = dict(source.meta)
    meta[MetaKeys.AFFINE] = affine
    meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(expected)
    data = output.as_tensor() if isinstance(output, MetaTensor) else output
    return MetaTensor(data, meta=meta)
