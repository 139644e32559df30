"""Where a super-resolved image is unsure: the spread of the geometric self-ensemble.

:func:`ensemble_members` runs a :class:`~monai_sr.inference.SliceWiseInferer`'s network once per flip
``g`` of the slices' two in-plane axes (identity, vertical, horizontal, both; with ``self_ensemble="full"``
their transposes too), each on ``g(input)`` and mapped back by ``g``, with the inferer's own data
consistency, precision and batching (its self-ensemble switched off: the members *are* the ensemble).
Their mean is what the inferer's ``self_ensemble`` (``flips`` or ``full``) returns;
:func:`ensemble_spread` is their per-voxel standard deviation on the output grid, in the image's units.

What it measures and what it does not: the spread is large where the network's answer depends on the
orientation it is shown, i.e. where it invents rather than reads (edges of fine structures, texture
beyond the measured band). With data consistency on, every member carries the input's measured k-space
band, so the spread is only the unmeasured part. It is not a calibrated error bar; how well it ranks the
real error on held-out scans is measured in ``benchmarks/uncertainty.py`` (its table is in
``bundles/mri_sr_unet/docs/README.md``).

:func:`ensemble_mean_and_spread` is what the API (``monai_sr.enhance(..., uncertainty=True)``) and
``monai-sr enhance --uncertainty`` (:func:`monai_sr.pipeline.enhance`) both run: the members one at a
time, with a running mean and variance (Welford), so memory is two output volumes plus one member.
:func:`uncertainty_path` names where the map goes beside an output; :func:`check_ensemble_inferer` refuses
a bundle whose inferer has no flip ensemble to spread over (through-plane, the denoiser's plane mean).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from monai.data import MetaTensor
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.base import SelfEnsemble, network_scale
from monai_sr.inference.slicewise import SliceWiseInferer

__all__ = [
    "ensemble_members", "iter_members", "ensemble_spread", "ensemble_mean_and_spread", "check_ensemble_inferer",
    "uncertainty_path", "zero_map_note", "SERIES_DESCRIPTION", "SUFFIX",
]

#: SeriesDescription of the derived DICOM series that holds the map.
SERIES_DESCRIPTION = "SR uncertainty (ensemble spread)"
#: What is appended to an output's name for the map beside it.
SUFFIX = "_uncertainty"

#: The in-plane flips of a channel-first volume (1, X, Y, Z): spatial axes 1 and 2 (X and Y).
FLIPS = ((), (1,), (2,), (1, 2))


def check_ensemble_inferer(inferer: object, bundle: str | None = None) -> SliceWiseInferer:
    """``inferer`` when the spread can be made with it (a plain :class:`SliceWiseInferer` along axis 2,
    no context slices); otherwise :class:`~monai_sr.errors.ModelError` naming the bundle and its inferer."""
    if isinstance(inferer, SliceWiseInferer) and inferer.axis == 2 and not inferer.context:
        return inferer
    who = f"bundle {bundle} infers" if bundle else "this inferer infers"
    raise ModelError(
        f"the uncertainty map is the spread of the in-plane flip ensemble of a slice-wise network; {who} with "
        f"{type(inferer).__name__}, which has no such ensemble (through-plane and denoising bundles such as "
        "mri_sr_selfsupervised and mri_denoise_dncnn are not supported); use mri_sr_unet or leave the map out")


def members_of(inferer: SliceWiseInferer, network: nn.Module) -> list[tuple[tuple[int, ...], bool]]:
    """The ensemble's transforms as ``(flipped dims of (C, X, Y, Z), transposed)``: the 4 flips of the
    slices' in-plane axes, and their transposes too when the inferer's ``self_ensemble`` is ``full`` and
    the network's in-plane scale is square (as :func:`~monai_sr.inference.base.self_ensemble_forward`)."""
    scale = network_scale(network)
    square = len(scale) == 2 and scale[0] == scale[1]
    transposes = (False, True) if inferer.self_ensemble == SelfEnsemble.FULL and square else (False,)
    return [(dims, t) for t in transposes for dims in FLIPS]


