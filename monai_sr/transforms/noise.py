"""Noise level of a magnitude MR image, estimated from the image itself.

A magnitude image is ``|s + n_re + i n_im|`` with ``n_re, n_im ~ N(0, sigma^2)`` (Rician noise; the model
of :class:`monai_sr.transforms.artefacts.RicianNoise`). Two estimators of ``sigma``:

**Background** (:func:`sigma_from_background`). Where there is no signal (air around the head) the
magnitude is Rayleigh distributed with parameter ``sigma``: ``E[b^2] = 2 sigma^2`` and its mode is
``sigma``. The background is found without knowing ``sigma`` first:

1. a first guess ``sigma0``: the mode of the histogram of the low intensities (below 30% of the bright
   signal, :func:`~monai_sr.transforms.intensity.robust_max`): with air in the field of view the Rayleigh
   peak of the background is the tallest there;
2. the head: voxels of the lightly smoothed image (Gaussian, 1.5 voxels) above ``3 sigma0`` (the
   smoothed background sits near ``1.25 sigma0``), holes filled slice by slice (dark skull, CSF and
   sinuses inside the head are not air), dilated by ``margin`` voxels (partial volume at the scalp);
3. the background is everything else; ``sigma = sqrt(mean(b^2) / 2)`` (``"moments"``, the maximum
   likelihood estimate) or the mode of a Rayleigh density fitted to the histogram of ``b`` near its peak
   (``"mode"``, less sensitive to ghosting and other structured signal in the tail).

Needs air in the image that was not zero-filled: at least ``min_background`` voxels, less than half of
them exactly 0, spread like a Rayleigh distribution (coefficient of variation above 0.45 against the
0.52 of pure noise); :class:`~monai_sr.errors.InputError` otherwise. Multi-coil (non-central chi)
backgrounds make this estimate wrong; the wavelet one does not look at the air.

**Wavelet** (:func:`sigma_from_wavelet`, Donoho & Johnstone 1994). The finest diagonal detail of an
orthonormal Haar transform (``HH`` in 2D, ``HHH`` in 3D: the sum of the 2^d voxels of each block with
alternating signs, divided by ``2^(d/2)``) of white Gaussian noise has standard deviation ``sigma``, while
smooth anatomy contributes almost nothing; ``sigma = median(|HH|) / 0.6745``. The median is taken over
blocks in the head only (block mean above ``3 sigma``, iterated from the estimate over all blocks), where
the Rician noise is close to Gaussian; in the air the Rayleigh noise has a smaller spread and pulls the
estimate down. Anatomy with fine texture pulls it up (a few percent on a 1 mm T1).

**Smaller of the two** (:func:`sigma_smaller_of_two`): the background estimate where there is air, the
wavelet estimate taken in the planes across the slice axis (:func:`noise_slice_axis`: the coarsest axis
of thick slices), and the smaller of them. Both are pushed up by what is not noise (ghosting in the air,
fine texture in the head), rarely down. It is what the denoiser's SURE blend uses
(:mod:`monai_sr.inference.sure`), and what ``ReportNoise("smaller")`` reports beside it.

Both take a 2D or 3D image; the transforms take it channel first and estimate each channel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import StrEnum, look_up_option
from scipy import ndimage

from monai_sr.errors import InputError
from monai_sr.geometry import spacing_from_affine
from monai_sr.meta import INTENSITY_SCALE_KEY
from monai_sr.transforms._common import check_channel_first
from monai_sr.transforms.intensity import robust_max

__all__ = [
    "NoiseMethod",
    "BackgroundStatistic",
    "sigma_from_background",
    "sigma_smaller_of_two",
    "SMALLER_SIGMA_KEY",
    "noise_slice_axis",
    "background_mask",
    "sigma_from_wavelet",
    "haar_finest_diagonal",
    "estimate_noise_sigma",
    "EstimateNoise",
    "EstimateNoised",
    "ReportNoise",
    "NOISE_SIGMA_KEY",
]

logger = logging.getLogger(__name__)

#: Meta key (MetaTensor) and dict-key suffix of the estimate: a list, one ``sigma`` per channel.
NOISE_SIGMA_KEY = "noise_sigma"
#: Meta key of the ``"smaller"`` estimate as ``(sigma, how)`` (:func:`sigma_smaller_of_two`), put there by
#: :class:`ReportNoise` so that the denoiser's SURE blend, the next to need it, does not estimate it again.
SMALLER_SIGMA_KEY = "noise_sigma_smaller"
#: Coefficient of variation of a Rayleigh distribution, ``sqrt(4 / pi - 1)``; a "background" well below it
#: is tissue with signal (Rician with ``A / sigma >~ 1.2``), not air.
_RAYLEIGH_CV = float(np.sqrt(4.0 / np.pi - 1.0))
_MIN_RAYLEIGH_CV = 0.45
#: MAD -> standard deviation of a Gaussian: ``Phi^-1(3/4)``.
_MAD_TO_SIGMA = 0.6744897501960817


class NoiseMethod(StrEnum):
    """How :class:`EstimateNoise` estimates ``sigma``: ``background`` (Rayleigh statistics of the air),
    ``wavelet`` (MAD of the finest Haar diagonal detail) or ``smaller`` (the smaller of the two, the wavelet
    one in the planes across ``slice_axis``: :func:`sigma_smaller_of_two`)."""

    BACKGROUND = "background"
    WAVELET = "wavelet"
    SMALLER = "smaller"

#: Largest voxel-size ratio for which :func:`noise_slice_axis` still calls the slices thin.
THICK_SLICE_RATIO = 1.25


class BackgroundStatistic(StrEnum):
    """Background estimator: ``moments`` (``sqrt(mean(b^2) / 2)``) or ``mode`` (histogram mode of ``b``)."""

    MOMENTS = "moments"
    MODE = "mode"


def _as_spatial(img: np.ndarray | torch.Tensor) -> np.ndarray:
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image (no channel axis), got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def _histogram_mode(values: np.ndarray, hi: float, bins: int = 256) -> float:
    """Mode of ``values`` in ``[0, hi]``: the tallest bin of a lightly smoothed histogram, refined by a
    parabola through it and its neighbours."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, hi))
    c = ndimage.gaussian_filter1d(counts.astype(np.float64), 1.0)
    k = int(np.argmax(c))
    width = edges[1] - edges[0]
    offset = 0.0
    if 0 < k < bins - 1:
        den = c[k - 1] - 2 * c[k] + c[k + 1]
        if den < 0:
            offset = 0.5 * (c[k - 1] - c[k + 1]) / den
    return float(edges[0] + (k + 0.5 + offset) * width)


