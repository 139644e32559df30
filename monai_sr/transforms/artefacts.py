"""Artefacts that come with an MR image: Rician noise, Gibbs ringing, a smooth bias field.

* :func:`rician_noise` is the one Rician noise of monai_sr (``|x + n_re + i n_im|``, ``n ~ N(0, sigma)``):
  :class:`RicianNoise` applies it at a given SNR (:func:`rician_sigma`), and the training pair makers
  (:mod:`monai_sr.training`) and benchmarks call it with ``sigma`` in normalised units.
* :class:`GibbsRinging`: k-space truncation without downsampling.
* :class:`BiasField`: a smooth multiplicative field over the field of view.

Each is an array transform with a dict twin (``...d``); the random ones (``Rand...``) sample their
parameters with their own ``R`` and call the deterministic one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor

from monai_sr.checks import check_positive_int, check_range
from monai_sr.transforms._common import DictTwin, RandDictTwin, RandomFromDeterministic, as_numpy, check_channel_first, wrap_like
from monai_sr.transforms.intensity import robust_max

__all__ = [
    "rician_noise",
    "rician_sigma",
    "RicianNoise",
    "RicianNoised",
    "RandRicianNoise",
    "RandRicianNoised",
    "GibbsRinging",
    "GibbsRingingd",
    "RandGibbsRinging",
    "RandGibbsRingingd",
    "bias_exponents",
    "BiasField",
    "BiasFieldd",
    "RandBiasField",
    "RandBiasFieldd",
]


def rician_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of ``x`` plus complex Gaussian noise of standard deviation ``sigma`` per channel, float32.

    The real-channel noise is drawn first, then the imaginary one (``rng.normal(0, sigma, x.shape)`` each),
    so a seeded ``rng`` gives the same noise wherever this is called.
    """
    re = x + rng.normal(0.0, sigma, np.shape(x))
    im = rng.normal(0.0, sigma, np.shape(x))
    return np.sqrt(re * re + im * im).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# Rician noise
# ----------------------------------------------------------------------------------------------------------


def rician_sigma(x: np.ndarray | torch.Tensor, snr: float, *, foreground_threshold: float = 0.1) -> float:
    """Noise level ``sigma`` that gives ``x`` the signal-to-noise ratio ``snr``.

    **Definition.** ``SNR = mean foreground signal / sigma``: the mean of the noise-free image over its
    foreground (voxels above ``foreground_threshold`` times :func:`~monai_sr.transforms.intensity.robust_max`,
    the 99.5th percentile), divided by the standard deviation ``sigma`` of the Gaussian noise in each of the
    real and imaginary channels. In a bright flat region of level ``A`` with ``A / sigma`` large, the
    magnitude image then has a standard deviation close to ``sigma`` and a mean close to
    ``sqrt(A**2 + sigma**2)``.
    """
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be > 0, got {snr!r}")
    if not 0 <= foreground_threshold < 1:
        raise ValueError(f"foreground_threshold must be in [0, 1), got {foreground_threshold!r}")
    a = as_numpy(x)
    fg = a[a > foreground_threshold * robust_max(a)]
    level = float(fg.mean()) if fg.size else 0.0
    if level <= 0:
        raise ValueError("the image has no positive foreground: an SNR cannot define the noise level")
    return level / float(snr)


class RicianNoise:
    """Rician noise at a given SNR: ``|x + n_re + i n_im|`` with ``n_re, n_im ~ N(0, sigma)``.

    ``sigma`` is :func:`rician_sigma` (``SNR = mean foreground signal / sigma``, see there); the noise is
    drawn from ``numpy.random.default_rng(seed)``, so the same ``seed`` gives the same noise. A MetaTensor
    comes back with ``meta["rician_sigma"]``.

    Examples::

        noisy = RicianNoise(snr=20, seed=0)(img)
    """

    def __init__(self, snr: float, *, seed: int = 0, foreground_threshold: float = 0.1) -> None:
        if not (np.isfinite(snr) and snr > 0):
            raise ValueError(f"snr must be > 0, got {snr!r}")
        if not 0 <= foreground_threshold < 1:
            raise ValueError(f"foreground_threshold must be in [0, 1), got {foreground_threshold!r}")
        self.snr, self.seed, self.foreground_threshold = float(snr), int(seed), float(foreground_threshold)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        x = as_numpy(img)
        sigma = rician_sigma(x, self.snr, foreground_threshold=self.foreground_threshold)
        out = rician_noise(x, sigma, np.random.default_rng(self.seed))
        return wrap_like(out, img, meta={"rician_sigma": sigma} if isinstance(img, MetaTensor) else None)


