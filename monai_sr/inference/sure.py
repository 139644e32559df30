"""A denoiser guarded by Stein's unbiased risk estimate: network, nlmeans and the input blended per volume.

A network denoiser trained on a few templates is beaten, on scans unlike them, by a classical method given
the right noise level (the mri_denoise_dncnn bundle measured it on a 0.195 mm shoulder slice). Which of the
two wins on a given scan, and in which mixture, can be estimated from that scan alone. For Gaussian noise of
standard deviation ``sigma``, Stein's unbiased risk estimate (Stein, Ann. Stat. 1981) of the squared error
of any (weakly differentiable) estimate ``h(y)`` of the clean image from the noisy ``y`` (``N`` voxels) is

    SURE(h) = ||y - h(y)||^2 - N sigma^2 + 2 sigma^2 div h(y),

and the divergence of a black box is estimated by Monte Carlo (Ramani, Blu & Unser, IEEE TIP 2008):
``div h(y) ~ b . (h(y + eps b) - h(y)) / eps`` with ``b ~ N(0, I)``. SURE is quadratic in the weights of
an affine mixture ``h = y + sum_k w_k (f_k - y)`` of the candidates ``f_k`` -- the network, DIPY's
nlmeans (Rician, given the same ``sigma``; its blockwise and its classic algorithm, two candidates whose
errors differ) -- and the input ``y``, so the SURE-optimal mixture is a small least-squares problem; it is
kept convex (``w_k >= 0``, ``sum w <= 1``).

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
  the whole slice; DIPY's nlmeans differs inside a crop by up to 10% of the signal). Classic nlmeans
  alone computes each voxel from the whole input, so its perturbed pass is computed on the scored voxels
  only (DIPY's ``mask``), exactly.
* Below the scored signal SURE cannot judge, and a blend fitted on the bright voxels is applied to dim
  tissue it never saw: there (the smoothed signal below 4 sigma, all of it below 2) the network's share
  goes to the classic nlmeans candidate, which models the Rician bias (``dim_fallback``). Found on a
  0.195 mm shoulder slice at Rician 8 %, two thirds of its tissue below 3 sigma: SURE gave the network half
  the weight and the blend lost 1.04 dB to classic nlmeans; with the fallback it is 0.06 dB above it.
  Weights fitted by Gaussian SURE on the dim voxels themselves were tried and lost on most cases.
* One weight per candidate for the whole volume. Weights per band of a Gaussian split were tried
  (``benchmarks/sure_variants.py``) and lost 0.4-1.1 dB: SURE is unbiased for Gaussian noise only, and
  finer weights fit its errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
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
from monai_sr.transforms.noise import SMALLER_SIGMA_KEY, noise_slice_axis, sigma_smaller_of_two

__all__ = ["SureBlendInferer", "SureDecision", "dim_ramp", "nlmeans_denoise", "smoothed_signal", "sure_mask", "sure_risk",
           "sure_weights"]

#: DIPY's nlmeans algorithms (:func:`nlmeans_denoise`).
NLMEANS_METHODS = ("blockwise", "classic")
#: The search radius of the blend's classic nlmeans candidate. 3, not DIPY's 5: classic nlmeans costs the
#: cube of (2 r + 1), and on six real held-out scans at Rician 5 % the three-candidate blend scored the same
#: with either (mean -0.01 dB, each case within 0.1 dB) at about a quarter of classic's time. (The blockwise
#: candidate keeps DIPY's default for it, 2.)
CLASSIC_BLOCK_RADIUS = 3
#: Fewest scored voxels (signal above 3 sigma) for a SURE decision; below it the network runs alone.
MIN_SURE_VOXELS = 1000
#: Where the network's share goes to the classic nlmeans candidate (:class:`SureBlendInferer`'s
#: ``dim_fallback``): all of it below ``DIM_RAMP[0]`` sigma of lightly smoothed signal, none of it above
#: ``DIM_RAMP[1]`` sigma, linearly between. SURE scores the voxels above 3 sigma only.
DIM_RAMP = (2.0, 4.0)


@dataclass
class SureDecision:
    """What :class:`SureBlendInferer` chose for one volume.

    ``weights``: candidate name -> weight, the network first and ``"input"`` last, summing to 1 (the
    nlmeans candidates are named ``"nlmeans blockwise"`` and ``"nlmeans classic"``). ``risk``: SURE per
    scored voxel of each candidate and of the blend, as a fraction of the bright signal squared (the unit
    of the normalised volume). ``dim_fallback``: the fraction of the voxels where the dim fallback gave
    some of the network's share to classic nlmeans (0 when it is off or the network has no weight).
    """

    sigma: float
    sigma_method: str
    weights: dict[str, float]
    risk: dict[str, float] = field(default_factory=dict)
    voxels: int = 0
    skipped: str = ""
    dim_fallback: float = 0.0

    def note(self) -> str:
        """One line for the notes of ``monai-sr enhance``."""
        if self.skipped:
            return f"SURE blend skipped ({self.skipped}): the network's result alone"
        mix = " + ".join(f"{w:.2f} {k}" for k, w in self.weights.items())
        rms = ", ".join(f"{k} {100 * np.sqrt(max(v, 0.0)):.2f}%" for k, v in self.risk.items())
        dim = (f"; below {DIM_RAMP[1]:g} sigma of signal ({100 * self.dim_fallback:.0f}% of the voxels) the network's "
               f"share goes to nlmeans classic (all of it below {DIM_RAMP[0]:g} sigma)") if self.dim_fallback > 0 else ""
        return (f"SURE blend (noise sigma {100 * self.sigma:.2f}% of the bright signal, {self.sigma_method}): "
                f"{mix}; estimated RMS error (SURE, of the bright signal, {self.voxels} voxels): {rms}{dim}")


def smoothed_signal(vol: np.ndarray) -> np.ndarray:
    """``vol`` lightly smoothed (Gaussian, 1 voxel in-plane, none across slices): the signal level that
    :func:`sure_mask` and the dim fallback compare with sigma. float32, ``vol``'s shape."""
    return ndimage.gaussian_filter(np.asarray(vol, np.float32), (1.0, 1.0, 0.0))


