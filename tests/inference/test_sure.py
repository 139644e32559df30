"""Stein's unbiased risk estimate and the SURE-blended denoiser (monai_sr.inference.sure).

Checked against what is known exactly: the divergence of a linear filter is its trace, SURE of a linear
smoother matches its true squared error on Gaussian noise, the chosen mixture is convex and no worse (in
true error) than its best member by more than the estimate's noise, a sabotaged network gets no weight, and
a volume without noise is left alone."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from scipy import ndimage

from monai_sr.inference.batching import torch_threads
from monai_sr.inference.sure import SureBlendInferer, dim_ramp, smoothed_signal, sure_risk, sure_weights
from monai_sr.transforms.noise import sigma_smaller_of_two
from monai_sr.meta import NOTES_KEY
from monai_sr.transforms.noise import sigma_from_wavelet


def _phantom(shape=(96, 96, 6)) -> np.ndarray:
    """Smooth head-like blobs in air, bright signal ~1 (the normalised unit the inferers see)."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    head = (x**2 / 0.7 + y**2 / 0.8 < 1).astype(np.float32) * 0.6
    head += 0.4 * ((x - 0.2) ** 2 + (y + 0.1) ** 2 < 0.08)
    head += 0.25 * (np.sin(9 * x) * np.cos(7 * y) > 0.3) * (head > 0)
    vol = np.repeat(ndimage.gaussian_filter(head, 1.0)[..., None], shape[2], axis=2)
    return vol.astype(np.float32)


def _noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2).astype(np.float32)