def background_mask(img: np.ndarray | torch.Tensor, *, margin: int = 3, sigma0: float | None = None) -> np.ndarray:
    """The air of a 2D or 3D magnitude image (see the module docstring, steps 1 and 2): a boolean array of
    ``img``'s shape, True in the background. ``sigma0`` overrides the first guess of step 1."""
    a = _as_spatial(img)
    if sigma0 is None:
        bright = robust_max(a)
        low = a[(a >= 0) & (a <= 0.3 * bright)]
        sigma0 = _histogram_mode(low, 0.3 * bright) if low.size else 0.0
    smooth = ndimage.gaussian_filter(a, 1.5)
    head = smooth > 3.0 * sigma0 if sigma0 > 0 else a > 0
    if a.ndim == 2:
        head = ndimage.binary_fill_holes(head)
    else:
        for k in range(a.shape[2]):
            head[:, :, k] = ndimage.binary_fill_holes(head[:, :, k])
    if margin > 0:
        head = ndimage.binary_dilation(head, iterations=int(margin))
    return ~head


def sigma_from_background(
    img: np.ndarray | torch.Tensor,
    *,
    statistic: str = "moments",
    margin: int = 3,
    min_background: int = 500,
) -> float:
    """``sigma`` of the Rician noise of a 2D or 3D magnitude image from the Rayleigh statistics of its air.

    Args:
        img: ``(X, Y)`` or ``(X, Y, Z)`` magnitude image, any units (``sigma`` comes back in them).
        statistic: :class:`BackgroundStatistic`: ``"moments"`` or ``"mode"``.
        margin: voxels the head is dilated by before the rest counts as air.
        min_background: fewest air voxels to estimate from; :class:`InputError` with fewer.
    """
    stat = look_up_option(statistic, BackgroundStatistic)
    a = _as_spatial(img)
    b = a[background_mask(a, margin=margin)].astype(np.float64)
    if b.size < min_background:
        raise InputError(
            f"only {b.size} background (air) voxels found, fewer than {min_background}: the background noise "
            "estimate needs air around the anatomy (use the wavelet method instead)"
        )
    zeros = float(np.mean(b == 0))
    if zeros > 0.5:  # Rayleigh noise is exactly 0 with probability 0
        raise InputError(
            f"{100 * zeros:.0f}% of the air is exactly zero: it was masked (zero-filled) by the scanner or a "
            "processing step, so there is no noise left in it to measure (use the wavelet method instead)"
        )
    mean = float(b.mean())
    if mean > 0 and b.std() / mean < _MIN_RAYLEIGH_CV:
        raise InputError(
            f"the darkest region found has a coefficient of variation of {b.std() / mean:.2f}, not the "
            f"{_RAYLEIGH_CV:.2f} of noise-only air (Rayleigh): it holds signal, so there is no air to estimate the "
            "noise from (use the wavelet method instead)"
        )
    if stat == BackgroundStatistic.MOMENTS:
        return float(np.sqrt(np.mean(b * b) / 2.0))
    # Rayleigh: mode = sigma; the histogram spans 4x the moment estimate (99.97% of a Rayleigh).
    guess = float(np.sqrt(np.mean(b * b) / 2.0))
    return _rayleigh_mode(b, guess) if guess > 0 else 0.0


