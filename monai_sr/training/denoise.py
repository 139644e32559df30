"""Training pairs for blind Rician denoising of magnitude MR images (the ``mri_denoise_dncnn`` bundle).

**Noise level.** The issue's "Rician noise at 5% of the bright signal" is ``sigma = 0.05 x bright``, where
the bright signal is :func:`monai_sr.transforms.intensity.robust_max` (the 99.5th percentile of the
volume), the same factor the inference pipeline divides its input by. The training volumes are already
divided by it (bright signal = 1), so ``sigma`` is simply the fraction: 5% is ``sigma = 0.05``. The noise is
the magnitude of complex Gaussian noise, ``|x + n_re + i n_im|`` with ``n_re, n_im ~ N(0, sigma^2)``
(:func:`monai_sr.transforms.artefacts.rician_noise`), the primitive of
:class:`monai_sr.transforms.artefacts.RicianNoise`. That transform states its level as an SNR relative
to the *mean foreground* (``sigma = mean(fg) / snr``, see :func:`~monai_sr.transforms.artefacts.rician_sigma`)
instead; :func:`snr_of_fraction` converts one into the other for a given volume.

**Blind training.** Each pair draws ``sigma`` uniformly from ``sigma_range`` (default 1% to 10% of the
bright signal, around the 5% of the benchmark), so one network denoises every level in the range without
being told it; the level of a given input can be read off with :mod:`monai_sr.transforms.noise`.

**Pairs.** :class:`RicianDenoisePairs` is the ``make_pair(volume, rng, patch)`` of
:class:`monai_sr.training.datasets.RandomPairDataset`: a 2D patch of a slice along a random axis of a
normalised volume ``(X, Y, Z)``, mostly inside the head (the MNI template is 78% zeros), and its noisy twin,
``{"image": noisy (1, p, p), "label": clean (1, p, p)}`` float32 tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_sr.checks import check_range
from monai_sr.training.datasets import SlicePairs
from monai_sr.transforms.artefacts import rician_noise, rician_sigma
from monai_sr.transforms.intensity import robust_max

__all__ = ["RicianDenoisePairs", "make_pair", "snr_of_fraction", "DEFAULT_SIGMA_RANGE"]

#: Largest zoom-in factor of ``RicianDenoisePairs.zoom_range`` (a crop of ``patch / zoom`` pixels enlarged).
MAX_ZOOM_IN = 4.0

#: Training range of the noise level, as fractions of the bright signal (robust max).
DEFAULT_SIGMA_RANGE = (0.01, 0.10)


def snr_of_fraction(volume: np.ndarray, fraction: float, *, foreground_threshold: float = 0.1) -> float:
    """The ``snr`` of :class:`~monai_sr.transforms.artefacts.RicianNoise` whose ``sigma`` equals
    ``fraction x robust_max(volume)`` (so both definitions name the same noise)."""
    if not (np.isfinite(fraction) and fraction > 0):
        raise ValueError(f"fraction must be > 0, got {fraction!r}")
    sigma = fraction * robust_max(volume)
    return rician_sigma(volume, 1.0, foreground_threshold=foreground_threshold) / sigma


class RicianDenoisePairs(SlicePairs):
    """Blind Rician denoising pairs: ``image`` is the slice with Rician noise of ``sigma ~ U[sigma_range]``
    (fractions of the bright signal), ``label`` the clean slice; same size (``factor = 1``).

    The drawing of the slice and crop (all three axes, mostly head) is
    :class:`monai_sr.training.datasets.SlicePairs`'; the volume must be normalised so that its bright
    signal is 1 (what ``load_training_volumes`` returns). ``sigma_range=(0.05, 0.05)`` gives the fixed
    5% of the benchmark (validation).

    Two augmentations of the clean crop, before the noise (so the noise level stays in ``sigma_range``):

    - ``gain_range``: intensity gain; the training volumes differ in where tissue sits relative to the
      bright signal (the skull-stripped MNI brain at ~0.8 of it, the whole heads at ~0.5), and a blind
      denoiser must not tie its prior to one of them.
    - ``zoom_range`` / ``zoom_prob``: with probability ``zoom_prob`` the crop is ``patch / zoom`` pixels,
      shrunk to ``patch`` (anti-aliased bilinear): anatomy at a finer scale per pixel. The smooth mean head
      is far less detailed than a single subject's scan; zooming out restores detail per pixel. A zoom
      above 1 (up to :data:`MAX_ZOOM_IN`) enlarges a smaller crop (bicubic, clipped at 0): anatomy much
      smoother than the pixel grid, as in scans interpolated on the scanner (a 0.2 mm 1024^2 slice); the
      noise is still added per pixel after the zoom.

    ``degrade`` (whole slices, :class:`~monai_sr.training.datasets.SliceDataset` validation) applies neither.

    Examples::

        make_pair = RicianDenoisePairs(sigma_range=(0.01, 0.1))
        pair = make_pair(volume, np.random.default_rng(0), 48)   # image, label: (1, 48, 48) tensors
    """

    factor = 1

    def __init__(
        self,
        sigma_range: Sequence[float] = DEFAULT_SIGMA_RANGE,
        *,
        gain_range: Sequence[float] = (1.0, 1.0),
        zoom_range: Sequence[float] = (1.0, 1.0),
        zoom_prob: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sigma_range = check_range("sigma_range", sigma_range, low=0.0)
        self.gain_range = check_range("gain_range", gain_range, low=1e-3)
        self.zoom_range = check_range("zoom_range", zoom_range, low=0.1)
        if self.zoom_range[1] > MAX_ZOOM_IN:
            raise ValueError(f"zoom_range must lie in (0, {MAX_ZOOM_IN:g}], got {zoom_range!r}")
        if not 0.0 <= zoom_prob <= 1.0:
            raise ValueError(f"zoom_prob must be in [0, 1], got {zoom_prob!r}")
        self.zoom_prob = float(zoom_prob)

    def degrade(self, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noisy and clean ``hr`` (the noise level drawn from ``sigma_range``); no gain or zoom (validation)."""
        sigma = float(rng.uniform(*self.sigma_range))
        return rician_noise(hr, sigma, rng), np.asarray(hr, dtype=np.float32)

    def __call__(self, volume: np.ndarray, rng: np.random.Generator, patch: int) -> dict[str, torch.Tensor]:
        """A random ``patch`` x ``patch`` pair (the drawing rules of ``SlicePairs``).

        The crop is drawn by ``SlicePairs.draw`` (at ``patch / zoom`` pixels when zooming out). Diverges
        from ``SlicePairs.__call__`` in two ways, both for speed (the data loader runs in the
        training process on a 2-core machine): the noise is i.i.d. per pixel, so the crop is noised
        instead of the whole slice (the same distribution, ~20x fewer random numbers); and slices are
        taken by basic indexing (a view): ``np.take`` with a scalar index copies through a generic path
        that took ~75 ms per slice here, ~25x the cost of a training step's share of a pair.
        """
        out = int(patch)
        if out < 1:
            raise ValueError(f"patch must be a positive number of pixels, got {patch}")
        zoom = float(rng.uniform(*self.zoom_range)) if self.zoom_prob > 0 and rng.random() < self.zoom_prob else 1.0
        p = int(round(out / zoom))
        if min(sorted(volume.shape)[1:]) < p:
            p, zoom = out, 1.0  # the zoomed-out crop does not fit: plain crop
        axis, k, i, j = self.draw(volume, rng, p)  # factor 1: the crop is p x p pixels of the slice
        crop = volume[(slice(None),) * axis + (k,)][i : i + p, j : j + p]
        clean = np.asarray(crop, dtype=np.float32)
        if p > out:  # zoom out: finer anatomy per pixel (anti-aliased bilinear)
            t = torch.from_numpy(np.ascontiguousarray(clean))[None, None]
            clean = F.interpolate(t, size=(out, out), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()
        elif p < out:  # zoom in: coarser anatomy per pixel, as in an interpolated (oversampled) scan (bicubic, >= 0)
            t = torch.from_numpy(np.ascontiguousarray(clean))[None, None]
            clean = F.interpolate(t, size=(out, out), mode="bicubic", align_corners=False)[0, 0].clamp_min(0).numpy()
        if self.gain_range != (1.0, 1.0):  # no draw without a gain: the random stream of plain pairs stays put
            clean = clean * np.float32(rng.uniform(*self.gain_range))
        x, y = self.degrade(clean, rng)
        return {"image": torch.from_numpy(x[None]), "label": torch.from_numpy(np.ascontiguousarray(y)[None])}


#: The bundle's pair maker: 1% to 10% of the bright signal, patches along all three axes.
make_pair = RicianDenoisePairs()
