"""Rician denoising pairs on the real training volumes: the noise level and shapes the bundle trains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_volumes import require_data

from monai_sr.training.datasets import TRAINING_FILES, RandomPairDataset, load_training_volumes
from monai_sr.training.denoise import RicianDenoisePairs, snr_of_fraction
from monai_sr.transforms.artefacts import rician_sigma


@pytest.fixture(scope="module")
def volumes():
    return load_training_volumes(data_dir=require_data(*TRAINING_FILES))


def test_pairs_have_the_drawn_noise_level(volumes):
    make = RicianDenoisePairs(sigma_range=(0.05, 0.05), min_foreground=0.9)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(20):
        pair = make(volumes[1], rng, 48)
        assert pair["image"].shape == pair["label"].shape == (1, 48, 48)
        assert pair["image"].dtype == torch.float32
        inside = pair["label"] > 0.3  # high SNR: Rician ~ Gaussian of the same sigma
        diffs.append((pair["image"] - pair["label"])[inside])
    assert float(torch.cat(diffs).std()) == pytest.approx(0.05, rel=0.05)


def test_crops_are_mostly_head_and_deterministic(volumes):
    ds = RandomPairDataset(volumes, RicianDenoisePairs(), length=32, patch=32, seed=3)
    fg = np.mean([float((ds[i]["label"] > 0.1).float().mean()) for i in range(32)])
    assert fg > 0.5  # the MNI volume alone is 78% zeros
    torch.testing.assert_close(ds[5]["image"], ds[5]["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["image"], RandomPairDataset(volumes, RicianDenoisePairs(), length=32, patch=32, seed=3)[5]["image"])


def test_zoom_and_gain_augmentation(volumes):
    plain = RicianDenoisePairs(sigma_range=(0.0, 0.0))
    aug = RicianDenoisePairs(sigma_range=(0.0, 0.0), gain_range=(0.5, 0.5), zoom_range=(0.5, 0.5), zoom_prob=1.0)
    a = plain(volumes[0], np.random.default_rng(1), 40)["label"]
    b = aug(volumes[0], np.random.default_rng(1), 40)["label"]
    assert b.shape == (1, 40, 40)
    assert float(b.max()) <= 0.5 * float(volumes[0].max()) + 1e-6
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="zoom_range"):
        RicianDenoisePairs(zoom_range=(0.5, 5.0))
    with pytest.raises(ValueError, match="sigma_range"):
        RicianDenoisePairs(sigma_range=(0.1, 0.01))


def test_snr_of_fraction_names_the_same_noise(volumes):
    """RicianNoise's SNR (mean foreground / sigma) for "5% of the bright signal" gives sigma = 0.05."""
    snr = snr_of_fraction(volumes[1], 0.05)
    assert rician_sigma(volumes[1], snr) == pytest.approx(0.05, rel=1e-6)


def test_zoom_in_gives_smoother_crops(volumes):
    """zoom 2: a 20-pixel crop enlarged to 40 (bicubic, >= 0): smoother per pixel than a plain crop."""
    plain = RicianDenoisePairs(sigma_range=(0.0, 0.0))
    zin = RicianDenoisePairs(sigma_range=(0.0, 0.0), zoom_range=(2.0, 2.0), zoom_prob=1.0)

    def roughness(make):
        labels = [make(volumes[0], np.random.default_rng(i), 40)["label"][0] for i in range(8)]
        assert all(t.shape == (40, 40) and float(t.min()) >= 0 for t in labels)
        return float(np.mean([(t[1:] - t[:-1]).abs().mean() / max(float(t.mean()), 1e-6) for t in labels]))

    assert roughness(zin) < 0.7 * roughness(plain)
