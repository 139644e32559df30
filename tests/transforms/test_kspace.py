"""k-space truncation: its affine against SimpleITK, exact on band-limited signals, windows and partial Fourier."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from transforms_helpers import affine_from_sitk, meta, oblique_affine, to_sitk

from monai_sr.transforms import kspace, lowres


def test_kspace_truncation_keeps_its_affine():
    a = oblique_affine()
    out = kspace.KSpaceTruncation((2,), (0,))(meta(np.ones((1, 8, 4, 4)), a))
    ref = sitk.BinShrink(to_sitk(np.ones((8, 4, 4)), a), [2, 1, 1])
    np.testing.assert_allclose(np.asarray(out.affine), affine_from_sitk(ref), atol=1e-6)


def _band_limited(n: int, kmax: int, t: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amp, phase = rng.random(kmax + 1), rng.uniform(0, 2 * np.pi, kmax + 1)
    return sum(amp[k] * np.cos(2 * np.pi * k * t / n + phase[k]) for k in range(kmax + 1))


@pytest.mark.parametrize("factor", [3, 4])
def test_kspace_truncation_of_band_limited_signal_is_exact(factor):
    """Frequencies below the LR Nyquist pass untouched: LR voxel j equals the signal at (j + 0.5) s - 0.5."""
    n_lr = 16
    n = n_lr * factor
    kmax = (n_lr - 1) // 2
    sig_hr = _band_limited(n, kmax, np.arange(n))
    sig_lr = _band_limited(n, kmax, (np.arange(n_lr) + 0.5) * factor - 0.5)
    hr = np.broadcast_to(sig_hr[:, None] + 0.5 * sig_hr[None, ::-1], (n, n))[None].copy()
    expected = sig_lr[:, None] + 0.5 * _band_limited(n, kmax, n - 1 - ((np.arange(n_lr) + 0.5) * factor - 0.5))[None, :]
    lr = lowres.SimulateLowResolution((factor, factor))(torch.as_tensor(hr))
    np.testing.assert_allclose(lr[0].numpy(), expected, atol=2e-6)


def test_window_and_partial_fourier():
    x = np.zeros((1, 64, 64))
    x[0, 16:48, 16:48] = 1.0
    ones = np.ones((1, 32, 32))
    for window in ("none", "hamming", "hann", "tukey"):
        # a constant stays the same constant (the window is 1 at k = 0)
        np.testing.assert_allclose(lowres.SimulateLowResolution(2, kspace_window=window)(ones), 1.0, atol=1e-5)
    sharp = lowres.SimulateLowResolution(2)(x)
    smooth = lowres.SimulateLowResolution(2, kspace_window="hamming")(x)
    assert sharp.min() < -0.005 and smooth.min() > -0.001  # the Hamming window tames the Gibbs undershoot
    pf = lowres.SimulateLowResolution(2, partial_fourier=0.625, phase_axis=1)(x)
    assert pf.min() >= 0  # a magnitude image
    assert not np.allclose(pf, np.abs(sharp), atol=1e-3)
    np.testing.assert_allclose(pf.sum(axis=2), np.abs(sharp).sum(axis=2), rtol=0.2)  # same object, blurrier


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: kspace.KSpaceTruncation((0,), (1,)), "got 0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
