"""Stein's unbiased risk estimate and the SURE-blended denoiser (monai_sr.inference.sure).

Checked against what is known exactly: the divergence of a linear filter is its trace, SURE of a linear
smoother matches its true squared error on Gaussian noise, the chosen mixture is convex and no worse (in
true error) than its best member by more than the estimate's noise, a sabotaged network gets no weight, and
a volume without noise is left alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from scipy import ndimage

from monai_sr.inference.batching import torch_threads
from monai_sr.inference.sure import SureBlendInferer, _risk, sure_weights
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
    gram = {"uu": u @ u, "uv": 0.0, "vv": 0.0, "du": centre * n, "dv": 0.0}
    true = np.mean((f - clean) ** 2)
    assert _risk(1, 0, gram, n, sigma**2) == pytest.approx(true, rel=0.05)
    assert _risk(0, 0, gram, n, sigma**2) == pytest.approx(sigma**2, rel=1e-9)  # the input's risk is sigma^2


def test_sure_weights_stay_convex_and_pick_the_better_member():
    n, s = 10_000, 0.05
    # f much better than g: a near 1
    gram = {"uu": n * 0.0020, "uv": n * 0.0018, "vv": n * 0.0025, "du": 0.15 * n, "dv": 0.05 * n}
    a, c = sure_weights(gram, n, s)
    assert 0 <= a <= 1 and 0 <= c <= 1 and a + c <= 1 + 1e-12
    best = min(_risk(x, y, gram, n, s * s) for x in np.linspace(0, 1, 41) for y in np.linspace(0, 1, 41) if x + y <= 1)
    assert _risk(a, c, gram, n, s * s) <= best + 1e-12


def test_divergence_and_blend_on_a_phantom_beat_each_member():
    """Rician 5%: the blend of a Gaussian smoother ("network") and nlmeans is at least as close to the
    clean phantom as the better of the two, and the notes say what was chosen."""
    clean = _phantom()
    noisy = _noisy(clean, 0.05)
    smoother = _FilterInferer(lambda v: ndimage.gaussian_filter(v, (1.2, 1.2, 0)))
    guard = SureBlendInferer(smoother)
    img = _image(noisy)
    out = guard(img, torch.nn.Identity())[0].numpy()
    d = guard.last_decision
    assert d is not None and not d.skipped
    assert d.sigma == pytest.approx(0.05, rel=0.15)
    assert sum(d.weights) == pytest.approx(1.0) and min(d.weights) >= 0
    from monai_sr.inference.sure import nlmeans_denoise

    f = ndimage.gaussian_filter(noisy, (1.2, 1.2, 0))
    g = nlmeans_denoise(noisy, d.sigma)
    fg = clean > 0.2
    err = lambda v: float(np.mean((v[fg] - clean[fg]) ** 2))  # noqa: E731
    assert err(out) <= min(err(f), err(g)) * 1.02
    # the output is that mixture (the median: one full run saw a few voxels of a recomputed nlmeans differ)
    mixed = noisy + d.weights[0] * (f - noisy) + d.weights[1] * (g - noisy)
    assert float(np.median(np.abs(out - mixed))) < 1e-5, float(np.abs(out - mixed).max())
    assert any(note.startswith("SURE blend (noise sigma") for note in img.meta[NOTES_KEY])


def test_a_sabotaged_network_gets_no_weight():
    """A 'network' that returns a shifted, blurred image: SURE sees its error and keeps nlmeans/input."""
    clean = _phantom()
    noisy = _noisy(clean, 0.05, seed=2)
    sabotaged = _FilterInferer(lambda v: ndimage.gaussian_filter(v, 3.0) + 0.2)
    guard = SureBlendInferer(sabotaged)
    guard(_image(noisy), torch.nn.Identity())
    assert guard.last_decision.weights[0] < 0.05


def test_a_volume_without_noise_is_left_as_the_input_or_skipped():
    clean = _phantom()
    guard = SureBlendInferer(_FilterInferer(lambda v: ndimage.gaussian_filter(v, 1.0)))
    out = guard(_image(clean.copy()), torch.nn.Identity())[0].numpy()
    d = guard.last_decision
    # no noise: either no estimate (skipped, network result) or SURE keeps (almost) all of the input
    assert d.skipped or d.weights[2] > 0.9, d
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