class _FilterInferer(Inferer):
    """A stand-in denoiser: a fixed function of the volume, same grid (scale 1)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def volume_scale(self, network):
        return (1, 1, 1)

    def __call__(self, inputs, network, progress=None):
        out = self.fn(inputs[0].numpy())
        return MetaTensor(torch.from_numpy(np.asarray(out, np.float32))[None], affine=inputs.affine.clone(),
                          meta={k: v for k, v in inputs.meta.items() if k != "affine"})


def _image(vol: np.ndarray) -> MetaTensor:
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0], dtype=torch.float64)))
    img.meta[NOTES_KEY] = []
    return img


def test_in_plane_wavelet_sigma_of_a_single_noisy_slice():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.05, (256, 256, 1)) + 1.0  # one slice: the 3D Haar band does not exist
    with pytest.raises(ValueError):
        sigma_from_wavelet(noise)
    assert sigma_from_wavelet(noise, slice_axis=2) == pytest.approx(0.05, rel=0.03)


def test_sure_of_a_linear_smoother_matches_its_true_error():
    """Gaussian noise, f = Gaussian smoothing: SURE with the exact divergence (N x the kernel's centre
    weight) equals the true squared error to within its sampling noise."""
    clean = _phantom((128, 128, 1))[..., 0].astype(np.float64)
    sigma = 0.05
    y = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)
    f = ndimage.gaussian_filter(y, 1.0, mode="wrap")
    impulse = np.zeros_like(y)
    impulse[64, 64] = 1
    centre = ndimage.gaussian_filter(impulse, 1.0, mode="wrap")[64, 64]
    n = y.size
    u = (f - y).ravel()
    gram, div = np.array([[u @ u]]), np.array([centre * n])
    true = np.mean((f - clean) ** 2)
    assert sure_risk([1.0], gram, div, n, sigma) == pytest.approx(true, rel=0.05)
    assert sure_risk([0.0], gram, div, n, sigma) == pytest.approx(sigma**2, rel=1e-9)  # the input's risk is sigma^2


def _grid_best(gram, div, n, s, k):
    """The least risk over a grid of convex weights (step 1/40), the reference for the exact solver."""
    pts = np.linspace(0, 1, 41)
    grid = [w for w in itertools.product(pts, repeat=k) if sum(w) <= 1 + 1e-12]
    return min(sure_risk(np.array(w), gram, div, n, s) for w in grid)


@pytest.mark.parametrize("case", ["f_better", "mixture", "all_bad"])
def test_sure_weights_stay_convex_and_reach_the_least_risk(case):
    n, s = 10_000, 0.05
    grams = {  # per voxel: |f_j - y|.|f_k - y|, and divergences per voxel
        "f_better": ([[0.0020, 0.0018, 0.0019], [0.0018, 0.0025, 0.0021], [0.0019, 0.0021, 0.0024]], [0.15, 0.05, 0.08]),
        "mixture": ([[0.0021, 0.0016, 0.0017], [0.0016, 0.0022, 0.0015], [0.0017, 0.0015, 0.0023]], [0.12, 0.10, 0.11]),
        "all_bad": ([[0.0100, 0.0020, 0.0010], [0.0020, 0.0090, 0.0015], [0.0010, 0.0015, 0.0110]], [1.1, 1.1, 1.1]),  # each amplifies the noise
    }
    g, d = grams[case]
    gram, div = np.array(g) * n, np.array(d) * n
    w = sure_weights(gram, div, n, s)
    assert w.shape == (3,) and w.min() >= 0 and w.sum() <= 1 + 1e-12
    assert sure_risk(w, gram, div, n, s) <= _grid_best(gram, div, n, s, 3) + 1e-12
    if case == "all_bad":  # every candidate worse than the input at any weight: the input alone
        assert w.sum() < 0.05
    # two candidates: the same solver, the same guarantee
    w2 = sure_weights(gram[:2, :2], div[:2], n, s)
    assert sure_risk(w2, gram[:2, :2], div[:2], n, s) <= _grid_best(gram[:2, :2], div[:2], n, s, 2) + 1e-12


def test_divergence_and_blend_on_a_phantom_beat_each_member():
    """Rician 5%: the blend of a Gaussian smoother ("network") and nlmeans is at least as close to the
    clean phantom as the better of the two, and the notes say what was chosen."""
    clean = _phantom()
    noisy = _noisy(clean, 0.05)
    smoother = _FilterInferer(lambda v: ndimage.gaussian_filter(v, (1.2, 1.2, 0)))
    guard = SureBlendInferer(smoother, nlmeans_method="blockwise")
    img = _image(noisy)
    out = guard(img, torch.nn.Identity())[0].numpy()
    d = guard.last_decision
    assert d is not None and not d.skipped
    assert d.sigma == pytest.approx(0.05, rel=0.15)
    assert list(d.weights) == ["network", "nlmeans blockwise", "input"]
    assert sum(d.weights.values()) == pytest.approx(1.0) and min(d.weights.values()) >= 0
    from monai_sr.inference.sure import nlmeans_denoise

    f = ndimage.gaussian_filter(noisy, (1.2, 1.2, 0))
    g = nlmeans_denoise(noisy, d.sigma)
    fg = clean > 0.2
    err = lambda v: float(np.mean((v[fg] - clean[fg]) ** 2))  # noqa: E731
    assert err(out) <= min(err(f), err(g)) * 1.02
    # the output is that mixture (the median: one full run saw a few voxels of a recomputed nlmeans differ)
    mixed = noisy + d.weights["network"] * (f - noisy) + d.weights["nlmeans blockwise"] * (g - noisy)
    assert float(np.median(np.abs(out - mixed))) < 1e-5, float(np.abs(out - mixed).max())
    assert any(note.startswith("SURE blend (noise sigma") for note in img.meta[NOTES_KEY])


def test_a_sabotaged_network_gets_no_weight():
    """A 'network' that returns a shifted, blurred image: SURE sees its error and keeps nlmeans/input."""
    clean = _phantom()
    noisy = _noisy(clean, 0.05, seed=2)
    sabotaged = _FilterInferer(lambda v: ndimage.gaussian_filter(v, 3.0) + 0.2)
    guard = SureBlendInferer(sabotaged, nlmeans_method="blockwise")
    guard(_image(noisy), torch.nn.Identity())
    assert guard.last_decision.weights["network"] < 0.05


def test_a_volume_without_noise_is_left_as_the_input_or_skipped():
    clean = _phantom()
    guard = SureBlendInferer(_FilterInferer(lambda v: ndimage.gaussian_filter(v, 1.0)), nlmeans_method="blockwise")
    out = guard(_image(clean.copy()), torch.nn.Identity())[0].numpy()
    d = guard.last_decision
    # no noise: either no estimate (skipped, network result) or SURE keeps (almost) all of the input
    assert d.skipped or d.weights["input"] > 0.9, d
    if not d.skipped:
        assert np.abs(out - clean).max() < 0.05


def test_sigma_takes_the_smaller_estimate():
    clean = _phantom()
    noisy = _noisy(clean, 0.04, seed=5)
    sigma, how = sigma_smaller_of_two(noisy, 2)
    assert sigma == pytest.approx(0.04, rel=0.15)
    assert "smaller of two" in how


def test_the_blend_is_repeatable_with_two_threads():
    """DIPY's blockwise nlmeans races on two threads (different voxels run to run); the blend runs it on
    one, so the same input gives the same result whatever torch's thread count."""
    from monai_sr.inference.sure import nlmeans_denoise

    clean = _phantom()
    noisy = _noisy(clean, 0.04, seed=3)
    with torch_threads(2):
        a, b = nlmeans_denoise(noisy, 0.04), nlmeans_denoise(noisy, 0.04)
    np.testing.assert_array_equal(a, b)


