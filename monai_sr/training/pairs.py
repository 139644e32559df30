"""Training pairs for in-plane 2D super-resolution, made from high-resolution volumes.

The low-resolution (LR) image of a pair is what a scanner with a ``factor`` times smaller matrix over
the same field of view reconstructs: the high-resolution (HR) slice's k-space truncated by
:func:`monai_sr.transforms.kspace.fourier_resample`. The whole slice is truncated first, then
aligned crops are cut: an HR crop starting at HR index ``f * i`` (size ``f * p``) goes with the LR crop
starting at LR index ``i`` (size ``p``); LR voxel ``m`` of the crop sits at HR-crop index
``(m + 0.5) * f - 0.5``, which is the field-of-view rule of DESIGN.md, so the pair is geometrically
aligned exactly as the inference pipeline assumes.

Intensities are divided by :func:`monai_sr.transforms.intensity.robust_max` of the whole volume, the
same normalisation the inference pipeline applies to its input volume.

Slices are taken along all three axes. A volume can be split along one axis into a training part and a
held-out slab (:func:`split_volume`); each part is degraded on its own, so nothing of the slab leaks
into training pairs, not even through the sinc ringing of the truncation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monai_sr.checks import check_positive_int
from monai_sr.training.crops import augment_pair, crop_weights, draw_crop, share_weights
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.kspace import fourier_resample

__all__ = ["DegradedStack", "PairSampler", "SpectralShaping", "split_volume", "normalise_volume"]


def normalise_volume(volume: np.ndarray) -> np.ndarray:
    """``volume / robust_max(volume)`` as float32: the inference pipeline's input normalisation."""
    v = np.asarray(volume, dtype=np.float32)
    return v / np.float32(robust_max(v))


