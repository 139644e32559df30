"""``SuperResolve`` / ``SuperResolved``: a bundle's enhancement as an invertible MONAI transform.

The array transform takes a channel-first single-channel MetaTensor ``(1, X, Y, Z)`` with a RAS affine
and returns the enhanced MetaTensor on the field-of-view-rule grid (affine and spatial shape updated,
meta kept) through :func:`monai_sr.api.enhance_image` — the same path as ``monai-sr enhance``: no copy of
its logic here. The bundle is loaded once, at construction.

The operation is pushed onto the result's ``applied_operations`` the MONAI way
(:meth:`~monai.transforms.TraceableTransform.push_transform`: class, id, original spatial shape, and in
``extra_info`` the bundle, the scale and the input affine), so MONAI's ``Invertd`` (or
``SuperResolved.inverse``) can undo it with the transforms before it: :meth:`SuperResolve.inverse` puts an
image on the super-resolved grid (the result, or a prediction made from it, e.g. a segmentation's
probabilities) back onto the input grid, shape and affine exactly, by k-space truncation along the
super-resolved axes (:func:`monai_sr.transforms.kspace.fourier_resample`, the degradation the networks
are trained to invert; a constant stays the same constant). A super-resolved image has no unique
original, so the inverse is the measured band of the result, not the input's voxels; a same-grid bundle
(denoising) is inverted to its own voxels on the same grid.

Examples::

    pre = Compose([
        LoadImaged("image", ensure_channel_first=True),
        Orientationd("image", axcodes="RAS"),
        SuperResolved("image", bundle="mri_sr_unet", fast=True),
    ])
    data = pre({"image": "t1.nii.gz"})
    data["label"] = segment(data["image"])          # on the super-resolved grid
    back = Invertd("label", transform=pre, orig_keys="image")(data)   # on the file's grid
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys

__all__ = ["SuperResolve", "SuperResolved"]


class SuperResolve(InvertibleTransform, Transform):
    """Enhance a MetaTensor with ``bundle``: a name or path (see :func:`monai_sr.api.load_bundle` for
    ``fast``, ``trust`` and config ``overrides``) or a :class:`~monai_sr.api.Bundle` loaded already."""

    def __init__(self, bundle: str | Any = "mri_sr_unet", *, fast: bool = False, trust: bool = False, **overrides: Any) -> None:
        from monai_sr.api import Bundle, load_bundle

        if isinstance(bundle, Bundle):  # loaded already (e.g. shared by several transforms)
            if fast or trust or overrides:
                raise ValueError("fast, trust and config overrides go to load_bundle; this bundle is loaded already")
            self.bundle = bundle
        else:
            self.bundle = load_bundle(bundle, fast=fast, trust=trust, **overrides)

    def __call__(self, img: MetaTensor) -> MetaTensor:
        """``img`` ``(1, X, Y, Z)`` (RAS affine) -> the enhanced MetaTensor ``(1, s0 X, s1 Y, s2 Z)``, the
        operation recorded in its ``applied_operations`` after those of ``img``."""
        from monai_sr.api import enhance_image

        out = enhance_image(img, self.bundle)
        scale = [round(float(b) / float(a)) for a, b in zip(img.shape[1:], out.shape[1:])]
        out.applied_operations = list(getattr(img, "applied_operations", []))
        self.push_transform(
            out,
            orig_size=tuple(int(v) for v in img.shape[1:]),
            extra_info={"bundle": self.bundle.name, "scale": scale,
                        "affine": np.asarray(img.affine, dtype=np.float64).tolist()},
        )
        return out

    def inverse(self, data: MetaTensor) -> MetaTensor:
        """``data`` ``(C, X', Y', Z')`` on the grid this transform made -> ``(C, X, Y, Z)`` on the input
        grid (the recorded shape and affine), by k-space truncation along the scaled axes; the
        operation is popped from ``applied_operations``. Float32; meta kept but for the affine."""
        from monai_sr.errors import GeometryError
        from monai_sr.transforms.kspace import fourier_resample

        op = self.pop_transform(data)
        size = [int(v) for v in op[TraceKeys.ORIG_SIZE]]
        info = op[TraceKeys.EXTRA_INFO]
        expected = [n * s for n, s in zip(size, info["scale"])]
        if list(data.shape[1:]) != expected:
            raise GeometryError(f"cannot invert {type(self).__name__}: the image is {tuple(data.shape[1:])}, "
                                f"the grid it made was {tuple(expected)}")
        axes = [a + 1 for a in range(3) if info["scale"][a] > 1]
        arr = data.detach().cpu().as_tensor().numpy() if isinstance(data, MetaTensor) else np.asarray(data)
        if axes:
            arr = fourier_resample(arr, [size[a - 1] for a in axes], axes)
        meta = {k: v for k, v in getattr(data, "meta", {}).items() if k not in ("affine", "original_affine")}
        out = MetaTensor(torch.as_tensor(np.asarray(arr, dtype=np.float32)),
                         affine=torch.as_tensor(info["affine"], dtype=torch.float64), meta=meta)
        out.meta["spatial_shape"] = np.asarray(size)
        out.applied_operations = list(getattr(data, "applied_operations", []))
        return out


class SuperResolved(MapTransform, InvertibleTransform):
    """Dictionary twin of :class:`SuperResolve` (same arguments after ``keys``); ``inverse`` undoes it
    per key (what MONAI's ``Invertd`` calls)."""

    def __init__(self, keys: KeysCollection, bundle: str = "mri_sr_unet", *, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SuperResolve(bundle, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d