def test_classic_nlmeans_candidate_is_repeatable_and_a_bad_method_is_refused():
    from monai_sr.inference.sure import nlmeans_denoise

    noisy = _noisy(_phantom(), 0.04, seed=4)
    with torch_threads(2):
        a, b = (nlmeans_denoise(noisy[:48, :48], 0.04, method="classic") for _ in range(2))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="blockwise"):
        SureBlendInferer(None, nlmeans_method="fast")  # refused before the inferer is looked at
    with pytest.raises(ValueError, match="each once"):
        SureBlendInferer(None, nlmeans_method=["classic", "classic"])


def test_the_default_blend_has_both_nlmeans_candidates_and_beats_each():
    """The default candidates (network, blockwise and classic nlmeans) on a small Rician 5 % phantom: the
    blend is no further from the clean phantom than the best single candidate, and it is that mixture."""
    from monai_sr.inference.sure import nlmeans_denoise

    clean = _phantom((64, 64, 4))
    noisy = _noisy(clean, 0.05, seed=6)
    fn = lambda v: ndimage.gaussian_filter(v, (1.0, 1.0, 0))  # noqa: E731
    guard = SureBlendInferer(_FilterInferer(fn))
    with torch_threads(2):
        out = guard(_image(noisy), torch.nn.Identity())[0].numpy()
        d = guard.last_decision
        cands = {"network": fn(noisy), **{f"nlmeans {m}": nlmeans_denoise(noisy, d.sigma, method=m, block_radius=r) for m, r in (("blockwise", None), ("classic", 3))}}
    assert list(d.weights) == ["network", "nlmeans blockwise", "nlmeans classic", "input"]
    assert set(d.risk) == {"network", "nlmeans blockwise", "nlmeans classic", "input", "blend"}
    assert d.risk["blend"] <= min(d.risk.values()) + 1e-12
    fg = clean > 0.2
    err = lambda v: float(np.mean((v[fg] - clean[fg]) ** 2))  # noqa: E731
    assert err(out) <= min(err(c) for c in cands.values()) * 1.02
    mixed = noisy + sum(d.weights[k] * (c - noisy) for k, c in cands.items())
    give = 1.0 - dim_ramp(smoothed_signal(noisy), d.sigma)  # the dim fallback: network -> classic
    mixed += d.weights["network"] * give * (cands["nlmeans classic"] - cands["network"])
    assert float(np.median(np.abs(out - mixed))) < 1e-5
    assert "nlmeans classic" in d.note()


