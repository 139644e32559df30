"""A denoiser guarded by Stein's unbiased risk estimate: network, nlmeans and the input blended per volume.

A network denoiser trained on a few templates is beaten, on scans unlike them, by a classical method given
the right noise level (the mri_denoise_dncnn bundle measured it on a 0.195 mm shoulder slice). Which of the
two wins on a given scan, and in which mixture, can be estimated from that scan alone. For Gaussian noise of
standard deviation ``sigma``, Stein's unbiased risk estimate (Stein, Ann. Stat. 1981) of the squared error
of any (weakly differentiable) estimate ``h(y)`` of the clean image from the noisy ``y`` (``N`` voxels) is

    SURE(h) = ||y - h(y)||^2 - N sigma^2 + 2 sigma^2 div h(y),

and the divergence of a black box is estimated by Monte Carlo (Ramani, Blu & Unser, IEEE TIP 2008):
``div h(y) ~ b . (h(y + eps b) - h(y)) / eps`` with ``b ~ N(0, I)``. SURE is quadratic in the weights of
an affine mixture ``h = y + a (f - y) + c (g - y)`` of the network ``f``, nlmeans ``g`` (DIPY's, Rician,
given the same ``sigma``) and the input ``y``, so the SURE-optimal mixture is a 2 x 2 least-squares
problem; it is kept convex (``a, c >= 0``, ``a + c <= 1``).

Choices, and why:

* ``sigma`` is the smaller of the background (Rayleigh) and the in-plane wavelet estimates
  (:func:`monai_sr.transforms.noise.sigma_smaller_of_two`): both are pushed up by what is not noise (ghosting in the air, fine
  texture in the head), rarely down, and an overestimate biases SURE toward the smoother candidate.
* Magnitude noise is Rician; above ~3 ``sigma`` of signal it is close to Gaussian with ``sigma``, so the
  sums run over the voxels whose lightly smoothed input exceeds ``3 sigma`` (the air is not scored).
* The divergence is measured on the whole volume with one more pass of each candidate on the perturbed
  input (the unperturbed pass is the result itself). A cheaper crop is biased: the divergence density
  differs between the brain and the scalp (0.19 in a central crop against 0.26 over the scored voxels
  of a 1 mm T1 at Rician 5%), and neither candidate is local (the CBAM attention of the DnCNN pools over
  the whole slice; DIPY's nlmeans differs inside a crop by up to 10% of the signal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from scipy import ndimage
from torch import nn

from monai_sr import geometry
from monai_sr.meta import NOTES_KEY
from monai_sr.transforms.noise import noise_slice_axis, sigma_smaller_of_two

__all__ = ["SureBlendInferer", "SureDecision", "sure_mask", "sure_weights", "nlmeans_denoise"]

#: DIPY's nlmeans algorithms (:func:`nlmeans_denoise`).
NLMEANS_METHODS = ("blockwise", "classic")
#: Fewest scored voxels (signal above 3 sigma) for a SURE decision; below it the network runs alone.
MIN_SURE_VOXELS = 1000


@dataclass
class SureDecision:
    """What :class:`SureBlendInferer` chose for one volume.

    ``weights``: (network, nlmeans, input), summing to 1. ``risk``: SURE per scored voxel of each candidate
    and of the blend, as a fraction of the bright signal squared (the unit of the normalised volume).
    """

    sigma: float
    sigma_method: str
    weights: tuple[float, float, float]
    risk: dict[str, float] = field(default_factory=dict)
    voxels: int = 0
    skipped: str = ""

    def note(self) -> str:
        """One line for the notes of ``monai-sr enhance``."""
        if self.skipped:
            return f"SURE blend skipped ({self.skipped}): the network's result alone"
        w = self.weights
        rms = ", ".join(f"{k} {100 * np.sqrt(max(v, 0.0)):.2f}%" for k, v in self.risk.items())
        return (f"SURE blend (noise sigma {100 * self.sigma:.2f}% of the bright signal, {self.sigma_method}): "
                f"{w[0]:.2f} network + {w[1]:.2f} nlmeans + {w[2]:.2f} input; estimated RMS error (SURE, of the "
                f"bright signal, {self.voxels} voxels): {rms}")


def sure_mask(vol: np.ndarray, sigma: float) -> np.ndarray:
    """Voxels of ``vol`` where Rician noise is close to Gaussian: the lightly smoothed (Gaussian, 1 voxel
    in-plane) magnitude above ``3 sigma``. Boolean, ``vol``'s shape."""
    smooth = ndimage.gaussian_filter(np.asarray(vol, np.float32), (1.0, 1.0, 0.0))
    return smooth > 3.0 * sigma