def iter_members(image: MetaTensor, network: nn.Module, inferer: SliceWiseInferer) -> Iterator[MetaTensor]:
    """The flipped(-and-transposed)-and-back results of ``network`` on ``image`` ``(1, X, Y, Z)`` (slices
    along axis 2, the inferer's axis; :func:`members_of`), one at a time, each a MetaTensor on the output
    grid. A transposed member runs on the slices with X and Y swapped under the same affine (the scale is
    square, so the output grid's affine is the same) and is swapped back."""
    check_ensemble_inferer(inferer)
    single = copy.copy(inferer)
    single.self_ensemble = SelfEnsemble.NONE
    meta = {k: v for k, v in image.meta.items() if k not in ("affine", "original_affine")}
    for dims, transpose in members_of(inferer, network):
        g = torch.flip(image.as_tensor(), dims) if dims else image.as_tensor()
        g = g.transpose(1, 2).contiguous() if transpose else g
        out = single(MetaTensor(g, affine=image.affine, meta=dict(meta)), network)  # MetaTensor adds "affine" to it
        y = out.as_tensor().transpose(1, 2) if transpose else out.as_tensor()
        yield MetaTensor(torch.flip(y, dims) if dims else y.contiguous(), meta=out.meta)


def ensemble_members(image: MetaTensor, network: nn.Module, inferer: SliceWiseInferer) -> list[MetaTensor]:
    """All of :func:`iter_members` as a list (four output volumes in memory)."""
    return list(iter_members(image, network, inferer))


def ensemble_spread(members: list[MetaTensor]) -> MetaTensor:
    """Per-voxel standard deviation (population, ``N`` in the denominator) of the ``members``."""
    stack = torch.stack([m.as_tensor() for m in members])
    return MetaTensor(stack.std(dim=0, unbiased=False), meta=members[0].meta)


def ensemble_mean_and_spread(image: MetaTensor, network: nn.Module, inferer: SliceWiseInferer) -> tuple[MetaTensor, MetaTensor]:
    """``(mean, spread)`` of :func:`iter_members`: the result the inferer's self-ensemble gives and its
    per-voxel population standard deviation, both float32 MetaTensors on the output grid (meta of the
    first member, RAS affine), in the units of ``image``. Running sums in float64: memory is the two
    results, one member and the float64 accumulators' share of one volume each."""
    mean = m2 = None
    meta = None
    for n, member in enumerate(iter_members(image, network, inferer), start=1):
        x = member.as_tensor().double()
        if mean is None:
            mean, m2, meta = x.clone(), torch.zeros_like(x), member.meta
            continue
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
    spread = (m2 / n).clamp_min_(0).sqrt_()
    return MetaTensor(mean.float(), meta=meta), MetaTensor(spread.float(), meta=dict(meta))


def uncertainty_path(output: str | os.PathLike) -> Path:
    """Where the map of ``output`` goes, beside it: ``sr.nii.gz`` -> ``sr_uncertainty.nii.gz``, ``sr.nii`` ->
    ``sr_uncertainty.nii``, a DICOM series folder ``sr/`` -> ``sr_uncertainty/``."""
    output = Path(output)
    name = output.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return output.with_name(name[: -len(ext)] + SUFFIX + name[-len(ext):])
    return output.with_name(name + SUFFIX)


def zero_map_note(spread_peak: float, result_peak: float) -> str | None:
    """A note for a map that is zero everywhere (its peak at most 1e-5 of the result's, float rounding),
    else None: every member agreed, which a flip-equivariant network does whatever its error (e.g. the
    zero-filled interpolation a guarded fit may fall back to), so such a map says nothing about where
    the result is wrong."""
    if spread_peak > 1e-5 * abs(result_peak):
        return None
    return ("the uncertainty map is zero everywhere: the ensemble's members gave the same result, as a flip-equivariant "
            "network (e.g. the zero-filled interpolation a guarded fit fell back to) always does; it says nothing "
            "about the error here")
