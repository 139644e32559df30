"""``SuperResolve`` / ``SuperResolved``: a bundle's enhancement as a MONAI transform, inside a pipeline.

The array transform takes a channel-first single-channel MetaTensor ``(1, X, Y, Z)`` with a RAS affine
and returns the enhanced MetaTensor on the field-of-view-rule grid (affine and spatial shape updated,
meta kept) through :func:`monai_sr.api.enhance_image` — the same path as ``monai-sr enhance``: no copy of
its logic here. The bundle is loaded once, at construction. The operation is recorded in the result's
``applied_operations`` (class, original spatial shape, scale, the input affine), so a pipeline's trace
shows where the grid changed; it is not invertible (a super-resolved image has no unique original).

Examples::

    pipeline = Compose([
        LoadImaged("image", ensure_channel_first=True),
        Orientationd("image", axcodes="RAS"),
        SuperResolved("image", bundle="mri_sr_unet", fast=True),
        SaveImaged("image", output_dir="out"),
    ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TraceKeys

__all__ = ["SuperResolve", "SuperResolved"]


class SuperResolve(Transform):
    """Enhance a MetaTensor with ``bundle`` (see the module docstring and :func:`monai_sr.api.load_bundle`
    for ``fast``, ``trust`` and config ``overrides``)."""

    def __init__(self, bundle: str = "mri_sr_unet", *, fast: bool = False, trust: bool = False, **overrides: Any) -> None:
        from monai_sr.api import load_bundle

        self.bundle = load_bundle(bundle, fast=fast, trust=trust, **overrides)

    def __call__(self, img: MetaTensor) -> MetaTensor:
        from monai_sr.api import enhance_image

        out = enhance_image(img, self.bundle)
        ops = list(getattr(img, "applied_operations", []))
        scale = [round(float(b) / float(a)) for a, b in zip(img.shape[1:], out.shape[1:])]
        ops.append({
            TraceKeys.CLASS_NAME: type(self).__name__,
            TraceKeys.ID: id(self),
            TraceKeys.ORIG_SIZE: tuple(int(v) for v in img.shape[1:]),
            TraceKeys.EXTRA_INFO: {"bundle": self.bundle.name, "scale": scale,
                                   "affine": np.asarray(img.affine, dtype=np.float64).tolist()},
            TraceKeys.TRACING: True,
        })
        out.applied_operations = ops
        return out


class SuperResolved(MapTransform):
    """Dictionary twin of :class:`SuperResolve` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, bundle: str = "mri_sr_unet", *, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SuperResolve(bundle, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d