def _rayleigh_mode(b: np.ndarray, guess: float) -> float:
    """Mode of the Rayleigh density fitted to the histogram of ``b`` around its peak.

    ``log p(x) = log x - x^2 / (2 sigma^2) + c``: a weighted least-squares line of ``log(count / x)``
    against ``x^2`` over the bins in ``[0.25, 2] x guess`` gives ``sigma`` (the mode) from its slope. Only
    the peak region counts, so a heavy tail (ghosting, structured signal in the air) barely moves it.
    """
    bins = int(np.clip(2.0 * b.size ** (1.0 / 3.0), 20, 200))
    counts, edges = np.histogram(b, bins=bins, range=(0.0, 2.5 * guess))
    x = 0.5 * (edges[:-1] + edges[1:])
    keep = (counts > 0) & (x >= 0.25 * guess) & (x <= 2.0 * guess)
    if keep.sum() < 3:
        return guess
    slope = np.polyfit(x[keep] ** 2, np.log(counts[keep] / x[keep]), 1, w=np.sqrt(counts[keep]))[0]
    return float(np.sqrt(-0.5 / slope)) if slope < 0 else guess


def haar_finest_diagonal(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """The finest diagonal detail band of the orthonormal Haar transform of a 2D or 3D image.

    2D: ``(x00 - x01 - x10 + x11) / 2`` over each 2x2 block; 3D: the 2x2x2 block's voxels with the sign
    ``(-1)^(i+j+k)``, summed and divided by ``2 sqrt(2)``. An odd trailing row/column/slice is dropped.
    Returns ``(X // 2, Y // 2[, Z // 2])`` float64; white noise of standard deviation ``sigma`` gives a band
    of standard deviation ``sigma`` (PyWavelets' ``dwtn(x, "haar")["dd"]`` / ``["ddd"]``, up to sign).
    """
    a = _as_spatial(img).astype(np.float64)
    even = tuple(slice(0, n - n % 2) for n in a.shape)
    a = a[even]
    if min(a.shape) < 2:
        raise ValueError(f"an image of shape {img.shape} has no 2x2 block for a Haar transform")
    out = np.zeros(tuple(n // 2 for n in a.shape))
    for offs in np.ndindex(*(2,) * a.ndim):
        sign = -1.0 if sum(offs) % 2 else 1.0
        out += sign * a[tuple(slice(o, None, 2) for o in offs)]
    return out / 2.0 ** (a.ndim / 2.0)


def _block_means(a: np.ndarray) -> np.ndarray:
    """Means of the 2x2(x2) blocks of ``a`` (odd trailing rows dropped): the grid of its Haar bands."""
    even = tuple(slice(0, n - n % 2) for n in a.shape)
    blocks = a[even].astype(np.float64)
    for ax in range(a.ndim):
        blocks = blocks.reshape(blocks.shape[:ax] + (blocks.shape[ax] // 2, 2) + blocks.shape[ax + 1 :]).mean(axis=ax + 1)
    return blocks


def sigma_from_wavelet(
    img: np.ndarray | torch.Tensor, *, foreground: bool = True, iterations: int = 2, slice_axis: int | None = None
) -> float:
    """``sigma`` of the noise of a 2D or 3D image: ``median(|HH|) / 0.6745`` of the finest Haar diagonal.

    Args:
        img: ``(X, Y)`` or ``(X, Y, Z)``, any units (``sigma`` comes back in them).
        foreground: take the median over blocks whose mean exceeds ``3 sigma`` only (the head, where Rician
            noise is near Gaussian), refining ``sigma`` ``iterations`` times from the all-block estimate;
            False: all blocks (the classic estimator, for Gaussian noise).
        slice_axis: a 3D image only: take the 2D ``HH`` band of each slice along this axis instead of the
            3D ``HHH`` band (thick slices, a single slice ``(X, Y, 1)``: anatomy changes too much from one
            slice to the next for a 3D block to cancel it).
    """
    a = _as_spatial(img)
    if slice_axis is not None and a.ndim == 3:
        planes = [np.take(a, k, axis=int(slice_axis)) for k in range(a.shape[int(slice_axis)])]
        hh = np.concatenate([np.abs(haar_finest_diagonal(p)).ravel() for p in planes])
        blocks = np.concatenate([_block_means(p).ravel() for p in planes])
    else:
        hh = np.abs(haar_finest_diagonal(a)).ravel()
        blocks = _block_means(a).ravel()
    sigma = float(np.median(hh)) / _MAD_TO_SIGMA
    if not foreground:
        return sigma
    for _ in range(max(int(iterations), 0)):
        fg = hh[blocks > 3.0 * sigma]
        if fg.size < 100:  # hardly any signal: keep the all-block estimate
            break
        sigma = float(np.median(fg)) / _MAD_TO_SIGMA
    return sigma


def noise_slice_axis(spacing: Any) -> int:
    """The axis whose slices the wavelet estimate of :func:`sigma_smaller_of_two` is taken across, for
    voxels of ``spacing`` (mm, 3 values): the coarsest axis when it is more than
    :data:`THICK_SLICE_RATIO` times the finest (thick slices), else axis 2."""
    sp = np.asarray(spacing, dtype=np.float64)
    return int(np.argmax(sp)) if sp.max() > THICK_SLICE_RATIO * sp.min() else 2


def sigma_smaller_of_two(img: np.ndarray | torch.Tensor, slice_axis: int | None = None) -> tuple[float, str]:
    """The smaller of the background estimate (where there is air to measure) and the wavelet estimate in
    the planes across ``slice_axis`` (None: a 3D wavelet band), and which one it was: ``(sigma, how)`` with
    ``how`` e.g. ``"in-plane wavelet (smaller of two estimates)"``. Units of ``img``."""
    estimates = {("in-plane wavelet" if slice_axis is not None else "wavelet"): sigma_from_wavelet(img, slice_axis=slice_axis)}
    try:
        estimates["background"] = sigma_from_background(img)
    except InputError:
        pass  # no air to measure (cropped, masked or zero-filled background)
    method = min(estimates, key=estimates.get)
    return float(estimates[method]), method + (" (smaller of two estimates)" if len(estimates) > 1 else "")


def estimate_noise_sigma(img: np.ndarray | torch.Tensor, method: str = "background", **kwargs: Any) -> float:
    """``sigma`` of a 2D or 3D image by :class:`NoiseMethod` ``method``; ``kwargs`` go to
    :func:`sigma_from_background`, :func:`sigma_from_wavelet` or :func:`sigma_smaller_of_two`."""
    kind = look_up_option(method, NoiseMethod)
    if kind == NoiseMethod.BACKGROUND:
        return sigma_from_background(img, **kwargs)
    if kind == NoiseMethod.SMALLER:
        return sigma_smaller_of_two(img, **kwargs)[0]
    return sigma_from_wavelet(img, **kwargs)


class EstimateNoise:
    """Estimate the noise ``sigma`` of each channel of a channel-first image ``(C, X, Y[, Z])``.

    The image comes back unchanged (same object for a plain array or tensor); a MetaTensor comes back
    with ``meta["noise_sigma"] = [sigma per channel]`` and ``meta["noise_method"]``. :attr:`sigma` holds the
    last estimates. ``relative=True`` divides each ``sigma`` by the channel's
    :func:`~monai_sr.transforms.intensity.robust_max` (a fraction of the bright signal, the unit of the
    issue's "5% noise").

    Args:
        method: :class:`NoiseMethod`, ``"background"`` or ``"wavelet"``.
        relative: report ``sigma / robust_max`` instead of image units.
        kwargs: passed to :func:`sigma_from_background` / :func:`sigma_from_wavelet`.

    Examples::

        est = EstimateNoise("wavelet", relative=True)
        img = est(img)                  # img.meta["noise_sigma"] == est.sigma, e.g. [0.049]
    """

    def __init__(self, method: str = "background", *, relative: bool = False, **kwargs: Any) -> None:
        self.method = look_up_option(method, NoiseMethod)
        self.relative = bool(relative)
        self.kwargs = kwargs
        self.sigma: list[float] | None = None

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        check_channel_first(img, type(self).__name__)
        sigmas = []
        for c in range(img.shape[0]):
            s = estimate_noise_sigma(img[c], self.method, **self.kwargs)
            sigmas.append(s / robust_max(img[c]) if self.relative else s)
        self.sigma = sigmas
        if isinstance(img, MetaTensor):
            img.meta[NOISE_SIGMA_KEY] = list(sigmas)
            img.meta["noise_method"] = str(self.method) + (" (fraction of robust max)" if self.relative else "")
        return img


class EstimateNoised(MapTransform):
    """Dictionary twin of :class:`EstimateNoise` (same arguments after ``keys``); also puts the estimates
    at ``d[f"{key}_{postfix}"]`` (a list per channel), which plain tensors cannot carry in meta."""

    def __init__(
        self, keys: KeysCollection, *args: Any, postfix: str = NOISE_SIGMA_KEY, allow_missing_keys: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = EstimateNoise(*args, **kwargs)
        self.postfix = postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
            d[f"{key}_{self.postfix}"] = list(self.transform.sigma or [])
        return d


class ReportNoise:
    """An ``adapt`` hook of :func:`monai_sr.pipeline.enhance` that estimates and reports the input's noise.

    ``enhance`` calls ``adapt(image, network)`` with the whole normalised input (``(1, X, Y, Z)``,
    intensities divided by the robust maximum, so ``sigma`` comes out as a fraction of the bright signal,
    the unit of the issue's "Rician 5%"). The network is returned unchanged; the estimate is logged, put
    in ``image.meta["noise_sigma"]``, added to enhance's notes (``image.meta["monai_sr_notes"]``, shown in
    the result's summary and by the CLI) and appended to :attr:`records` (one dict per case:
    ``{"source", "sigma", "method"}``). The ``method`` estimate falls back to ``fallback`` when it cannot
    be made (e.g. no air in the field of view for ``"background"``). ``"smaller"`` takes its wavelet
    estimate across the slice axis the image's affine gives (:func:`noise_slice_axis`), the same sigma
    the denoiser's SURE blend then uses and notes.

    ``sigma`` (the input's own intensity units, e.g. measured on a noise-only scan) skips the estimate:
    it is divided by what ``enhance`` divided the input by (``image.meta[INTENSITY_SCALE_KEY]``) and, for
    the SURE blend, put where ``"smaller"`` puts its estimate; the notes say it was given.

    Note that with an ``adapt`` hook ``enhance`` reads the whole input volume instead of streaming it.

    Examples::

        report = ReportNoise()
        enhance_cases(cases, out, network=net, adapt=report)
        print(report.summary())        # one line per case: "case.nii.gz: noise sigma 4.9% of the bright signal (background)"
    """

    def __init__(self, method: str = "background", *, fallback: str | None = "wavelet", sigma: float | None = None) -> None:
        self.method = look_up_option(method, NoiseMethod)
        self.fallback = None if fallback is None else look_up_option(fallback, NoiseMethod)
        if sigma is not None and not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0):
            raise InputError(f"noise_sigma must be a positive number in the input's intensity units (or null to estimate it), got {sigma!r}")
        self.given = None if sigma is None else float(sigma)
        self.records: list[dict[str, Any]] = []

    def __call__(self, image: torch.Tensor, network: torch.nn.Module) -> torch.nn.Module:
        vol = image[0] if image.ndim == 4 else image
        method = self.method
        try:
            if self.given is not None:
                scale = image.meta.get(INTENSITY_SCALE_KEY) if isinstance(image, MetaTensor) else None
                if scale is None:
                    raise ValueError("a given noise sigma needs the input's normalisation (meta key "
                                     f"{INTENSITY_SCALE_KEY!r}, set by monai_sr.pipeline.enhance and monai_sr.enhance)")
                sigma = self.given / float(scale)
                method = f"given: {self.given:g} in the input's units"
                image.meta[SMALLER_SIGMA_KEY] = (float(sigma), method)
            elif method == NoiseMethod.SMALLER:
                axis = noise_slice_axis(spacing_from_affine(np.asarray(image.affine, np.float64))) if isinstance(image, MetaTensor) else 2
                sigma, how = sigma_smaller_of_two(vol, axis)
                method = f"smaller: {how.removesuffix(' (smaller of two estimates)')}"
                if isinstance(image, MetaTensor):
                    image.meta[SMALLER_SIGMA_KEY] = (float(sigma), how)
            else:
                sigma = estimate_noise_sigma(vol, method)
        except InputError as exc:
            if self.fallback is None:
                raise
            logger.warning("noise estimate (%s) not possible: %s; using %s", method, exc, self.fallback)
            method = self.fallback
            sigma = estimate_noise_sigma(vol, method)
        source = str(image.meta.get("filename_or_obj", "")) if isinstance(image, MetaTensor) else ""
        if isinstance(image, MetaTensor):
            image.meta[NOISE_SIGMA_KEY] = [sigma]
            image.meta["noise_method"] = f"{method} (fraction of robust max)"
        self.records.append({"source": source, "sigma": float(sigma), "method": str(method)})
        from monai_sr.meta import NOTES_KEY  # where enhance collects notes

        said = "estimated noise sigma" if self.given is None else "noise sigma"
        if isinstance(image, MetaTensor) and isinstance(image.meta.get(NOTES_KEY), list):
            image.meta[NOTES_KEY].append(f"{said} {100 * sigma:.2f}% of the bright signal ({method})")
        logger.info("%s: %s %.2f%% of the bright signal (%s)", source or "input", said, 100 * sigma, method)
        return network

    def summary(self) -> str:
        """One line per case reported so far."""
        return "\n".join(
            f"{r['source'] or 'input'}: noise sigma {100 * r['sigma']:.2f}% of the bright signal ({r['method']})"
            for r in self.records
        )
