"""Zero-filled k-space and bicubic interpolation as networks on the field-of-view grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from monai_sr import geometry
from monai_sr.inference import BicubicInterpolation, SliceWiseInferer, ZeroFilledInterpolation
from monai_sr.inference.baselines import baseline_network, bicubic, zero_filled
from monai_sr.transforms.kspace import KSpaceTruncation, fourier_resample


def test_zero_filled_recovers_a_band_limited_volume_on_the_fov_grid():
    rng = np.random.default_rng(0)
    hr = KSpaceTruncation(factors=(2, 2), axes=(0, 1))
    fine = rng.random((1, 32, 24, 3)).astype(np.float32)
    # a random volume band-limited to half its band, on the fine grid
    band_limited = fourier_resample(hr(fine)[0], (32, 24), (0, 1)).astype(np.float32)
    affine = torch.tensor([[0.0, 0.9, 0.0, -10.0], [1.1, 0.0, 0.0, 5.0], [0.0, 0.0, 3.0, 2.0], [0, 0, 0, 1]], dtype=torch.float64)
    fine_img = MetaTensor(torch.from_numpy(band_limited[None]), affine=affine)
    lr = hr(fine_img)  # what a scanner with half the matrix measures
    out = SliceWiseInferer(batch_size=2)(lr, ZeroFilledInterpolation(2))
    np.testing.assert_allclose(out[0].numpy(), band_limited, atol=1e-4)  # exact for a band-limited object
    np.testing.assert_allclose(out.affine.numpy(), affine.numpy(), atol=1e-9)  # the field-of-view rule
    np.testing.assert_allclose(zero_filled(lr[0].numpy()), band_limited, atol=1e-4)


def test_bicubic_is_torch_bicubic_without_corner_alignment():
    x = torch.rand(2, 1, 7, 9)
    np.testing.assert_array_equal(
        BicubicInterpolation((2, 3))(x).numpy(),
        F.interpolate(x, scale_factor=(2.0, 3.0), mode="bicubic", align_corners=False).numpy(),
    )
    vol = np.random.default_rng(1).random((7, 9, 2)).astype(np.float32)
    assert bicubic(vol, 2).shape == (14, 18, 2)
    out = SliceWiseInferer()(MetaTensor(torch.from_numpy(vol[None])), BicubicInterpolation(2))
    np.testing.assert_allclose(out.affine.numpy(), geometry.scaled_affine(np.eye(4), (2, 2, 1)), atol=1e-9)


def test_baseline_by_name():
    assert isinstance(baseline_network("zero-filled", 2), ZeroFilledInterpolation)
    assert baseline_network("bicubic", (2, 2)).scale == (2, 2)
    with pytest.raises(ValueError, match="available"):
        baseline_network("lanczos")