def test_the_dim_fallback_gives_the_networks_share_to_classic_nlmeans_only_where_the_signal_is_dim():
    """A network that is perfect in the bright signal and biased in the dim signal (where SURE does not
    score): the fallback leaves the bright voxels as the plain blend has them, and below 2 sigma puts
    classic nlmeans in the network's place, which removes most of the bias there."""
    clean = _phantom((64, 64, 4)) * np.linspace(0.05, 1.0, 64, dtype=np.float32)[:, None, None]  # dim to bright
    noisy = _noisy(clean, 0.05, seed=9)
    fn = lambda v: np.where(smoothed_signal(v) > 0.2, clean, clean + 0.05)  # noqa: E731
    with torch_threads(2):
        outs, decisions = {}, {}
        for on in (False, True):
            guard = SureBlendInferer(_FilterInferer(fn), dim_fallback=on)
            outs[on], decisions[on] = guard(_image(noisy), torch.nn.Identity())[0].numpy(), guard.last_decision
    assert decisions[True].weights == decisions[False].weights and decisions[True].weights["network"] > 0
    smooth = smoothed_signal(noisy)
    sigma = decisions[True].sigma
    bright, dim = smooth > 4 * sigma, smooth < 2 * sigma
    np.testing.assert_array_equal(outs[True][bright], outs[False][bright])
    assert not np.array_equal(outs[True][dim], outs[False][dim])
    roi = dim & (clean > 0.02)  # dim tissue, not air
    err = lambda v: float(np.mean((v[roi] - clean[roi]) ** 2))  # noqa: E731
    assert err(outs[True]) < 0.8 * err(outs[False])
    assert 0 < decisions[True].dim_fallback < 1 and "goes to nlmeans classic" in decisions[True].note()
    assert decisions[False].dim_fallback == 0 and "goes to" not in decisions[False].note()
    assert SureBlendInferer(_FilterInferer(fn), nlmeans_method="blockwise").dim_fallback is False  # needs classic


def test_masked_classic_nlmeans_is_exact_inside_the_mask_and_blockwise_refuses_a_mask():
    """The SURE blend's perturbed classic pass computes only the scored voxels: DIPY's classic nlmeans
    computes each voxel from the whole input, so inside the mask nothing changes."""
    from monai_sr.inference.sure import nlmeans_denoise

    clean = _phantom((48, 48, 6))
    noisy = _noisy(clean, 0.05, seed=7)
    mask = clean > 0.3
    full = nlmeans_denoise(noisy, 0.05, method="classic", block_radius=3)
    part = nlmeans_denoise(noisy, 0.05, method="classic", block_radius=3, mask=mask)
    np.testing.assert_array_equal(part[mask], full[mask])
    assert not part[~mask].any()
    with pytest.raises(ValueError, match="only exact for classic"):
        nlmeans_denoise(noisy, 0.05, mask=mask)


def test_the_blend_takes_the_reported_smaller_estimate_instead_of_estimating_again():
    """ReportNoise(method="smaller") leaves its (sigma, how) in the image's meta; the blend uses it."""
    from monai_sr.transforms.noise import SMALLER_SIGMA_KEY, ReportNoise

    noisy = _noisy(_phantom((64, 64, 4)), 0.05, seed=8)
    img = _image(noisy)
    ReportNoise("smaller")(img, torch.nn.Identity())
    reported = img.meta[SMALLER_SIGMA_KEY]
    assert reported[0] == pytest.approx(sigma_smaller_of_two(noisy, 2)[0])
    img.meta[SMALLER_SIGMA_KEY] = (0.07, "as given")  # a different value: proof that it is the one used
    guard = SureBlendInferer(_FilterInferer(lambda v: ndimage.gaussian_filter(v, 1.0)), nlmeans_method="blockwise")
    guard(img, torch.nn.Identity())
    assert guard.last_decision.sigma == 0.07 and "as given" in guard.last_decision.note()
