"""Low-resolution / noise simulation: geometry against SimpleITK, physics measured on the output."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from scipy import stats

from monai_sr.transforms import degradation as deg

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, written out here to stay independent of monai_sr


def _oblique_affine(spacing=(0.9, 1.1, 1.25)) -> np.ndarray:
    theta = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = [-80.0, 12.5, -33.0]
    return a


def _meta(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(data, dtype=torch.float32), affine=torch.as_tensor(affine, dtype=torch.float64))


def _to_sitk(vol: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    lps = FLIP @ affine_ras
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)).astype(np.float32))
    img.SetSpacing(sp.tolist())
    img.SetDirection((lps[:3, :3] / sp).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def _affine_from_sitk(img: sitk.Image) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return FLIP @ lps


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 4), (3, 2, 2)])
def test_lr_affine_matches_simpleitk_binshrink(factors):
    """SimpleITK's BinShrink keeps the field of view; its output grid is the LR grid we claim."""
    a = _oblique_affine()
    hr = np.random.default_rng(0).random((12, 8, 8))
    lr = deg.SimulateLowResolution(factors, slice_axis=2)(_meta(hr[None], a))
    ref = sitk.BinShrink(_to_sitk(hr, a), list(factors))
    assert tuple(lr.shape[1:]) == ref.GetSize()
    np.testing.assert_allclose(np.asarray(lr.affine), _affine_from_sitk(ref), atol=1e-6)
    # the same grid when asked by spacing
    target = np.asarray([0.9, 1.1, 1.25]) * factors
    by_spacing = deg.SimulateLowResolution(target_spacing=target, slice_axis=2)(_meta(hr[None], a))
    np.testing.assert_allclose(np.asarray(by_spacing.affine), _affine_from_sitk(ref), atol=1e-6)


def test_rect_contiguous_slices_equal_simpleitk_bin_means():
    """A rect profile as thick as the LR spacing is the block mean: BinShrink's values, slice for slice."""
    a = _oblique_affine()
    hr = np.random.default_rng(1).random((6, 5, 16))
    lr = deg.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile="rect")(_meta(hr[None], a))
    ref = sitk.GetArrayFromImage(sitk.BinShrink(_to_sitk(hr, a), [1, 1, 4])).transpose(2, 1, 0)
    np.testing.assert_allclose(lr[0].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert lr.meta["slice_thickness"] == pytest.approx(5.0)


def test_kspace_truncation_keeps_its_affine():
    a = _oblique_affine()
    out = deg.KSpaceTruncation((2,), (0,))(_meta(np.ones((1, 8, 4, 4)), a))
    ref = sitk.BinShrink(_to_sitk(np.ones((8, 4, 4)), a), [2, 1, 1])
    np.testing.assert_allclose(np.asarray(out.affine), _affine_from_sitk(ref), atol=1e-6)


# ------------------------------------------------------------------------------------------- physics


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
    lr = deg.SimulateLowResolution((factor, factor))(torch.as_tensor(hr))
    np.testing.assert_allclose(lr[0].numpy(), expected, atol=2e-6)


def _fwhm(offsets: np.ndarray, values: np.ndarray) -> float:
    """Full width at half maximum by linear interpolation of the two half-maximum crossings."""
    order = np.argsort(offsets)
    x, y = offsets[order], values[order] / values.max()
    top = int(np.argmax(y))
    left = np.flatnonzero(y[:top] < 0.5)[-1]
    right = top + np.flatnonzero(y[top:] < 0.5)[0]
    xl = x[left] + (0.5 - y[left]) * (x[left + 1] - x[left]) / (y[left + 1] - y[left])
    xr = x[right - 1] + (0.5 - y[right - 1]) * (x[right] - x[right - 1]) / (y[right] - y[right - 1])
    return float(xr - xl)


def _impulse_sweep(transform, *, factor: int, spacing: float, n_lr: int = 16):
    """Slide a one-voxel impulse through the slices (one in-plane row per position) and read one LR slice.

    Returns the impulse offsets from LR slice ``j``'s centre (mm) and that slice's responses.
    """
    n = n_lr * factor
    j = n_lr // 2
    vol = np.zeros((1, n, 1, n))
    for p in range(n):
        vol[0, p, 0, p] = 1.0
    a = np.diag([1.0, 1.0, spacing, 1.0])
    lr = transform(_meta(vol, a))
    centre = (j + 0.5) * factor - 0.5  # HR index of LR slice j's centre (DESIGN.md)
    return (np.arange(n) - centre) * spacing, lr[0, :, 0, j].numpy().astype(np.float64)


@pytest.mark.parametrize("thickness", [3.0, 5.0])
def test_gaussian_slice_profile_fwhm_on_an_impulse(thickness):
    off, resp = _impulse_sweep(
        deg.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_thickness=thickness), factor=4, spacing=0.5
    )
    assert _fwhm(off, resp) == pytest.approx(thickness, rel=0.02)
    assert float((off * resp).sum() / resp.sum()) == pytest.approx(0.0, abs=1e-6)  # centred on the LR slice
    assert resp.sum() == pytest.approx(1.0, rel=1e-5)


