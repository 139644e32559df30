"""Low-resolution simulation: geometry against SimpleITK, slice profiles measured on the output, twins, errors."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from transforms_helpers import affine_from_sitk, assert_dict_twin_equals_array, assert_random_reproducible, meta, oblique_affine, to_sitk

from monai_sr.transforms import lowres


@pytest.mark.parametrize("factors", [(2, 2, 1), (1, 1, 4), (3, 2, 2)])
def test_lr_affine_matches_simpleitk_binshrink(factors):
    """SimpleITK's BinShrink keeps the field of view; its output grid is the LR grid we claim."""
    a = oblique_affine()
    hr = np.random.default_rng(0).random((12, 8, 8))
    lr = lowres.SimulateLowResolution(factors, slice_axis=2)(meta(hr[None], a))
    ref = sitk.BinShrink(to_sitk(hr, a), list(factors))
    assert tuple(lr.shape[1:]) == ref.GetSize()
    np.testing.assert_allclose(np.asarray(lr.affine), affine_from_sitk(ref), atol=1e-6)
    # the same grid when asked by spacing
    target = np.asarray([0.9, 1.1, 1.25]) * factors
    by_spacing = lowres.SimulateLowResolution(target_spacing=target, slice_axis=2)(meta(hr[None], a))
    np.testing.assert_allclose(np.asarray(by_spacing.affine), affine_from_sitk(ref), atol=1e-6)


def test_rect_contiguous_slices_equal_simpleitk_bin_means():
    """A rect profile as thick as the LR spacing is the block mean: BinShrink's values, slice for slice."""
    a = oblique_affine()
    hr = np.random.default_rng(1).random((6, 5, 16))
    lr = lowres.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile="rect")(meta(hr[None], a))
    ref = sitk.GetArrayFromImage(sitk.BinShrink(to_sitk(hr, a), [1, 1, 4])).transpose(2, 1, 0)
    np.testing.assert_allclose(lr[0].numpy(), ref, rtol=1e-5, atol=1e-6)
    assert lr.meta["slice_thickness"] == pytest.approx(5.0)


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
    lr = transform(meta(vol, a))
    centre = (j + 0.5) * factor - 0.5  # HR index of LR slice j's centre (DESIGN.md)
    return (np.arange(n) - centre) * spacing, lr[0, :, 0, j].numpy().astype(np.float64)


@pytest.mark.parametrize("thickness", [3.0, 5.0])
def test_gaussian_slice_profile_fwhm_on_an_impulse(thickness):
    off, resp = _impulse_sweep(
        lowres.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_thickness=thickness), factor=4, spacing=0.5
    )
    assert _fwhm(off, resp) == pytest.approx(thickness, rel=0.02)
    assert float((off * resp).sum() / resp.sum()) == pytest.approx(0.0, abs=1e-6)  # centred on the LR slice
    assert resp.sum() == pytest.approx(1.0, rel=1e-5)


def test_rect_profile_with_gap_and_measured_profile():
    # 3 mm thick slices 4 mm apart: a 1 mm gap; the rect's half-maximum width is its thickness
    off, resp = _impulse_sweep(
        lowres.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile="rect", slice_thickness=3.0), factor=4, spacing=1.0
    )
    assert _fwhm(off, resp) == pytest.approx(3.0, rel=0.02)
    assert np.all(resp[np.abs(off) > 2.0] == 0)  # nothing from the gap's far side
    # a measured profile (Gaussian of FWHM 4 mm sampled every 0.25 mm)
    x = np.arange(-40, 41) * 0.25
    profile = np.exp(-4 * np.log(2) * (x / 4.0) ** 2)
    t = lowres.SimulateLowResolution((1, 1, 4), slice_axis=2, slice_profile=profile, profile_spacing=0.25)
    off, resp = _impulse_sweep(t, factor=4, spacing=0.5)
    assert _fwhm(off, resp) == pytest.approx(4.0, rel=0.02)


TWINS = [
    (lowres.SimulateLowResolution, lowres.SimulateLowResolutiond, ((2, 2, 2),), {"slice_axis": 2, "kspace_window": "tukey"}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", TWINS)
def test_dict_twin_equals_array(array_cls, dict_cls, args, kwargs):
    assert_dict_twin_equals_array(array_cls, dict_cls, args, kwargs)


RANDOMS = [
    (lowres.RandSimulateLowResolution, lowres.RandSimulateLowResolutiond, ((1, 1, 2),),
     {"slice_axis": 2, "slice_thickness_range": (1.0, 3.0), "partial_fourier_range": (0.6, 1.0), "kspace_windows": ("none", "hann")}),
]


@pytest.mark.parametrize("array_cls, dict_cls, args, kwargs", RANDOMS)
def test_random_transforms_are_reproducible(array_cls, dict_cls, args, kwargs):
    assert_random_reproducible(array_cls, dict_cls, args, kwargs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: lowres.SimulateLowResolution(0), "got 0"),
        (lambda: lowres.SimulateLowResolution((2, -1, 1)), "got -1"),
        (lambda: lowres.SimulateLowResolution(1.5), "got 1.5"),
        (lambda: lowres.SimulateLowResolution(2, slice_axis=2, slice_thickness=0.0), r"FWHM.*got 0\.0"),
        (lambda: lowres.SimulateLowResolution(2, slice_thickness=-3), "got -3"),
        (lambda: lowres.SimulateLowResolution(2, partial_fourier=0.3), "got 0.3"),
        (lambda: lowres.SimulateLowResolution(2, kspace_window="hammming"), "hammming"),
        (lambda: lowres.SimulateLowResolution(2, slice_profile=[1.0]), r"\[1\.0\]"),
        (lambda: lowres.SimulateLowResolution(), "exactly one"),
        (lambda: lowres.SimulateLowResolution(2)(np.zeros((4, 4))), r"\(4, 4\)"),
        (lambda: lowres.SimulateLowResolution((2, 2, 2))(np.zeros((1, 6, 6))), r"\[2, 2, 2\]"),
        (lambda: lowres.SimulateLowResolution(4)(np.zeros((1, 8, 6, 8))), "size 6"),
        (lambda: lowres.SimulateLowResolution(2, slice_axis=3)(np.zeros((1, 4, 4, 4))), "slice_axis 3"),
        (lambda: lowres.SimulateLowResolution(target_spacing=2.0)(np.zeros((1, 4, 4, 4))), "MetaTensor"),
        (lambda: lowres.SimulateLowResolution(target_spacing=(1.5, 1, 1))(meta(np.zeros((1, 4, 4, 4)), np.eye(4))), "1.5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
