"""Training pairs (LR, HR) from any HR volume, as MONAI transforms on MetaTensors.

The LR volume is made from the whole HR volume first (:class:`MakeSRPair` with a degradation such as
:class:`~monai_sr.transforms.lowres.SimulateLowResolution`), then aligned pieces are cut from both:

* :class:`RandPatchPair` / :class:`RandPatchPaird`: an LR patch of ``lr_size`` starting at LR index ``i``
  goes with the HR patch starting at ``s * i`` of size ``s * lr_size`` (``s`` = the per-axis factor, read
  from the shapes). Both are cropped by MONAI's ``SpatialCrop``, so both affines stay true and
  ``hr_patch.affine == geometry.scaled_affine(lr_patch.affine, s)``. A size of 1 along an axis whose factor
  is 1 gives 2D slice pairs along that axis, with their geometry.
* :func:`slice_pairs`: every slice along ``axis`` as plain 2D tensors ``(C, a, b)``, for 2D networks.

Degrading the whole volume before cutting keeps the sinc ringing and slice profile of a real scan at the
patch borders; :mod:`monai_sr.training.pairs` does the same on numpy arrays for the SR-UNet training script.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, SpatialCrop, Transform

from monai_sr.transforms._common import check_channel_first

__all__ = ["MakeSRPair", "MakeSRPaird", "pair_factors", "slice_pairs", "RandPatchPair", "RandPatchPaird"]


def pair_factors(lr: torch.Tensor, hr: torch.Tensor) -> tuple[int, ...]:
    """Integer factor per spatial axis between an LR and an HR image (``hr.shape == s * lr.shape``)."""
    n = check_channel_first(lr, "pair_factors")
    if hr.ndim != lr.ndim or hr.shape[0] != lr.shape[0]:
        raise ValueError(f"LR shape {tuple(lr.shape)} and HR shape {tuple(hr.shape)} do not make a pair")
    out = []
    for axis in range(n):
        a, b = int(lr.shape[axis + 1]), int(hr.shape[axis + 1])
        if a == 0 or b % a:
            raise ValueError(f"axis {axis}: HR size {b} is not an integer multiple of LR size {a}")
        out.append(b // a)
    return tuple(out)


class MakeSRPair(Transform):
    """``MakeSRPair(degrade)(hr) -> (degrade(hr), hr)``: the LR twin of an HR image, e.g. with
    ``degrade = SimulateLowResolution(...)`` (then the LR MetaTensor's affine is the coarsened one)."""

    def __init__(self, degrade: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if not callable(degrade):
            raise ValueError(f"degrade must be a callable transform, got {degrade!r}")
        self.degrade = degrade

    def __call__(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.degrade(hr), hr


class MakeSRPaird(Randomizable, MapTransform):
    """Dictionary twin of :class:`MakeSRPair`: ``d[lr_key] = degrade(d[hr_key])`` for each HR key.

    ``keys`` are the HR keys and ``lr_keys`` (same length) where their LR twins go. A random ``degrade``
    gets the random state of this transform through :meth:`set_random_state` (so ``Compose.set_random_state``
    reaches it).
    """

    def __init__(
        self, keys: KeysCollection, lr_keys: KeysCollection, degrade: Callable, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.lr_keys = (lr_keys,) if isinstance(lr_keys, (str, int)) else tuple(lr_keys)
        if len(self.lr_keys) != len(self.keys):
            raise ValueError(f"lr_keys {list(self.lr_keys)} must match keys {list(self.keys)} one to one")
        self.pair = MakeSRPair(degrade)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> MakeSRPaird:
        super().set_random_state(seed, state)
        if isinstance(self.pair.degrade, Randomizable):
            self.pair.degrade.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Nothing to draw here: a random ``degrade`` draws its own parameters."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key, lr_key in self.key_iterator(d, self.lr_keys):
            d[lr_key], d[key] = self.pair(d[key])
        return d


def slice_pairs(lr: torch.Tensor, hr: torch.Tensor, *, axis: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Aligned 2D pairs, one per slice along spatial ``axis`` (whose factor must be 1).

    Yields ``(lr_k, hr_k)`` as plain tensors ``(C, a, b)`` and ``(C, s_a a, s_b b)`` (views, no copies):
    the in-plane axes in their original order. Use :class:`RandPatchPair` with size 1 along ``axis`` for
    slices that keep their affine.
    """
    factors = pair_factors(lr, hr)
    if not 0 <= axis < len(factors):
        raise ValueError(f"axis {axis} is not a spatial axis of a {len(factors)}D image")
    if factors[axis] != 1:
        raise ValueError(f"axis {axis} has factor {factors[axis]}: slices along it have no LR twin (need 1)")
    lr_t = lr.as_tensor() if hasattr(lr, "as_tensor") else torch.as_tensor(lr)
    hr_t = hr.as_tensor() if hasattr(hr, "as_tensor") else torch.as_tensor(hr)
    for k in range(lr_t.shape[axis + 1]):
        yield lr_t.select(axis + 1, k), hr_t.select(axis + 1, k)


class RandPatchPair(Randomizable, Transform):
    """Random aligned (LR, HR) patches: LR ``lr_size`` at a random LR start ``i``, HR ``s * lr_size`` at ``s * i``.

    ``RandPatchPair(lr_size)(lr, hr) -> (lr_patch, hr_patch)``; ``s`` per axis comes from the shapes
    (:func:`pair_factors`). MetaTensors come back with their affines cropped by MONAI's ``SpatialCrop``.

    Args:
        lr_size: LR patch size per spatial axis (an int for all axes); 1 along a factor-1 axis gives slices.

    Examples::

        lr_p, hr_p = RandPatchPair((32, 32, 1)).set_random_state(0)(lr, hr)  # 2D slices along axis 2
    """

    def __init__(self, lr_size: Sequence[int] | int) -> None:
        sizes = (lr_size,) if np.isscalar(lr_size) else tuple(lr_size)
        for v in sizes:
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"lr_size must be positive integers, got {v!r} in {list(sizes)}")
        self.lr_size = tuple(int(v) for v in sizes)
        self.start: tuple[int, ...] | None = None

    def _sizes(self, lr: torch.Tensor) -> tuple[int, ...]:
        n = lr.ndim - 1
        size = self.lr_size * n if len(self.lr_size) == 1 else self.lr_size
        if len(size) != n:
            raise ValueError(f"lr_size {list(self.lr_size)} has {len(size)} values for a {n}D image")
        for axis, (p, m) in enumerate(zip(size, lr.shape[1:])):
            if p > m:
                raise ValueError(f"axis {axis}: LR patch size {p} exceeds the LR image size {m}")
        return size

    def randomize(self, lr: torch.Tensor) -> None:
        self.start = tuple(int(self.R.randint(m - p + 1)) for p, m in zip(self._sizes(lr), lr.shape[1:]))

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor, randomize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        factors = pair_factors(lr, hr)
        size = self._sizes(lr)
        if randomize or self.start is None:
            self.randomize(lr)
        i = self.start
        lr_p = SpatialCrop(roi_start=i, roi_end=[a + p for a, p in zip(i, size)])(lr)
        hr_p = SpatialCrop(roi_start=[s * a for s, a in zip(factors, i)], roi_end=[s * (a + p) for s, a, p in zip(factors, i, size)])(hr)
        return lr_p, hr_p


class RandPatchPaird(Randomizable, MapTransform):
    """Dictionary twin of :class:`RandPatchPair`: crops ``d[lr_key]`` and ``d[hr_key]`` at one random position."""

    def __init__(self, lr_key: Hashable, hr_key: Hashable, lr_size: Sequence[int] | int) -> None:
        MapTransform.__init__(self, [lr_key, hr_key])
        self.lr_key, self.hr_key = lr_key, hr_key
        self.transform = RandPatchPair(lr_size)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPatchPaird:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.transform.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        d[self.lr_key], d[self.hr_key] = self.transform(d[self.lr_key], d[self.hr_key])
        return d