class RicianNoised(DictTwin):
    """Dictionary twin of :class:`RicianNoise` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RicianNoise(*args, **kwargs)


class RandRicianNoise(RandomFromDeterministic):
    """Sample an SNR uniformly in ``snr_range`` and a noise seed, then apply :class:`RicianNoise`
    (with probability ``prob``). Not MONAI's ``RandRicianNoise``, whose level is relative to the image's
    standard deviation rather than an SNR."""

    def __init__(self, snr_range: Sequence[float] = (10.0, 50.0), *, prob: float = 1.0, foreground_threshold: float = 0.1) -> None:
        super().__init__(prob)
        self.snr_range = check_range("snr_range", snr_range, low=0.0, open_low=True)
        RicianNoise(1.0, foreground_threshold=foreground_threshold)
        self.foreground_threshold = foreground_threshold

    def _sample(self) -> dict:
        return {
            "snr": float(self.R.uniform(*self.snr_range)),
            "seed": int(self.R.randint(2**31 - 1)),
            "foreground_threshold": self.foreground_threshold,
        }

    def _deterministic(self, **params: Any) -> RicianNoise:
        return RicianNoise(params.pop("snr"), **params)


class RandRicianNoised(RandDictTwin):
    """Dictionary twin of :class:`RandRicianNoise` (same arguments after ``keys``); all keys get the same
    SNR and seed."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandRicianNoise(*args, **kwargs), allow_missing_keys)


# ----------------------------------------------------------------------------------------------------------
# Gibbs ringing
# ----------------------------------------------------------------------------------------------------------


class GibbsRinging:
    """Gibbs ringing: keep the central ``keep`` fraction of k-space (``|k| <= keep * n / 2``) along ``axes``
    and zero the rest, without changing the grid (an acquisition with a smaller matrix, zero-filled back
    to this one). ``keep = 1`` is the identity.

    Args:
        keep: fraction in (0, 1] of the k-space extent kept per axis.
        axes: spatial axes (default all).
    """

    def __init__(self, keep: float, *, axes: Sequence[int] | None = None) -> None:
        if not (np.isfinite(keep) and 0 < keep <= 1):
            raise ValueError(f"keep must be in (0, 1], got {keep!r}")
        if axes is not None and any(not isinstance(a, (int, np.integer)) or a < 0 for a in axes):
            raise ValueError(f"axes must be spatial axis indices (>= 0), got {axes!r}")
        self.keep, self.axes = float(keep), None if axes is None else tuple(int(a) for a in axes)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        n = check_channel_first(img, type(self).__name__, spatial=(1, 2, 3))
        axes = range(n) if self.axes is None else self.axes
        x = as_numpy(img).astype(np.complex128)
        for a in axes:
            if a >= n:
                raise ValueError(f"axis {a} is not a spatial axis of a {n}D image")
            size = x.shape[a + 1]
            k = np.fft.fftfreq(size, d=1.0 / size)
            shape = [1] * x.ndim
            shape[a + 1] = size
            mask = (np.abs(k) <= self.keep * size / 2).reshape(shape)
            x = np.fft.ifft(np.fft.fft(x, axis=a + 1) * mask, axis=a + 1)
        return wrap_like(np.real(x), img)


class GibbsRingingd(DictTwin):
    """Dictionary twin of :class:`GibbsRinging` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = GibbsRinging(*args, **kwargs)


class RandGibbsRinging(RandomFromDeterministic):
    """Sample ``keep`` uniformly in ``keep_range``, then apply :class:`GibbsRinging` (probability ``prob``)."""

    def __init__(self, keep_range: Sequence[float] = (0.5, 0.9), *, axes: Sequence[int] | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.keep_range = check_range("keep_range", keep_range, low=0.0, high=1.0, open_low=True)
        GibbsRinging(1.0, axes=axes)
        self.axes = axes

    def _sample(self) -> dict:
        return {"keep": float(self.R.uniform(*self.keep_range)), "axes": self.axes}

    def _deterministic(self, **params: Any) -> GibbsRinging:
        return GibbsRinging(params.pop("keep"), **params)


class RandGibbsRingingd(RandDictTwin):
    """Dictionary twin of :class:`RandGibbsRinging` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandGibbsRinging(*args, **kwargs), allow_missing_keys)