def nlmeans_denoise(vol: np.ndarray, sigma: float, *, method: str = "blockwise", threads: int | None = None) -> np.ndarray:
    """DIPY's non-local means of a magnitude volume ``(X, Y, Z)`` given ``sigma``, Rician bias corrected
    (patch radius 1, block radius 5). float32, ``vol``'s shape.

    ``method``: DIPY's ``"blockwise"`` (its default since 1.12) or ``"classic"`` (what DIPY's ``nlmeans``
    was before 1.12: about 30x slower, and 1.6 dB closer to the clean image on a Colin27 slab at Rician
    5 %). ``threads`` (None: 1 for blockwise, torch's for classic): DIPY 1.12.1's blockwise nlmeans gives
    different voxels from run to run on two threads (a race: 16 of 11,520 voxels of a 40 x 48 x 6 crop
    off by up to 5 % of the bright signal), which SURE's Monte Carlo divergence, a difference of two
    nlmeans runs, would amplify by ``1 / (eps sigma)``; on one thread, and classic on any number, it is
    repeatable."""
    from dipy.denoise.nlmeans import nlmeans  # a second of imports: only where it runs

    if method not in NLMEANS_METHODS:
        raise ValueError(f"nlmeans method must be one of {NLMEANS_METHODS}, got {method!r}")
    if threads is None:
        threads = 1 if method == "blockwise" else torch.get_num_threads()
    out = nlmeans(np.asarray(vol, np.float64), sigma=float(sigma), rician=True, num_threads=int(threads), method=method)
    return np.asarray(out, np.float32)


def _risk(a: float, c: float, g: dict[str, float], n: int, s2: float) -> float:
    """SURE of ``y + a u + c v`` per voxel from the Gram terms ``g`` (uu, uv, vv, du, dv)."""
    sq = a * a * g["uu"] + 2 * a * c * g["uv"] + c * c * g["vv"]
    return (sq - n * s2 + 2 * s2 * (n + a * (g["du"] - n) + c * (g["dv"] - n))) / n


def sure_weights(gram: dict[str, float], n: int, sigma: float) -> tuple[float, float]:
    """The convex weights ``(a, c)`` (``a, c >= 0``, ``a + c <= 1``) of ``h = y + a u + c v`` minimising SURE.

    ``gram``: over the ``n`` scored voxels, ``uu = |f - y|^2``, ``uv = (f - y).(g - y)``, ``vv = |g - y|^2``
    and the divergences ``du = div f``, ``dv = div g`` (sums). The unconstrained minimum solves a 2 x 2
    system; when it leaves the triangle the minimum lies on an edge, each a 1D quadratic.
    """
    s2 = float(sigma) ** 2
    uu, uv, vv = gram["uu"], gram["uv"], gram["vv"]
    pu, pv = -s2 * (gram["du"] - n), -s2 * (gram["dv"] - n)  # minus half the linear terms
    candidates = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    det = uu * vv - uv * uv
    if det > 1e-12 * max(uu * vv, 1e-30):
        candidates.append(((pu * vv - pv * uv) / det, (pv * uu - pu * uv) / det))
    if uu > 0:
        candidates.append((pu / uu, 0.0))  # c = 0
    if vv > 0:
        candidates.append((0.0, pv / vv))  # a = 0
    ww = uu - 2 * uv + vv  # a + c = 1: h = g + a (f - g)
    if ww > 0:
        a = (pu - pv - (uv - vv)) / ww
        candidates.append((a, 1.0 - a))
    feasible = [(a, c) for a, c in candidates if a >= -1e-9 and c >= -1e-9 and a + c <= 1 + 1e-9]
    a, c = min(feasible, key=lambda ac: _risk(ac[0], ac[1], gram, n, s2))
    return float(np.clip(a, 0, 1)), float(np.clip(c, 0, 1 - np.clip(a, 0, 1)))