def test_rect_profile_with_gap_and_measured_profile():
    # 3 mm thick slices 4 mm apart: a 1 mm gap; the rect's half-maximum width is its thickness
    off, resp = _impulse_sweep(
        deg.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile="rect", slice_thickness=3.0), factor=4, spacing=1.0
    )
    assert _fwhm(off, resp) == pytest.approx(3.0, rel=0.02)
    assert np.all(resp[np.abs(off) > 2.0] == 0)  # nothing from the gap's far side
    # a measured profile (Gaussian of FWHM 4 mm sampled every 0.25 mm)
    x = np.arange(-40, 41) * 0.25
    profile = np.exp(-4 * np.log(2) * (x / 4.0) ** 2)
    t = deg.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile=profile, profile_spacing=0.25)
    off, resp = _impulse_sweep(t, factor=4, spacing=0.5)
    assert _fwhm(off, resp) == pytest.approx(4.0, rel=0.02)


def test_window_and_partial_fourier():
    x = np.zeros((1, 64, 64))
    x[0, 16:48, 16:48] = 1.0
    ones = np.ones((1, 32, 32))
    for window in ("none", "hamming", "hann", "tukey"):
        # a constant stays the same constant (the window is 1 at k = 0)
        np.testing.assert_allclose(deg.SimulateLowResolution(2, kspace_window=window)(ones), 1.0, atol=1e-5)
    sharp = deg.SimulateLowResolution(2)(x)
    smooth = deg.SimulateLowResolution(2, kspace_window="hamming")(x)
    assert sharp.min() < -0.005 and smooth.min() > -0.001  # the Hamming window tames the Gibbs undershoot
    pf = deg.SimulateLowResolution(2, partial_fourier=0.625, phase_axis=1)(x)
    assert pf.min() >= 0  # a magnitude image
    assert not np.allclose(pf, np.abs(sharp), atol=1e-3)
    np.testing.assert_allclose(pf.sum(axis=2), np.abs(sharp).sum(axis=2), rtol=0.2)  # same object, blurrier


def test_rician_noise_snr():
    """SNR = mean foreground signal / sigma: a bright flat region has magnitude std ~ sigma (Rice)."""
    a_level, snr = 100.0, 20.0
    img = np.zeros((1, 64, 64, 32), dtype=np.float32)
    img[:, :, :, 8:] = a_level  # flat foreground, zero background
    out = deg.RicianNoise(snr, seed=3)(_meta(img, np.eye(4)))
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
    np.testing.assert_allclose(deg.GibbsRinging(1.0)(x), x, atol=1e-6)
    ringing = deg.GibbsRinging(0.25)(x)
    assert ringing.shape == x.shape
    assert ringing.max() == pytest.approx(1.09, abs=0.02)  # the Gibbs overshoot of a truncated step
    t = np.arange(128)
    smooth = np.cos(2 * np.pi * 5 * t / 128)[None]
    np.testing.assert_allclose(deg.GibbsRinging(0.25)(smooth), smooth, atol=1e-6)  # band-limited: untouched


def test_bias_field_same_on_hr_and_lr_grids():
    c = np.random.default_rng(0).uniform(-0.3, 0.3, len(deg.bias_exponents(3, 2)))
    t = deg.BiasField(c, order=2)
    hr, lr = t.field((9, 6, 3)), t.field((3, 2, 1))
    # LR voxel j sits at HR index 3j + 1 (factor 3): the same point, the same field
    np.testing.assert_allclose(hr[1::3, 1::3, 1::3], lr, rtol=1e-12)
    np.testing.assert_allclose(deg.BiasField(np.zeros_like(c), order=2)(np.ones((1, 4, 4, 4))), 1.0)


# ------------------------------------------------------------------------ twins, randomness, errors


def _img() -> MetaTensor:
    rng = np.random.default_rng(5)
    return _meta(rng.random((1, 16, 16, 8)) + 0.5, _oblique_affine())