# ----------------------------------------------------------------------------------------------------------
# Bias field
# ----------------------------------------------------------------------------------------------------------


def bias_exponents(spatial_dims: int, order: int) -> list[tuple[int, ...]]:
    """Exponents of the monomials of total degree ``<= order`` in ``spatial_dims`` variables, in the order
    :class:`BiasField` pairs them with its coefficients (lexicographic)."""
    return [e for e in product(range(order + 1), repeat=spatial_dims) if sum(e) <= order]


class BiasField:
    """Multiply by a smooth bias field ``exp(sum_m c_m * prod_a u_a ** e_ma)``.

    ``u_a = (2 i + 1) / n_a - 1`` is the position of voxel centre ``i`` across the field of view, in
    ``(-1, 1)``: the HR and LR grids of one field of view (DESIGN.md) see the same field at the same point.
    ``coefficients`` pair with :func:`bias_exponents` ``(spatial_dims, order)`` (``c`` for the constant
    term first); all zeros is the identity.
    """

    def __init__(self, coefficients: Sequence[float], *, order: int = 3) -> None:
        self.order = check_positive_int("order", order, minimum=0)
        c = np.asarray(coefficients, dtype=np.float64)
        if c.ndim != 1 or not np.all(np.isfinite(c)):
            raise ValueError(f"coefficients must be a 1D sequence of finite numbers, got {coefficients!r}")
        self.coefficients = c

    def field(self, spatial_shape: Sequence[int]) -> np.ndarray:
        """The multiplicative field on a grid of ``spatial_shape``."""
        exps = bias_exponents(len(spatial_shape), self.order)
        if len(exps) != self.coefficients.size:
            raise ValueError(
                f"{self.coefficients.size} coefficients given; a {len(spatial_shape)}D field of order {self.order} "
                f"needs {len(exps)}"
            )
        u = [(2.0 * np.arange(n) + 1.0) / n - 1.0 for n in spatial_shape]
        grids = np.meshgrid(*u, indexing="ij")
        log = np.zeros(tuple(spatial_shape))
        for c, e in zip(self.coefficients, exps):
            if c:
                log += c * np.prod([g**p for g, p in zip(grids, e)], axis=0)
        return np.exp(log)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        check_channel_first(img, type(self).__name__)
        return wrap_like(as_numpy(img) * self.field(img.shape[1:])[None], img)


class BiasFieldd(DictTwin):
    """Dictionary twin of :class:`BiasField` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = BiasField(*args, **kwargs)


class RandBiasField(RandomFromDeterministic):
    """Sample coefficients uniformly in ``coeff_range`` (the constant term stays 0), then apply
    :class:`BiasField` (probability ``prob``). Unlike MONAI's ``RandBiasField`` it has a deterministic
    twin and a field defined over the field of view (the same on HR and LR grids)."""

    def __init__(
        self, *, spatial_dims: int = 3, order: int = 3, coeff_range: Sequence[float] = (-0.2, 0.2), prob: float = 1.0
    ) -> None:
        super().__init__(prob)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        check_positive_int("order", order)
        self.spatial_dims, self.order, self.coeff_range = spatial_dims, int(order), check_range("coeff_range", coeff_range)

    def _sample(self) -> dict:
        c = self.R.uniform(*self.coeff_range, size=len(bias_exponents(self.spatial_dims, self.order)))
        c[0] = 0.0  # the constant term would only rescale the intensities
        return {"coefficients": c.tolist(), "order": self.order}

    def _deterministic(self, **params: Any) -> BiasField:
        return BiasField(params.pop("coefficients"), **params)


class RandBiasFieldd(RandDictTwin):
    """Dictionary twin of :class:`RandBiasField` (same arguments after ``keys``)."""

    def __init__(self, keys: KeysCollection, *args: Any, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, RandBiasField(*args, **kwargs), allow_missing_keys)
