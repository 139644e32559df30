"""Plumbing shared by monai_sr's transforms: dict twins, random-then-deterministic, MetaTensor in/out.

* :class:`DictTwin` holds an array transform and applies it to each key (STYLE.md 1: one source of logic).
* :class:`RandomFromDeterministic` samples parameters with its own ``R`` (MONAI ``Randomizable``) and then
  calls a deterministic transform built from them (STYLE.md 5); :class:`RandDictTwin` is its dict twin,
  sampling once per call for all keys.
* :func:`as_numpy` / :func:`wrap_like` take a MetaTensor, tensor or array in and hand the same kind back,
  with the meta (and the affine, when the grid changed) of the input.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import MetaKeys

__all__ = ["DictTwin", "RandomFromDeterministic", "RandDictTwin", "as_numpy", "wrap_like", "check_channel_first"]

Image = np.ndarray | torch.Tensor


def check_channel_first(img: Image, name: str, *, spatial: tuple[int, ...] = (2, 3)) -> int:
    """Number of spatial dims of a channel-first image; ValueError naming the shape otherwise."""
    n = img.ndim - 1
    if n not in spatial:
        raise ValueError(
            f"{name} expects a channel-first image (C, *spatial) with {' or '.join(map(str, spatial))} spatial dims, "
            f"got shape {tuple(img.shape)}"
        )
    return n


def as_numpy(img: Image) -> np.ndarray:
    """float64 numpy copy-free view where possible (tensors are detached and moved to the CPU)."""
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    return np.asarray(img, dtype=np.float64)


def wrap_like(out: np.ndarray, img: Image, *, affine: np.ndarray | None = None, meta: dict | None = None) -> Image:
    """``out`` (float32) as the type of ``img``; a MetaTensor keeps ``img``'s meta, with ``affine`` (the
    new grid's, from :mod:`monai_sr.geometry`) and ``meta`` entries put in."""
    data = np.ascontiguousarray(out, dtype=np.float32)
    if isinstance(img, MetaTensor):
        new_meta = dict(img.meta)
        if affine is not None:
            new_meta[MetaKeys.AFFINE] = torch.as_tensor(affine, dtype=torch.float64)
            new_meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(data.shape[1:])
        new_meta.update(meta or {})
        return MetaTensor(torch.from_numpy(data).to(img.device), meta=new_meta, applied_operations=list(img.applied_operations))
    if isinstance(img, torch.Tensor):
        return torch.from_numpy(data).to(img.device)
    return data


class DictTwin(MapTransform):
    """Dictionary twin of an array transform ``self.transform``: ``d[key] = self.transform(d[key])``."""

    transform: Callable

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class RandomFromDeterministic(RandomizableTransform):
    """Sample parameters (``_sample``, using ``self.R``), then apply ``_deterministic(**params)``.

    ``self.params`` holds the last sampled parameters (None when the last draw skipped the transform).
    """

    def __init__(self, prob: float = 1.0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        super().__init__(prob)
        self.params: dict | None = None

    def _sample(self) -> dict:
        raise NotImplementedError

    def _deterministic(self, **params: Any) -> Transform:
        raise NotImplementedError

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.params = self._sample() if self._do_transform else None

    def __call__(self, img: Image, randomize: bool = True) -> Image:
        if randomize:
            self.randomize()
        if self.params is None:
            return img
        return self._deterministic(**self.params)(img)


class RandDictTwin(RandomizableTransform, MapTransform):
    """Dictionary twin of a :class:`RandomFromDeterministic` ``self.transform``: one draw per call, the
    same parameters for every key."""

    def __init__(self, keys: KeysCollection, transform: RandomFromDeterministic, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandDictTwin:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.transform.randomize()
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d
