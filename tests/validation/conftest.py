"""Fixtures for the validation tests: a real-ish volume (a crop of the Colin27 sample reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SAMPLE_REFERENCE
from monai.transforms import SpatialCrop

from monai_sr.pipeline import load_volume


@pytest.fixture(scope="session")
def colin_crop():
    """(1, 100, 120, 24) float32 MetaTensor, 1 x 1 x 2 mm, oblique; SpatialCrop keeps the affine true."""
    ref = load_volume(SAMPLE_REFERENCE)
    return SpatialCrop(roi_start=(40, 40, 18), roi_end=(140, 160, 42))(ref)


@pytest.fixture()
def noisy(colin_crop):
    """Prediction = reference + small Gaussian noise (sigma 4 on a 0..920 scale), seeded."""
    rng = np.random.default_rng(7)
    pred = colin_crop.clone()
    pred[0] += torch.from_numpy(rng.normal(0.0, 4.0, pred.shape[1:]).astype(np.float32))
    return pred