def sure_mask(vol: np.ndarray, sigma: float, smooth: np.ndarray | None = None) -> np.ndarray:
    """Voxels of ``vol`` where Rician noise is close to Gaussian: the :func:`smoothed_signal` (given as
    ``smooth`` when already computed) above ``3 sigma``. Boolean, ``vol``'s shape."""
    return (smoothed_signal(vol) if smooth is None else smooth) > 3.0 * sigma


def dim_ramp(smooth: np.ndarray, sigma: float, ramp: Sequence[float] = DIM_RAMP) -> np.ndarray:
    """The share of the network's weight it keeps per voxel under the dim fallback: 0 where ``smooth``
    (:func:`smoothed_signal`) is below ``ramp[0] sigma``, 1 above ``ramp[1] sigma``, linear between.
    float32, ``smooth``'s shape."""
    lo, hi = float(ramp[0]) * sigma, float(ramp[1]) * sigma
    return np.clip((smooth - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def nlmeans_denoise(vol: np.ndarray, sigma: float, *, method: str = "blockwise", threads: int | None = None,
                    block_radius: int | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """DIPY's non-local means of a magnitude volume ``(X, Y, Z)`` given ``sigma``, Rician bias corrected
    (patch radius 1; ``block_radius``, the search radius: None for DIPY's default, 2 for blockwise and 5
    for classic). float32, ``vol``'s shape.

    ``method``: DIPY's ``"blockwise"`` (its default since 1.12) or ``"classic"`` (what DIPY's ``nlmeans``
    was before 1.12: about 30x slower, and 1.6 dB closer to the clean image on a Colin27 slab at Rician
    5 %). ``threads`` (None: 1 for blockwise, torch's for classic): DIPY 1.12.1's blockwise nlmeans gives
    different voxels from run to run on two threads (a race: 16 of 11,520 voxels of a 40 x 48 x 6 crop
    off by up to 5 % of the bright signal), which SURE's Monte Carlo divergence, a difference of two
    nlmeans runs, would amplify by ``1 / (eps sigma)``; on one thread, and classic on any number, it is
    repeatable. ``mask`` (boolean, ``vol``'s shape; classic only): only those voxels are computed, the
    rest are 0; classic computes each voxel from the whole input, so inside the mask the result is the
    unmasked one exactly, in time proportional to the mask (blockwise's blocks straddle a mask's edge:
    its voxels there change, so it is refused)."""
    from dipy.denoise.nlmeans import nlmeans  # a second of imports: only where it runs

    if method not in NLMEANS_METHODS:
        raise ValueError(f"nlmeans method must be one of {NLMEANS_METHODS}, got {method!r}")
    if mask is not None and method != "classic":
        raise ValueError("a mask is only exact for classic nlmeans (blockwise changes the voxels near its edge)")
    if threads is None:
        threads = 1 if method == "blockwise" else torch.get_num_threads()
    out = nlmeans(np.asarray(vol, np.float64), sigma=float(sigma), rician=True, num_threads=int(threads), method=method,
                  patch_radius=1, block_radius=None if block_radius is None else int(block_radius),
                  mask=None if mask is None else np.asarray(mask, bool))
    return np.asarray(out, np.float32)


def sure_risk(w: np.ndarray, gram: np.ndarray, div: np.ndarray, n: int, sigma: float) -> float:
    """SURE per voxel of the mixture ``h = y + sum_k w_k (f_k - y)``.

    ``gram``: ``(K, K)``, ``(f_j - y).(f_k - y)`` over the ``n`` scored voxels; ``div``: ``(K,)``, the
    divergence ``sum_i d(f_k)_i / dy_i`` over them. ``w = 0`` is the input itself (risk ``sigma^2``)."""
    w = np.asarray(w, np.float64)
    s2 = float(sigma) ** 2
    return float((w @ gram @ w - n * s2 + 2 * s2 * (n + w @ (np.asarray(div, np.float64) - n))) / n)


def sure_weights(gram: np.ndarray, div: np.ndarray, n: int, sigma: float) -> np.ndarray:
    """The convex weights (``w_k >= 0``, ``sum w <= 1``; the input takes the rest) of ``h = y + sum_k w_k
    (f_k - y)`` minimising :func:`sure_risk`. ``(K,)`` float64.

    SURE is a convex quadratic in ``w``, so its minimum over the simplex is the KKT point of one active
    set: for each subset of candidates, the unconstrained minimum on it and the minimum on its face
    ``sum w = 1`` are solved (small linear systems; ``K`` is 2 or 3 here, so at most 14 of them) and the
    feasible one of least risk is kept (the input alone, ``w = 0``, is always feasible)."""
    gram = np.asarray(gram, np.float64)
    k = gram.shape[0]
    p = -(float(sigma) ** 2) * (np.asarray(div, np.float64) - n)  # Q(w) = w G w - 2 p.w + const
    best, best_risk = np.zeros(k), sure_risk(np.zeros(k), gram, div, n, sigma)
    for subset in itertools.chain.from_iterable(itertools.combinations(range(k), r) for r in range(1, k + 1)):
        idx = list(subset)
        g, q = gram[np.ix_(idx, idx)], p[idx]
        tries = []
        try:
            tries.append(np.linalg.solve(g, q))
        except np.linalg.LinAlgError:
            pass
        kkt = np.block([[g, np.ones((len(idx), 1))], [np.ones((1, len(idx))), np.zeros((1, 1))]])
        try:
            tries.append(np.linalg.solve(kkt, np.append(q, 1.0))[:-1])  # on the face sum w = 1
        except np.linalg.LinAlgError:
            pass
        for ws in tries:
            if ws.min() < -1e-9 or ws.sum() > 1 + 1e-9:
                continue
            w = np.zeros(k)
            w[idx] = np.clip(ws, 0.0, None)
            w /= max(1.0, w.sum())
            r = sure_risk(w, gram, div, n, sigma)
            if r < best_risk:
                best, best_risk = w, r
    return best


class SureBlendInferer(Inferer):
    """Wrap a denoising inferer (same grid in and out) so that each volume's result is the SURE-optimal
    convex mixture of the network's result, DIPY nlmeans (one candidate per algorithm in
    ``nlmeans_method``) and the input (see the module docstring).

    Takes what ``inferer`` takes (a channel-first ``(1, X, Y, Z)`` MetaTensor, intensities divided by the
    robust maximum as :func:`monai_sr.pipeline.enhance` hands them) and returns the same shape and
    geometry. Costs the inner inferer once more (on the perturbed input) and each nlmeans twice. The
    decision goes to :attr:`last_decision` and, when the input carries a notes list, to its notes.

    Args:
        inferer: the denoiser's inferer (e.g. :class:`~monai_sr.inference.PlaneMeanInferer`).
        eps: the Monte Carlo step, as a fraction of ``sigma``.
        seed: the probe ``b``'s random seed (a fixed seed: the same input gives the same result).
        nlmeans_method: DIPY's nlmeans algorithm(s), each a candidate: ``"blockwise"``, ``"classic"`` or
            both (the default). Their errors differ, so the blend of both beats the blend of either: on
            18 real held-out cases (Rician 3/5/8 %) +0.98 dB on average over classic nlmeans given the
            true sigma, against +0.75 with the blockwise candidate alone
            (bundles/mri_denoise_dncnn/docs/README.md, 0.4.0).
        classic_block_radius: the classic candidate's search radius (:data:`CLASSIC_BLOCK_RADIUS`; DIPY's
            default for classic is 5; the blockwise candidate keeps DIPY's default, 2).
        dim_fallback: where the signal is too low for SURE to judge (Rician noise is far from Gaussian
            there, and those voxels are not scored), the network's weight goes to the classic nlmeans
            candidate, which models the Rician bias (:func:`dim_ramp`, :data:`DIM_RAMP`); needs "classic" in
            ``nlmeans_method`` (see the module docstring; bundles/mri_denoise_dncnn/docs/README.md, 0.5.0).
    """

    def __init__(self, inferer: Inferer, *, eps: float = 0.01, seed: int = 0,
                 nlmeans_method: str | Sequence[str] = ("blockwise", "classic"),
                 classic_block_radius: int = CLASSIC_BLOCK_RADIUS, dim_fallback: bool = True) -> None:
        super().__init__()
        methods = (nlmeans_method,) if isinstance(nlmeans_method, str) else tuple(nlmeans_method)
        if not methods or any(m not in NLMEANS_METHODS for m in methods) or len(set(methods)) != len(methods):
            raise ValueError(f"nlmeans_method must be one or more of {NLMEANS_METHODS} (each once), got {nlmeans_method!r}")
        self.inferer = inferer
        self.eps, self.seed = float(eps), int(seed)
        self.nlmeans_methods = methods
        self.classic_block_radius = int(classic_block_radius)
        self.dim_fallback = bool(dim_fallback) and "classic" in methods
        self.last_decision: SureDecision | None = None

    def _radius(self, method: str) -> int | None:
        return self.classic_block_radius if method == "classic" else None  # None: DIPY's default

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        """The inner inferer's scale; the blend needs one grid, so scale 1."""
        return self.inferer.volume_scale(network)  # type: ignore[attr-defined]

    def __call__(  # type: ignore[override]
        self, inputs: MetaTensor, network: nn.Module, progress: Callable[[int, int], None] | None = None, **kwargs: Any
    ) -> MetaTensor:
        f_img = self.inferer(inputs, network, progress=progress)
        y = inputs[0].detach().cpu().numpy().astype(np.float32)
        f = f_img[0].detach().cpu().numpy().astype(np.float32)
        known = inputs.meta.get(SMALLER_SIGMA_KEY) if isinstance(inputs, MetaTensor) else None
        if known is not None:  # ReportNoise estimated it on this very volume ("smaller") or was given it
            sigma, how = float(known[0]), str(known[1])
        else:
            spacing = geometry.spacing_from_affine(np.asarray(inputs.affine, dtype=np.float64))
            sigma, how = sigma_smaller_of_two(y, noise_slice_axis(spacing))
        smooth = smoothed_signal(y)
        mask = sure_mask(y, sigma, smooth) if sigma > 0 else np.zeros(y.shape, bool)
        n = int(mask.sum())
        if sigma <= 0 or n < MIN_SURE_VOXELS:
            why = "no noise measured" if sigma <= 0 else f"only {n} voxels of signal above 3 sigma"
            return self._done(inputs, f_img, SureDecision(sigma, how, {"network": 1.0, "input": 0.0}, skipped=why))

        probe = np.random.default_rng(self.seed).standard_normal(y.shape).astype(np.float32)
        step = self.eps * sigma
        perturbed = y + step * probe
        pb = probe[mask].astype(np.float64)
        f_b = self.inferer(MetaTensor(torch.from_numpy(perturbed)[None], affine=inputs.affine.clone()), network)
        names, outs, div = ["network"], [f], [float(pb @ (f_b[0].detach().cpu().numpy()[mask] - f[mask]).astype(np.float64)) / step]
        del f_b
        for method in self.nlmeans_methods:
            g = nlmeans_denoise(y, sigma, method=method, block_radius=self._radius(method))
            # the perturbed pass is only read on the scored voxels: classic computes only those (exact)
            g_b = nlmeans_denoise(perturbed, sigma, method=method, block_radius=self._radius(method),
                                  mask=mask if method == "classic" else None)
            div.append(float(pb @ (g_b[mask] - g[mask]).astype(np.float64)) / step)
            del g_b
            names.append(f"nlmeans {method}")
            outs.append(g)
        del perturbed, pb

        u = [o[mask] - y[mask] for o in outs]  # float32; each product summed in float64
        gram = np.array([[float(np.dot(a.astype(np.float64), b.astype(np.float64))) for b in u] for a in u])
        del u
        w = sure_weights(gram, np.asarray(div), n, sigma)
        eye = np.eye(len(names))
        risk = {name: sure_risk(eye[k], gram, div, n, sigma) for k, name in enumerate(names)}
        risk["input"] = sure_risk(np.zeros(len(names)), gram, div, n, sigma)
        risk["blend"] = sure_risk(w, gram, div, n, sigma)
        out = y.copy()
        for wk, o in zip(w, outs):
            out += np.float32(wk) * (o - y)
        dim = 0.0
        if self.dim_fallback and w[0] > 0:  # network -> classic nlmeans where the signal is dim
            give = 1.0 - dim_ramp(smooth, sigma)
            out += np.float32(w[0]) * give * (outs[names.index("nlmeans classic")] - f)
            dim = float(np.mean(give > 0))
        result = MetaTensor(torch.from_numpy(out[None]), affine=f_img.affine.clone(),
                            meta={k: v for k, v in f_img.meta.items() if k != "affine"})
        weights = {name: float(wk) for name, wk in zip(names, w)} | {"input": float(1.0 - w.sum())}
        return self._done(inputs, result, SureDecision(sigma, how, weights, risk, n, dim_fallback=dim))

    def _done(self, inputs: MetaTensor, result: MetaTensor, decision: SureDecision) -> MetaTensor:
        self.last_decision = decision
        if isinstance(inputs, MetaTensor) and isinstance(inputs.meta.get(NOTES_KEY), list):
            inputs.meta[NOTES_KEY].append(decision.note())
        return result
