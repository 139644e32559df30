"""The one random crop draw and the one augmentation of every training pair maker and dataset.

**Crop draw** (:func:`draw_crop`). The sources are HR stacks of planes ``(n, rows, cols)``: a pre-cut
:class:`~monai_sr.training.pairs.DegradedStack`'s ``hr``, or a view of a volume cut along one axis
(:func:`volume_planes`). A draw picks a source (uniformly, or by ``weights``), a plane ``k``, optionally
a phase ``start`` of the coarse grid along the columns, and the LR corner ``(i, j)`` of a ``size`` crop
whose HR crop is ``factors`` times larger: HR rows ``fr i .. fr (i + p)``, columns ``start + fc j ..
start + fc (j + q)``. A draw whose HR crop has less than ``min_foreground`` of its pixels above
``foreground_level`` is redrawn, up to ``max_tries`` times (the last draw is kept: a mostly empty crop
now and then is harmless, background is learnt too). The calls on ``rng`` are, in this order:
``integers(len(sources))`` or ``choice(len(sources), p=weights)``, ``integers(n)``, ``integers(cols % fc
+ 1)`` (only with ``vary_phase``), ``integers(rows // fr - p + 1)``, ``integers((cols - start) // fc - q + 1)``.

**Augmentation** (:func:`augment_pair`): the same flips, transpose and intensity gain on input and
target, which keep the field-of-view alignment of an SR pair (and a linear degradation commutes with the
gain). Calls on ``rng``: ``random()`` per flip, ``random()`` for the transpose, ``uniform(-jitter,
jitter)`` for the gain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Crop", "draw_crop", "crop_weights", "share_weights", "volume_planes", "augment_pair"]

Image = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Crop:
    """Where a crop lies: source ``source``, plane ``k``, LR corner ``(i, j)``, column phase ``start``."""

    source: int
    k: int
    i: int
    j: int
    start: int = 0


def volume_planes(volume: np.ndarray, plane_axis: int, row_axis: int, col_axis: int) -> np.ndarray:
    """``volume`` ``(X, Y, Z)`` as planes ``(n, rows, cols)`` cut along ``plane_axis`` (a view, no copy)."""
    return np.transpose(volume, (plane_axis, row_axis, col_axis))


def crop_weights(sources: Sequence[np.ndarray], size: tuple[int, int], factors: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Probability of each source proportional to its number of crop positions (planes x corners)."""
    (p, q), (fr, fc) = size, factors
    w = np.array([s.shape[0] * (s.shape[1] // fr - p + 1) * (s.shape[2] // fc - q + 1) for s in sources], np.float64)
    return w / w.sum()


def share_weights(weights: np.ndarray, groups: Sequence[str], shares: Mapping[str, float]) -> np.ndarray:
    """Re-weight per-source probabilities so that each group named in ``shares`` gets that fixed share.

    ``weights``: one probability per source (e.g. :func:`crop_weights`); ``groups``: the group of each
    source (e.g. the file it was cut from). A group in ``shares`` gets exactly its share of the draws,
    split among its sources in proportion to ``weights``; the groups not named share what is left in
    proportion to ``weights``. Returns probabilities summing to 1. Used to give a single 2D slice a say
    next to volumes with thousands of slices.
    """
    w = np.asarray(weights, np.float64)
    if len(groups) != len(w):
        raise ValueError(f"{len(groups)} groups for {len(w)} sources")
    unknown = sorted(set(shares) - set(groups))
    if unknown:
        raise ValueError(f"shares name groups that have no source: {unknown}")
    if any(v < 0 for v in shares.values()) or sum(shares.values()) > 1 + 1e-9:
        raise ValueError(f"shares must be >= 0 and sum to at most 1, got {dict(shares)}")
    named = np.array([g in shares for g in groups])
    rest = 1.0 - sum(shares.values())
    if rest > 1e-9 and named.all():
        raise ValueError(f"shares sum to {1 - rest:.3f} < 1 but every group is named")
    out = np.zeros_like(w)
    for g, share in shares.items():
        idx = np.array([x == g for x in groups])
        out[idx] = share * w[idx] / w[idx].sum()
    if (~named).any():
        out[~named] = rest * w[~named] / w[~named].sum()
    return out / out.sum()


def draw_crop(
    rng: np.random.Generator,
    sources: Sequence[np.ndarray],
    size: tuple[int, int],
    factors: tuple[int, int] = (1, 1),
    *,
    weights: np.ndarray | None = None,
    vary_phase: bool = False,
    min_foreground: float = 0.3,
    foreground_level: float = 0.1,
    max_tries: int = 50,
) -> Crop:
    """A random crop of ``size`` LR pixels from the HR planes ``sources`` (see the module docstring)."""
    (p, q), (fr, fc) = size, factors
    for _ in range(max(1, int(max_tries))):
        n = int(rng.integers(len(sources))) if weights is None else int(rng.choice(len(sources), p=weights))
        src = sources[n]
        k = int(rng.integers(src.shape[0]))
        start = int(rng.integers(src.shape[2] % fc + 1)) if vary_phase else 0
        i = int(rng.integers(src.shape[1] // fr - p + 1))
        j = int(rng.integers((src.shape[2] - start) // fc - q + 1))
        hr = src[k, fr * i : fr * (i + p), start + fc * j : start + fc * (j + q)]
        if np.mean(hr > foreground_level) >= min_foreground:
            break
    return Crop(n, k, i, j, start)


def _flip(a: Image, axis: int) -> Image:
    return a.flip(axis) if isinstance(a, torch.Tensor) else np.flip(a, axis)


def _transpose(a: Image) -> Image:
    return a.transpose(-2, -1) if isinstance(a, torch.Tensor) else np.swapaxes(a, -2, -1)


def _square(a: Image) -> bool:
    return a.shape[-1] == a.shape[-2]


def augment_pair(
    rng: np.random.Generator, x: Image, y: Image, *, flips: bool = True, transpose: bool = True, jitter: float = 0.0
) -> tuple[Image, Image]:
    """The same random flips of the last two axes, transpose (when ``transpose`` and both are square) and
    intensity gain in ``[1 - jitter, 1 + jitter]`` (drawn only when ``jitter > 0``) on ``x`` and ``y``.

    Numpy arrays or torch tensors (views where possible); numpy arrays are scaled by a float32 gain so
    that float32 stays float32.
    """
    if flips:
        for axis in (-2, -1):
            if rng.random() < 0.5:
                x, y = _flip(x, axis), _flip(y, axis)
    if transpose and rng.random() < 0.5 and _square(x) and _square(y):
        x, y = _transpose(x), _transpose(y)
    if jitter > 0:
        gain = 1.0 + rng.uniform(-jitter, jitter)
        g = gain if isinstance(x, torch.Tensor) else np.float32(gain)
        x, y = x * g, y * g
    return x, y
