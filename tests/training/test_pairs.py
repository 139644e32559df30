"""In-plane training pairs (monai_sr/training/pairs.py): LR = k-space truncation of HR, also after the
random spectral shaping that imitates scanner apodisation and interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from monai_sr.training.pairs import DegradedStack, PairSampler, SpectralShaping
from monai_sr.transforms.kspace import fourier_resample


def _stack(seed=0, shape=(64, 50, 3)) -> DegradedStack:
    vol = np.random.default_rng(seed).random(shape).astype(np.float32)
    return DegradedStack.from_volume(vol, axis=2)


def test_shaped_pair_is_still_a_truncation_pair():
    st = _stack()
    rng = np.random.default_rng(1)
    shaping = SpectralShaping(prob=1.0)
    for _ in range(6):
        hr, lr = shaping(rng, st.hr[0], st.lr[0])
        np.testing.assert_allclose(fourier_resample(hr, lr.shape, (0, 1)), lr, atol=1e-5)
        assert not np.allclose(hr, st.hr[0], atol=1e-3)  # it did filter


def test_shaping_only_attenuates_and_keeps_the_mean():
    st = _stack(2)
    rng = np.random.default_rng(3)
    shaping = SpectralShaping(prob=1.0, max_sigma=1.5)
    for _ in range(6):
        hr, _ = shaping(rng, st.hr[0], st.lr[0])
        before, after = np.abs(np.fft.fft2(st.hr[0])), np.abs(np.fft.fft2(hr))
        assert np.all(after <= before * (1 + 1e-5) + 1e-5)
        assert abs(hr.mean() - st.hr[0].mean()) < 1e-5  # the DC bin has W = 1
        assert after[-1 + after.shape[0] // 2].sum() < before[-1 + before.shape[0] // 2].sum()  # the highs lost energy


def test_probability_zero_is_the_identity_and_sampler_uses_it():
    st = _stack(4)
    rng = np.random.default_rng(5)
    hr, lr = SpectralShaping(prob=0.0)(rng, st.hr[0], st.lr[0])
    assert np.shares_memory(hr, st.hr) and np.shares_memory(lr, st.lr)  # untouched, not copied
    plain = PairSampler([st], lr_size=8, seed=0, noise_prob=0.0, min_foreground=0.0)
    shaped = PairSampler([st], lr_size=8, seed=0, noise_prob=0.0, min_foreground=0.0, shaping=SpectralShaping(prob=1.0))
    a_lr, a_hr = plain.batch(4)
    b_lr, b_hr = shaped.batch(4)
    assert a_lr.shape == b_lr.shape == (4, 1, 8, 8) and b_hr.shape == (4, 1, 16, 16)
    assert not np.allclose(a_hr, b_hr)


def test_sampler_shares_draw_a_small_group_as_often_as_asked():
    big, small = _stack(0, (64, 50, 8)), _stack(1, (64, 50, 1))
    sampler = PairSampler([big, small], lr_size=8, seed=0, noise_prob=0.0, min_foreground=0.0,
                          groups=["volume", "slice"], shares={"slice": 0.5})
    assert sampler.weights == pytest.approx([0.5, 0.5])
    plain = PairSampler([big, small], lr_size=8, seed=0, noise_prob=0.0, min_foreground=0.0)
    assert plain.weights[1] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="groups"):
        PairSampler([big, small], lr_size=8, shares={"slice": 0.5})