class SureBlendInferer(Inferer):
    """Wrap a denoising inferer (same grid in and out) so that each volume's result is the SURE-optimal
    convex mixture of the network's result, DIPY nlmeans and the input (see the module docstring).

    Takes what ``inferer`` takes (a channel-first ``(1, X, Y, Z)`` MetaTensor, intensities divided by the
    robust maximum as :func:`monai_sr.pipeline.enhance` hands them) and returns the same shape and
    geometry. Costs the inner inferer once more (on the perturbed input) and nlmeans twice. The decision goes to :attr:`last_decision` and, when the input carries a notes list,
    to its notes.

    Args:
        inferer: the denoiser's inferer (e.g. :class:`~monai_sr.inference.PlaneMeanInferer`).
        eps: the Monte Carlo step, as a fraction of ``sigma``.
        seed: the probe ``b``'s random seed (a fixed seed: the same input gives the same result).
        nlmeans_method: DIPY's nlmeans algorithm of the nlmeans candidate, ``"blockwise"`` or ``"classic"``
            (:func:`nlmeans_denoise`).
    """

    def __init__(self, inferer: Inferer, *, eps: float = 0.01, seed: int = 0, nlmeans_method: str = "blockwise") -> None:
        super().__init__()
        if nlmeans_method not in NLMEANS_METHODS:
            raise ValueError(f"nlmeans_method must be one of {NLMEANS_METHODS}, got {nlmeans_method!r}")
        self.inferer = inferer
        self.eps, self.seed = float(eps), int(seed)
        self.nlmeans_method = nlmeans_method
        self.last_decision: SureDecision | None = None

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        """The inner inferer's scale; the blend needs one grid, so scale 1."""
        return self.inferer.volume_scale(network)  # type: ignore[attr-defined]

    def __call__(  # type: ignore[override]
        self, inputs: MetaTensor, network: nn.Module, progress: Callable[[int, int], None] | None = None, **kwargs: Any
    ) -> MetaTensor:
        f_img = self.inferer(inputs, network, progress=progress)
        y = inputs[0].detach().cpu().numpy().astype(np.float32)
        f = f_img[0].detach().cpu().numpy().astype(np.float32)
        spacing = geometry.spacing_from_affine(np.asarray(inputs.affine, dtype=np.float64))
        slice_axis = noise_slice_axis(spacing)
        sigma, how = sigma_smaller_of_two(y, slice_axis)
        mask = sure_mask(y, sigma) if sigma > 0 else np.zeros(y.shape, bool)
        n = int(mask.sum())
        if sigma <= 0 or n < MIN_SURE_VOXELS:
            why = "no noise measured" if sigma <= 0 else f"only {n} voxels of signal above 3 sigma"
            return self._done(inputs, f_img, SureDecision(sigma, how, (1.0, 0.0, 0.0), skipped=why))
        g = nlmeans_denoise(y, sigma, method=self.nlmeans_method)

        probe = np.random.default_rng(self.seed).standard_normal(y.shape).astype(np.float32)
        step = self.eps * sigma
        perturbed = y + step * probe
        f_b = self.inferer(MetaTensor(torch.from_numpy(perturbed)[None], affine=inputs.affine.clone()), network)
        pb = probe[mask].astype(np.float64)
        div_f = float(pb @ (f_b[0].detach().cpu().numpy()[mask] - f[mask]).astype(np.float64)) / step / n
        del f_b
        div_g = float(pb @ (nlmeans_denoise(perturbed, sigma, method=self.nlmeans_method)[mask] - g[mask]).astype(np.float64)) / step / n
        del perturbed, pb

        u = (f[mask] - y[mask]).astype(np.float64)
        v = (g[mask] - y[mask]).astype(np.float64)
        gram = {"uu": float(u @ u), "uv": float(u @ v), "vv": float(v @ v), "du": div_f * n, "dv": div_g * n}
        del u, v
        a, c = sure_weights(gram, n, sigma)
        s2 = sigma * sigma
        risk = {"network": _risk(1, 0, gram, n, s2), "nlmeans": _risk(0, 1, gram, n, s2),
                "input": _risk(0, 0, gram, n, s2), "blend": _risk(a, c, gram, n, s2)}
        out = y + a * (f - y) + c * (g - y)
        result = MetaTensor(torch.from_numpy(out[None].astype(np.float32)), affine=f_img.affine.clone(),
                            meta={k: v for k, v in f_img.meta.items() if k != "affine"})
        return self._done(inputs, result, SureDecision(sigma, how, (a, c, 1.0 - a - c), risk, n))

    def _done(self, inputs: MetaTensor, result: MetaTensor, decision: SureDecision) -> MetaTensor:
        self.last_decision = decision
        if isinstance(inputs, MetaTensor) and isinstance(inputs.meta.get(NOTES_KEY), list):
            inputs.meta[NOTES_KEY].append(decision.note())
        return result
