"""Metrics against hand-computed values and against MONAI's own implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs

from monai_sr.validation import metrics as M


def test_psnr_of_a_known_mse():
    """ref = 0, pred = 3 on half the voxels and 1 on the rest: MSE = (9 + 1) / 2 = 5; range 10 -> 10 log10(100/5)."""
    ref = np.zeros((16, 16, 4))
    pred = np.ones_like(ref)
    pred[:8] = 3.0
    expected = 10 * np.log10(100 / 5)  # 13.010299956639813 dB
    assert M.psnr(pred, ref, data_range=10.0) == pytest.approx(expected, abs=1e-6)
    sm = M.slice_metrics(pred, ref, data_range=10.0, axis=2)
    np.testing.assert_allclose(sm.psnr, expected, atol=1e-6)
    assert sm.pooled()["psnr"] == pytest.approx(expected, abs=1e-6)


def test_psnr_inside_a_mask_only():
    ref = np.zeros((12, 12, 3))
    pred = np.zeros_like(ref)
    pred[:, :6] = 2.0  # error 4 inside the mask ...
    pred[:, 6:] = 100.0  # ... and huge outside it
    mask = np.zeros(ref.shape, bool)
    mask[:, :6] = True
    expected = 10 * np.log10(8.0**2 / 4.0)
    assert M.psnr(pred, ref, data_range=8.0, mask=mask) == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(M.slice_metrics(pred, ref, data_range=8.0, mask=mask).psnr, expected, atol=1e-6)


def test_psnr_equals_monai_without_mask():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 20, 24)) * 500
    pred = ref + rng.normal(0, 5, ref.shape)
    monai = PSNRMetric(max_val=500.0, reduction="none")(torch.from_numpy(pred[:, None]), torch.from_numpy(ref[:, None]))
    ours = M.slice_metrics(pred, ref, data_range=500.0, axis=0).psnr
    np.testing.assert_allclose(ours, monai.numpy().ravel(), atol=1e-4)


def test_nrmse_definition():
    """NRMSE = ||pred - ref|| / ||ref|| over the mask: ref = [3, 4] (norm 5), error [1, 2] (norm sqrt 5)."""
    ref = np.array([3.0, 4.0, 7.0]).reshape(3, 1, 1)
    pred = np.array([4.0, 6.0, -50.0]).reshape(3, 1, 1)
    mask = np.array([True, True, False]).reshape(3, 1, 1)
    assert M.nrmse(pred, ref, mask=mask) == pytest.approx(np.sqrt(5) / 5, rel=1e-12)
    # per slice on a 12 x 12 slice: constant ref 2, constant error 0.5 -> 0.25 regardless of the data range
    ref = np.full((12, 12, 2), 2.0)
    pred = ref + 0.5
    np.testing.assert_allclose(M.slice_metrics(pred, ref, data_range=1.0).nrmse, 0.25, rtol=1e-12)
    np.testing.assert_allclose(M.slice_metrics(pred, ref, data_range=99.0).nrmse, 0.25, rtol=1e-12)


def test_ssim_map_equals_monai():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((3, 40, 33)).astype(np.float32) * 300)
    y = x + torch.from_numpy(rng.normal(0, 20, x.shape).astype(np.float32))
    ours = M.ssim_map(x, y, data_range=300.0)
    ref, _ = compute_ssim_and_cs(x[:, None], y[:, None], spatial_dims=2, kernel_size=[11, 11], kernel_sigma=[1.5, 1.5], data_range=300.0)
    assert ours.shape == ref[:, 0].shape
    torch.testing.assert_close(ours, ref[:, 0], atol=1e-5, rtol=0)


def test_ssim_mean_inside_mask_matches_monai_map():
    """The pooled ssim() is MONAI's map averaged over the cropped mask."""
    rng = np.random.default_rng(2)
    ref = rng.random((30, 28, 5)).astype(np.float32) * 100
    pred = ref + rng.normal(0, 10, ref.shape).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[5:25, 3:20] = True
    p = torch.from_numpy(np.moveaxis(pred, 2, 0))[:, None]
    r = torch.from_numpy(np.moveaxis(ref, 2, 0))[:, None]
    smap, _ = compute_ssim_and_cs(p, r, spatial_dims=2, kernel_size=[11, 11], kernel_sigma=[1.5, 1.5], data_range=100.0)
    m = np.moveaxis(mask, 2, 0)[:, 5:-5, 5:-5]
    expected = float(smap[:, 0].numpy()[m].mean())
    assert M.ssim(pred, ref, data_range=100.0, mask=mask) == pytest.approx(expected, abs=1e-5)


def test_identical_slices_and_empty_mask():
    ref = np.random.default_rng(3).random((16, 16, 3))
    mask = np.ones(ref.shape, bool)
    mask[..., 1] = False
    sm = M.slice_metrics(ref, ref, data_range=1.0, mask=mask)
    assert np.isinf(sm.psnr[0]) and sm.ssim[0] == pytest.approx(1.0) and sm.nrmse[0] == 0
    assert np.isnan(sm.psnr[1]) and np.isnan(sm.ssim[1]) and np.isnan(sm.nrmse[1])


def test_robust_z_and_data_range():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD 1
    np.testing.assert_allclose(M.robust_z(x), 0.6745 * (x - 3.0))
    np.testing.assert_allclose(M.robust_z(x, min_scale=10.0), (x - 3.0) / 10.0)
    assert M.masked_data_range(np.array([[-5.0, 2.0, 50.0]]), np.array([[True, True, False]])) == 7.0
    with pytest.raises(ValueError, match="constant"):
        M.masked_data_range(np.ones((3, 3)))
    with pytest.raises(ValueError, match="data_range"):
        M.psnr(np.ones(3), np.ones(3), data_range=0)


def test_head_mask_keeps_a_single_slice_and_the_ends_of_a_thin_stack():
    ref = np.zeros((40, 40, 1), np.float32)
    ref[10:30, 12:28, 0] = 100.0
    mask = M.head_mask(ref, planar=True)
    assert mask[10:30, 12:28, 0].all() and not mask[:5].any()
    np.testing.assert_array_equal(M.head_mask(ref), mask)  # the 3D closing no longer erodes it away
    vol = np.repeat(ref, 4, axis=2)  # e.g. a 4-slice crop (validate --mask auto)
    np.testing.assert_array_equal(M.head_mask(vol, planar=True), np.repeat(mask, 4, axis=2))
    np.testing.assert_array_equal(M.head_mask(vol), np.repeat(mask, 4, axis=2))