def split_volume(volume: np.ndarray, *, axis: int, start: int, stop: int, gap: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Split ``volume`` along ``axis`` into training parts and the held-out slab ``[start, stop)``.

    Returns ``(train_parts, slab)``: the parts before ``start - gap`` and after ``stop + gap`` (empty
    parts are left out) and the slab itself. The ``gap`` keeps the slab's neighbours out of training.
    """
    n = volume.shape[axis]
    if not 0 <= start < stop <= n:
        raise ValueError(f"held-out slab [{start}, {stop}) does not fit an axis of length {n}")
    take = lambda a, b: np.take(volume, np.arange(a, b), axis=axis)  # noqa: E731
    parts = [take(0, start - gap) if start - gap > 0 else None, take(stop + gap, n) if stop + gap < n else None]
    return [p for p in parts if p is not None], take(start, stop)


@dataclass
class DegradedStack:
    """HR slices along one axis of a (part of a) volume and their k-space-truncated LR twins.

    ``hr``: ``(n_slices, a, b)`` float32 with ``a`` and ``b`` multiples of ``factor`` (a trailing
    row/column is dropped where needed: the HR grid defines the LR grid); ``lr``: ``(n_slices, a / f,
    b / f)``.
    """

    hr: np.ndarray
    lr: np.ndarray
    factor: int

    @classmethod
    def from_volume(cls, volume: np.ndarray, axis: int, factor: int = 2) -> DegradedStack:
        factor = check_positive_int("factor", factor)
        stack = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
        a, b = (stack.shape[1] // factor) * factor, (stack.shape[2] // factor) * factor
        if a == 0 or b == 0:
            raise ValueError(f"slices of shape {stack.shape[1:]} are smaller than the factor {factor}")
        hr = np.ascontiguousarray(stack[:, :a, :b])
        lr = fourier_resample(hr, (a // factor, b // factor), (1, 2)).astype(np.float32)
        return cls(hr=hr, lr=lr, factor=factor)

    def crop(self, index: int, i: int, j: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The aligned pair at LR position ``(i, j)``: LR ``(size, size)``, HR ``(f * size, f * size)``."""
        f = self.factor
        lr = self.lr[index, i : i + size, j : j + size]
        hr = self.hr[index, f * i : f * (i + size), f * j : f * (j + size)]
        return lr, hr


@dataclass
class SpectralShaping:
    """Random k-space attenuation of a whole training slice, the same filter on its HR and LR twins.

    Real scans differ from the training templates in how much detail they carry near their own Nyquist
    frequency: scanners apodise k-space (Hamming, Tukey, Fermi windows), reconstructions interpolate
    (FreeSurfer-conformed volumes, zero-filled interpolation), so the out-of-band detail a network should
    add varies per scan. With probability ``prob`` a draw picks one of:

    * a Gaussian blur of ``sigma`` in ``[0, max_sigma]`` HR pixels: ``W(k) = exp(-2 pi^2 sigma^2 (k / N)^2)``;
    * a cosine taper from 1 at ``|k| = a N / 2`` to a floor ``b`` at the HR Nyquist frequency, with ``a``
      in ``[0.3, 0.8]`` and ``b`` in ``[0, 0.6]`` (an acquisition window on the HR grid);

    independently per in-plane axis, with ``k`` the signed integer frequency (cycles per field of view)
    and ``N`` the HR size of that axis. The filter depends on ``k`` only, so the LR slice (``N / f`` points,
    its bins are the HR slice's central bins) gets exactly the response of its bins: the pair stays
    ``LR = T(HR)``. The network learns to read, from the band it is given, how much detail the scan has
    beyond it.
    """

    prob: float = 0.5
    max_sigma: float = 0.8

    def response(self, rng: np.random.Generator, n_hr: int) -> Callable[[np.ndarray], np.ndarray]:
        """One random response ``W(k)`` (a function of integer frequencies) for an axis of ``n_hr`` HR points."""
        if rng.random() < 0.5:
            sigma = float(rng.uniform(0.0, self.max_sigma))
            return lambda k: np.exp(-2.0 * np.pi**2 * sigma**2 * (k / n_hr) ** 2)
        a, b = float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.0, 0.6))

        def taper(k: np.ndarray) -> np.ndarray:
            f = np.abs(k) / (n_hr / 2.0)
            t = np.clip((f - a) / (1.0 - a), 0.0, 1.0)
            return b + (1.0 - b) * 0.5 * (1.0 + np.cos(np.pi * t))

        return taper

    def __call__(self, rng: np.random.Generator, hr: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(hr, lr)`` slices ``(a, b)`` and ``(a / f, b / f)`` filtered by one random draw (or returned as
        they are, with probability ``1 - prob``)."""
        if rng.random() >= self.prob:
            return hr, lr
        out = []
        responses = [self.response(rng, n) for n in hr.shape]
        for img in (hr, lr):
            spec = np.fft.fft2(img)
            for axis, w in enumerate(responses):
                n = img.shape[axis]
                k = np.fft.fftfreq(n, d=1.0 / n)
                spec *= w(k).reshape((-1, 1) if axis == 0 else (1, -1))
            out.append(np.fft.ifft2(spec).real.astype(np.float32))
        return out[0], out[1]


class PairSampler:
    """Random aligned (LR, HR) crops from :class:`DegradedStack` s, with augmentation.

    Each draw (:func:`monai_sr.training.crops.draw_crop`) picks a stack with probability proportional to
    its number of valid crop positions, a slice and an LR position; crops whose HR has less than
    ``min_foreground`` of its pixels above ``foreground_level`` (in normalised units) are redrawn.
    Augmentation (:func:`monai_sr.training.crops.augment_pair`): a random one of the eight
    flips/transposes (applied to both images; they keep the field-of-view alignment), an intensity
    factor in ``[1 - jitter, 1 + jitter]`` applied to both (k-space truncation is linear), and with
    probability ``noise_prob`` Rician noise of ``sigma`` in ``[0, noise_sigma]`` on the LR only.
    ``shaping`` (:class:`SpectralShaping`) filters the drawn whole slice pair first. ``groups`` (one name
    per stack, e.g. its file) with ``shares`` (group -> fixed share of the draws) re-weight the stacks
    (:func:`monai_sr.training.crops.share_weights`).

    Examples::

        sampler = PairSampler(stacks, lr_size=48, seed=0)
        lr, hr = sampler.batch(16)   # (16, 1, 48, 48), (16, 1, 96, 96) float32 arrays
    """

    def __init__(
        self,
        stacks: Sequence[DegradedStack],
        *,
        lr_size: int = 48,
        seed: int = 0,
        min_foreground: float = 0.3,
        foreground_level: float = 0.1,
        jitter: float = 0.15,
        noise_prob: float = 0.2,
        noise_sigma: float = 0.02,
        max_tries: int = 50,
        shaping: SpectralShaping | None = None,
        groups: Sequence[str] | None = None,
        shares: Mapping[str, float] | None = None,
    ) -> None:
        lr_size = check_positive_int("lr_size", lr_size)
        if groups is not None and len(groups) != len(stacks):
            raise ValueError(f"{len(groups)} groups for {len(stacks)} stacks")
        factors = {s.factor for s in stacks}
        if len(factors) > 1:
            raise ValueError(f"all stacks must share one factor, got {sorted(factors)}")
        keep = [s.lr.shape[1] >= lr_size and s.lr.shape[2] >= lr_size for s in stacks]
        self.stacks = [s for s, k in zip(stacks, keep) if k]
        if not self.stacks:
            raise ValueError(f"no stack has LR slices of at least {lr_size}x{lr_size}")
        self.factor = factors.pop()
        self.groups = None if groups is None else [g for g, k in zip(groups, keep) if k]  # of the kept stacks
        self.weights = crop_weights([s.hr for s in self.stacks], (lr_size, lr_size), (self.factor, self.factor))
        if shares:
            if self.groups is None:
                raise ValueError("shares need groups (one group name per stack)")
            self.weights = share_weights(self.weights, self.groups, shares)
        self.lr_size = lr_size
        self.min_foreground = min_foreground
        self.foreground_level = foreground_level
        self.jitter = jitter
        self.noise_prob = noise_prob
        self.noise_sigma = noise_sigma
        self.max_tries = max_tries
        self.shaping = shaping
        self.rng = np.random.default_rng(seed)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        p, f = self.lr_size, self.factor
        c = draw_crop(
            self.rng, [s.hr for s in self.stacks], (p, p), (f, f), weights=self.weights,
            min_foreground=self.min_foreground, foreground_level=self.foreground_level, max_tries=self.max_tries,
        )
        stack = self.stacks[c.source]
        if self.shaping is None:
            return stack.crop(c.k, c.i, c.j, p)
        hr, lr = self.shaping(self.rng, stack.hr[c.k], stack.lr[c.k])
        return DegradedStack(hr=hr[None], lr=lr[None], factor=f).crop(0, c.i, c.j, p)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented pair: LR ``(p, p)`` and HR ``(f p, f p)``, float32."""
        lr, hr = augment_pair(self.rng, *self._draw(), jitter=self.jitter)
        rng = self.rng
        if rng.random() < self.noise_prob:
            lr = rician_noise(lr, float(rng.uniform(0.0, self.noise_sigma)), rng)
        return np.ascontiguousarray(lr, np.float32), np.ascontiguousarray(hr, np.float32)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs stacked as ``(n, 1, p, p)`` LR and ``(n, 1, f p, f p)`` HR."""
        pairs = [self.sample() for _ in range(n)]
        return np.stack([a for a, _ in pairs])[:, None], np.stack([b for _, b in pairs])[:, None]
