"""Intensity normalisation that records what it did and can be inverted exactly.

The network sees intensities divided by a robust maximum of the volume (a high percentile of the
voxels), so a T1 from any scanner lands near ``[0, 1]``; the result is multiplied back so the output
keeps the input's units. :class:`RobustScale` keeps the factor on the object; :class:`RobustNormalize`
(and its dict twin :class:`RobustNormalized`) records it in the MetaTensor's meta and is a MONAI
``InvertibleTransform``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

__all__ = ["robust_max", "RobustScale", "RobustNormalize", "RobustNormalized"]


def robust_max(x: np.ndarray | torch.Tensor, percentile: float = 99.5) -> float:
    """The ``percentile`` of the voxel values of ``x``; falls back to the max (or 1.0) for flat images."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float32, copy=False).ravel()
    if a.size > 2_000_000:  # a strided sample is enough for a percentile and keeps memory flat
        a = a[:: a.size // 2_000_000]
    v = float(np.percentile(a, percentile))
    if v <= 0:
        v = float(np.abs(a).max())
    return v if v > 0 else 1.0


class RobustScale:
    """Divide by :func:`robust_max` and remember the factor; :meth:`inverse` multiplies it back.

    Examples::

        norm = RobustScale()
        y = norm(x)            # x / norm.scale
        x_back = norm.inverse(y)
    """

    def __init__(self, percentile: float = 99.5) -> None:
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile
        self.scale: float | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = robust_max(x, self.percentile)
        return x / self.scale

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            raise RuntimeError("RobustScale.inverse called before the forward transform")
        return y * self.scale


def _percentile(a: np.ndarray, q: float) -> float:
    a = a.astype(np.float32, copy=False).ravel()
    if a.size > 2_000_000:  # as robust_max: a strided sample is enough for a percentile
        a = a[:: a.size // 2_000_000]
    return float(np.percentile(a, q))


class RobustNormalize(InvertibleTransform):
    """``y = (x - offset) / scale`` with robust statistics, recorded in meta and exactly invertible.

    ``lower`` None (the default): ``offset = 0`` and ``scale =`` :func:`robust_max` ``(x, upper)`` (what
    :class:`RobustScale`, the inference pipeline and the training pairs do: zero stays zero, which suits
    magnitude MR images). With ``lower``: ``offset`` is the ``lower`` percentile and ``scale`` the distance
    to the ``upper`` one (1 when that is not positive).

    A MetaTensor comes back with ``meta["intensity_normalisation"] = {"offset", "scale", "lower", "upper"}``
    and the operation on its ``applied_operations`` (MONAI ``InvertibleTransform``). :meth:`inverse`
    undoes it from the ``applied_operations`` entry or, when those were lost (e.g. a network output that
    only carries the input's meta dict), from the meta record; it also takes a plain tensor with an
    explicit ``record``. The inverse multiplies back in float64 before casting: exact to float precision.

    Examples::

        norm = RobustNormalize()
        y = norm(img)                 # y.meta["intensity_normalisation"]["scale"]
        x = norm.inverse(y)           # img again, meta record removed
    """

    record_key = "intensity_normalisation"

    def __init__(self, upper: float = 99.5, *, lower: float | None = None) -> None:
        if not (np.isfinite(upper) and 0 < upper <= 100):
            raise ValueError(f"upper percentile must be in (0, 100], got {upper!r}")
        if lower is not None and not (np.isfinite(lower) and 0 <= lower < upper):
            raise ValueError(f"lower percentile must be in [0, upper={upper}), got {lower!r}")
        self.upper, self.lower = float(upper), None if lower is None else float(lower)

    def statistics(self, x: np.ndarray | torch.Tensor) -> tuple[float, float]:
        """``(offset, scale)`` for ``x``."""
        if self.lower is None:
            return 0.0, robust_max(x, self.upper)
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        lo, hi = _percentile(a, self.lower), _percentile(a, self.upper)
        return lo, (hi - lo) if hi > lo else 1.0

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            raise ValueError(f"{type(self).__name__} takes a torch tensor or MetaTensor, got {type(img).__name__}")
        offset, scale = self.statistics(img)
        record = {"offset": offset, "scale": scale, "lower": self.lower, "upper": self.upper}
        data = img.as_tensor() if isinstance(img, MetaTensor) else img
        dtype = data.dtype if data.is_floating_point() else torch.float32
        out = ((data.to(torch.float64) - offset) / scale).to(dtype)
        if not isinstance(img, MetaTensor):
            return out
        meta = dict(img.meta)
        meta[self.record_key] = record
        out = MetaTensor(out, meta=meta, applied_operations=list(img.applied_operations))
        self.push_transform(out, extra_info=record)
        return out

    def inverse(self, data: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """Undo the normalisation of ``data`` (see the class docstring for where the record comes from)."""
        if record is None and isinstance(data, MetaTensor):
            ops = data.applied_operations
            if ops and ops[-1].get(TraceKeys.CLASS_NAME) == type(self).__name__:
                record = self.pop_transform(data, check=False)[TraceKeys.EXTRA_INFO]
            else:
                record = data.meta.get(self.record_key)
        if record is None:
            raise ValueError(
                f"no {self.record_key!r} record: the tensor was not normalised by {type(self).__name__} "
                "(pass record= for a plain tensor)"
            )
        raw = data.as_tensor() if isinstance(data, MetaTensor) else data
        out = (raw.to(torch.float64) * float(record["scale"]) + float(record["offset"])).to(raw.dtype)
        if not isinstance(data, MetaTensor):
            return out
        meta = {k: v for k, v in data.meta.items() if k != self.record_key}
        return MetaTensor(out, meta=meta, applied_operations=list(data.applied_operations))


class RobustNormalized(MapTransform, InvertibleTransform):
    """Dictionary twin of :class:`RobustNormalize` (same arguments after ``keys``); ``inverse`` undoes each key."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = RobustNormalize(*args, **kwargs)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d
