"""Artefacts: Rician noise at an SNR (and its primitive), Gibbs ringing, bias field; twins, randomness, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from transforms_helpers import assert_dict_twin_equals_array, assert_random_reproducible, meta, oblique_image

from monai_sr.transforms import artefacts


def test_rician_noise_snr():
    """SNR = mean foreground signal / sigma: a bright flat region has magnitude std ~ sigma (Rice)."""
    a_level, snr = 100.0, 20.0
    img = np.zeros((1, 64, 64, 32), dtype=np.float32)
    img[:, :, :, 8:] = a_level  # flat foreground, zero background
    out = artefacts.RicianNoise(snr, seed=3)(meta(img, np.eye(4)))
    sigma = a_level / snr
    assert out.meta["rician_sigma"] == pytest.approx(sigma)
    fg = out[0, :, :, 8:].numpy().astype(np.float64)
    assert a_level / fg.std() == pytest.approx(snr, rel=0.02)
    assert fg.mean() == pytest.approx(stats.rice.mean(a_level / sigma, scale=sigma), rel=1e-3)
    bg = out[0, :, :, :8].numpy().astype(np.float64)  # Rayleigh in the background
    assert bg.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.02)


def test_gibbs_ringing():
    x = np.zeros((1, 128))
    x[0, 32:96] = 1.0
    np.testing.assert_allclose(artefacts.GibbsRinging(1.0)(x), x, atol=1e-6)
    ringing = artefacts.GibbsRinging(0.25)(x)
    assert ringing.shape == x.shape
    assert ringing.max() == pytest.approx(1.09, abs=0.02)  # the Gibbs overshoot of a truncated step
    t = np.arange(128)
    smooth = np.cos(2 * np.pi * 5 * t / 128)[None]
    np.testing.assert_allclose(artefacts.GibbsRinging(0.25)(smooth), smooth, atol=1e-6)  # band-limited: untouched


def test_bias_field_same_on_hr_and_lr_grids():
    c = np.random.default_rng(0).uniform(-0.3, 0.3, len(artefacts.bias_exponents(3, 2)))
    t = artefacts.BiasField(c, order=2)
    hr, lr = t.field((9, 6, 3)), t.field((3, 2, 1))
    # LR voxel j sits at HR index 3j + 1 (factor 3): the same point, the same field
    np.testing.assert_allclose(hr[1::3, 1::3, 1::3], lr, rtol=1e-12)
    np.testing.assert_allclose(artefacts.BiasField(np.zeros_like(c), order=2)(np.ones((1, 4, 4, 4))), 1.0)


TWINS = [
    (artefacts.RicianNoise, artefacts.RicianNoised, (15.0,), {"seed": 4}),
    (artefacts.GibbsRinging, artefacts.GibbsRingingd, (0.5,), {"axes": (0, 1)}),
    (artefacts.BiasField, artefacts.BiasFieldd, (np.linspace(-0.1, 0.1, 10),), {"order": 2}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", TWINS)
def test_dict_twin_equals_array(array_cls, dict_cls, args, kwargs):
    assert_dict_twin_equals_array(array_cls, dict_cls, args, kwargs)


RANDOMS = [
    (artefacts.RandRicianNoise, artefacts.RandRicianNoised, ((5.0, 30.0),), {}),
    (artefacts.RandGibbsRinging, artefacts.RandGibbsRingingd, ((0.3, 0.9),), {}),
    (artefacts.RandBiasField, artefacts.RandBiasFieldd, (), {"order": 2}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", RANDOMS)
def test_random_transforms_are_reproducible(array_cls, dict_cls, args, kwargs):
    assert_random_reproducible(array_cls, dict_cls, args, kwargs)


def test_prob_zero_returns_input():
    img = oblique_image()
    assert artefacts.RandRicianNoise(prob=0.0).set_random_state(0)(img) is img


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: artefacts.RicianNoise(0), "got 0"),
        (lambda: artefacts.RicianNoise(10)(np.zeros((1, 4, 4))), "no positive foreground"),
        (lambda: artefacts.RandRicianNoise((30, 10)), r"\(30, 10\)"),
        (lambda: artefacts.RandRicianNoise(prob=1.5), "1.5"),
        (lambda: artefacts.GibbsRinging(0), "got 0"),
        (lambda: artefacts.GibbsRinging(0.5, axes=(4,))(np.zeros((1, 4, 4))), "axis 4"),
        (lambda: artefacts.BiasField([0.1, 0.2], order=2)(np.ones((1, 4, 4, 4))), "2 coefficients"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rician_noise_transform_is_the_primitive():
    """RicianNoise(snr, seed) is rician_noise at the SNR's sigma with numpy.random.default_rng(seed)."""
    img = oblique_image()
    out = artefacts.RicianNoise(12.0, seed=6)(img)
    sigma = artefacts.rician_sigma(img, 12.0)
    expected = artefacts.rician_noise(img.numpy().astype(np.float64), sigma, np.random.default_rng(6))
    np.testing.assert_array_equal(out.numpy(), expected)
    assert expected.dtype == np.float32