TWINS = [
    (deg.SimulateLowResolution, deg.SimulateLowResolutiond, ((2, 2, 2),), {"slice_axis": 2, "kspace_window": "tukey"}),
    (deg.RicianNoise, deg.RicianNoised, (15.0,), {"seed": 4}),
    (deg.GibbsRinging, deg.GibbsRingingd, (0.5,), {"axes": (0, 1)}),
    (deg.BiasField, deg.BiasFieldd, (np.linspace(-0.1, 0.1, 10),), {"order": 2}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", TWINS)
def test_dict_twin_equals_array(array_cls, dict_cls, args, kwargs):
    img = _img()
    a = array_cls(*args, **kwargs)(img)
    d = dict_cls("image", *args, **kwargs)({"image": img, "other": 1})
    assert isinstance(a, MetaTensor) and isinstance(d["image"], MetaTensor) and d["other"] == 1
    torch.testing.assert_close(d["image"].as_tensor(), a.as_tensor())
    np.testing.assert_allclose(np.asarray(d["image"].affine), np.asarray(a.affine))


RANDOMS = [
    (deg.RandSimulateLowResolution, deg.RandSimulateLowResolutiond, ((1, 1, 2),),
     {"slice_axis": 2, "slice_thickness_range": (1.0, 3.0), "partial_fourier_range": (0.6, 1.0), "kspace_windows": ("none", "hann")}),
    (deg.RandRicianNoise, deg.RandRicianNoised, ((5.0, 30.0),), {}),
    (deg.RandGibbsRinging, deg.RandGibbsRingingd, ((0.3, 0.9),), {}),
    (deg.RandBiasField, deg.RandBiasFieldd, (), {"order": 2}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", RANDOMS)
def test_random_transforms_are_reproducible(array_cls, dict_cls, args, kwargs):
    img = _img()
    t = array_cls(*args, **kwargs).set_random_state(7)
    first = t(img)
    first_params = dict(t.params)
    second = t(img)
    again = array_cls(*args, **kwargs).set_random_state(7)(img)
    torch.testing.assert_close(again.as_tensor(), first.as_tensor())
    assert not torch.allclose(second.as_tensor(), first.as_tensor())
    # the sample then the deterministic transform it names
    det = t._deterministic(**first_params)(img)
    torch.testing.assert_close(det.as_tensor(), first.as_tensor())
    d = dict_cls("image", *args, **kwargs).set_random_state(7)({"image": img})
    torch.testing.assert_close(d["image"].as_tensor(), first.as_tensor())


def test_prob_zero_returns_input():
    img = _img()
    assert deg.RandRicianNoise(prob=0.0).set_random_state(0)(img) is img


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: deg.SimulateLowResolution(0), "got 0"),
        (lambda: deg.SimulateLowResolution((2, -1, 1)), "got -1"),
        (lambda: deg.SimulateLowResolution(1.5), "got 1.5"),
        (lambda: deg.SimulateLowResolution(2, slice_axis=2, slice_thickness=0.0), r"FWHM.*got 0\.0"),
        (lambda: deg.SimulateLowResolution(2, slice_thickness=-3), "got -3"),
        (lambda: deg.SimulateLowResolution(2, partial_fourier=0.3), "got 0.3"),
        (lambda: deg.SimulateLowResolution(2, kspace_window="hammming"), "hammming"),
        (lambda: deg.SimulateLowResolution(2, slice_profile=[1.0]), r"\[1\.0\]"),
        (lambda: deg.SimulateLowResolution(), "exactly one"),
        (lambda: deg.SimulateLowResolution(2)(np.zeros((4, 4))), r"\(4, 4\)"),
        (lambda: deg.SimulateLowResolution((2, 2, 2))(np.zeros((1, 6, 6))), r"\[2, 2, 2\]"),
        (lambda: deg.SimulateLowResolution(4)(np.zeros((1, 8, 6, 8))), "size 6"),
        (lambda: deg.SimulateLowResolution(2, slice_axis=3)(np.zeros((1, 4, 4, 4))), "slice_axis 3"),
        (lambda: deg.SimulateLowResolution(target_spacing=2.0)(np.zeros((1, 4, 4, 4))), "MetaTensor"),
        (lambda: deg.SimulateLowResolution(target_spacing=(1.5, 1, 1))(_meta(np.zeros((1, 4, 4, 4)), np.eye(4))), "1.5"),
        (lambda: deg.RicianNoise(0), "got 0"),
        (lambda: deg.RicianNoise(10)(np.zeros((1, 4, 4))), "no positive foreground"),
        (lambda: deg.RandRicianNoise((30, 10)), r"\(30, 10\)"),
        (lambda: deg.RandRicianNoise(prob=1.5), "1.5"),
        (lambda: deg.GibbsRinging(0), "got 0"),
        (lambda: deg.GibbsRinging(0.5, axes=(4,))(np.zeros((1, 4, 4))), "axis 4"),
        (lambda: deg.BiasField([0.1, 0.2], order=2)(np.ones((1, 4, 4, 4))), "2 coefficients"),
        (lambda: deg.KSpaceTruncation((0,), (1,)), "got 0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
