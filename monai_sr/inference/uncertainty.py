"""Where a super-resolved image is unsure: the spread of the geometric self-ensemble.

:func:`ensemble_members` runs a :class:`~monai_sr.inference.SliceWiseInferer`'s network once per flip
``g`` of the slices' two in-plane axes (identity, vertical, horizontal, both), each on ``g(input)`` and
mapped back by ``g``, with the inferer's own data consistency, precision and batching (its self-ensemble
switched off: the members *are* the ensemble). Their mean is what ``self_ensemble="flips"`` returns;
:func:`ensemble_spread` is their per-voxel standard deviation on the output grid, in the image's units.

What it measures and what it does not: the spread is large where the network's answer depends on the
orientation it is shown, i.e. where it invents rather than reads (edges of fine structures, texture
beyond the measured band). With data consistency on, every member carries the input's measured k-space
band, so the spread is only the unmeasured part. It is not a calibrated error bar; how well it ranks the
real error on held-out scans is measured in ``benchmarks/uncertainty.py`` (its table is in
``bundles/mri_sr_unet/docs/README.md``).
"""

from __future__ import annotations

import copy

import torch
from monai.data import MetaTensor
from torch import nn

from monai_sr.inference.base import SelfEnsemble
from monai_sr.inference.slicewise import SliceWiseInferer

__all__ = ["ensemble_members", "ensemble_spread"]

#: The in-plane flips of a channel-first volume (1, X, Y, Z): spatial axes 1 and 2 (X and Y).
FLIPS = ((), (1,), (2,), (1, 2))


def ensemble_members(image: MetaTensor, network: nn.Module, inferer: SliceWiseInferer) -> list[MetaTensor]:
    """The four flipped-and-back results of ``network`` on ``image`` ``(1, X, Y, Z)`` (slices along
    axis 2, the inferer's axis), each a MetaTensor on the output grid (see the module docstring)."""
    if not isinstance(inferer, SliceWiseInferer) or inferer.axis != 2 or inferer.context:
        raise ValueError("the ensemble spread needs a plain SliceWiseInferer along axis 2")
    single = copy.copy(inferer)
    single.self_ensemble = SelfEnsemble.NONE
    meta = {k: v for k, v in image.meta.items() if k not in ("affine", "original_affine")}
    members = []
    for dims in FLIPS:
        flipped = torch.flip(image.as_tensor(), dims) if dims else image.as_tensor()
        out = single(MetaTensor(flipped, affine=image.affine, meta=meta), network)
        members.append(MetaTensor(torch.flip(out.as_tensor(), dims) if dims else out.as_tensor(), meta=out.meta))
    return members


def ensemble_spread(members: list[MetaTensor]) -> MetaTensor:
    """Per-voxel standard deviation (population, ``N`` in the denominator) of the ``members``."""
    stack = torch.stack([m.as_tensor() for m in members])
    return MetaTensor(stack.std(dim=0, unbiased=False), meta=members[0].meta)
