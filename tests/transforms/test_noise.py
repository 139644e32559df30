"""Noise-level estimation on real data: Colin27 with synthetic Rician noise of known sigma.

Colin27 (an average of 27 scans) carries its own noise of about 0.6% of the bright signal inside the head
(its air is zeroed); the tolerances below allow for it at the low levels.
"""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import torch
from data_volumes import needs_colin27
from monai.data import MetaTensor

from monai_sr.errors import InputError
from monai_sr.training.datasets import shared_data_dir
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.noise import (
    NOISE_SIGMA_KEY,
    EstimateNoise,
    EstimateNoised,
    background_mask,
    haar_finest_diagonal,
    sigma_from_background,
    sigma_from_wavelet,
)

COLIN = shared_data_dir() / "colin27_t1_1mm.nii.gz"
pytestmark = needs_colin27


@pytest.fixture(scope="module")
def colin() -> np.ndarray:
    """Colin27, RAS, bright signal (99.5th percentile) = 1; an axial slab of 40 slices through the head."""
    v = np.asarray(nib.as_closest_canonical(nib.load(str(COLIN))).dataobj, dtype=np.float32)
    return (v / robust_max(v))[:, :, 70:110].copy()


def _noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return rician_noise(clean, sigma, np.random.default_rng(seed))


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.10])
def test_background_moments_3d(colin, sigma):
    est = sigma_from_background(_noisy(colin, sigma))
    assert est == pytest.approx(sigma, rel=0.03)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.10])
def test_background_mode_3d(colin, sigma):
    est = sigma_from_background(_noisy(colin, sigma), statistic="mode")
    assert est == pytest.approx(sigma, rel=0.03)


@pytest.mark.parametrize("sigma", [0.03, 0.08])
def test_background_2d_slice(colin, sigma):
    sl = _noisy(colin, sigma, seed=1)[:, :, 20]
    assert sigma_from_background(sl) == pytest.approx(sigma, rel=0.05)
    assert sigma_from_background(sl, statistic="mode") == pytest.approx(sigma, rel=0.05)


def test_background_mask_keeps_dark_structures_inside_the_head(colin):
    """Dark skull and CSF inside the head are not air: no background voxel lies inside the clean head."""
    noisy = _noisy(colin, 0.05)
    air = background_mask(noisy)
    head = colin > 0.1
    assert air.mean() > 0.2  # there is air in this slab
    assert not np.any(air & head)


def test_background_needs_air(colin):
    inside = _noisy(colin, 0.05)[60:120, 80:140, :]  # a block inside the brain: no air
    with pytest.raises(InputError, match="no air"):
        sigma_from_background(inside)
    assert sigma_from_wavelet(inside) == pytest.approx(0.05, rel=0.1)  # the wavelet method still works


def test_zero_filled_air_is_refused(colin):
    """Colin27's air is zeroed: no noise is left there to measure; the wavelet method reads Colin27's own
    noise in the head (about 0.6% of the bright signal)."""
    with pytest.raises(InputError, match="zero-filled"):
        sigma_from_background(colin)
    assert 0.003 < sigma_from_wavelet(colin) < 0.01


@pytest.mark.parametrize("sigma", [0.03, 0.05, 0.10])
def test_wavelet_3d(colin, sigma):
    noisy = _noisy(colin, sigma)
    total = np.hypot(sigma, 0.006)  # plus Colin27's own noise
    assert sigma_from_wavelet(noisy) == pytest.approx(total, rel=0.06)


def test_wavelet_2d_slice(colin):
    assert sigma_from_wavelet(_noisy(colin, 0.05, seed=2)[:, :, 20]) == pytest.approx(0.05, rel=0.08)


def test_wavelet_head_only_beats_all_blocks_on_rician(colin):
    """Over all blocks the Rayleigh air (smaller spread) biases the MAD low; the head-only median does not."""
    noisy = _noisy(colin, 0.05)
    all_blocks = sigma_from_wavelet(noisy, foreground=False)
    head = sigma_from_wavelet(noisy)
    assert all_blocks < 0.9 * 0.05
    assert abs(head - 0.05) < abs(all_blocks - 0.05)


def test_haar_diagonal_band():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert haar_finest_diagonal(x).tolist() == [[0.0]]  # a plane has no diagonal detail
    checker = np.indices((4, 6, 2)).sum(axis=0) % 2 * 1.0  # 3D checkerboard: all energy in the HHH band
    band = haar_finest_diagonal(checker)
    assert band.shape == (2, 3, 1)
    assert np.sum(band**2) == pytest.approx(np.sum((checker - checker.mean()) ** 2))  # orthonormal
    rng = np.random.default_rng(0)
    for shape in [(256, 255), (64, 64, 33)]:  # white noise: the band has the noise's standard deviation
        assert haar_finest_diagonal(rng.normal(0, 0.3, shape)).std() == pytest.approx(0.3, rel=0.02)


def test_agrees_with_dipy_estimate_sigma(colin):
    """DIPY's local-neighbourhood estimator (``N=0``: no Rician correction) on the same 3D noisy slab:
    both near the true sigma at 5%; ours closer (DIPY's assumes a locally flat image)."""
    dipy_noise = pytest.importorskip("dipy.denoise.noise_estimate")
    noisy = _noisy(colin, 0.05)
    theirs = float(np.mean(dipy_noise.estimate_sigma(noisy, N=0)))
    ours_bg, ours_wav = sigma_from_background(noisy), sigma_from_wavelet(noisy)
    assert ours_bg == pytest.approx(theirs, rel=0.15)
    assert ours_wav == pytest.approx(theirs, rel=0.15)
    assert abs(ours_bg - 0.05) < abs(theirs - 0.05)


def test_transform_metatensor_and_relative(colin):
    noisy = _noisy(colin, 0.05) * 200.0  # image units: bright signal ~200
    img = MetaTensor(torch.from_numpy(noisy[None]))
    out = EstimateNoise("background")(img)
    assert out is img
    assert out.meta[NOISE_SIGMA_KEY][0] == pytest.approx(0.05 * 200.0, rel=0.03)
    rel = EstimateNoise("wavelet", relative=True)
    rel(torch.from_numpy(noisy[None]))
    assert rel.sigma[0] == pytest.approx(0.05 * 200.0 / robust_max(noisy), rel=0.06)


def test_dict_twin_and_bad_input(colin):
    noisy = _noisy(colin, 0.05)[:, :, 20]
    d = EstimateNoised("image", method="wavelet")({"image": noisy[None], "other": 1})
    assert d["image_noise_sigma"][0] == pytest.approx(0.05, rel=0.08)
    assert d["other"] == 1
    with pytest.raises(ValueError, match="channel-first"):
        EstimateNoise()(noisy[None, None, :, :, None])
    with pytest.raises(ValueError, match="wavelet"):
        EstimateNoise("wavlet")


def test_report_noise_adapt_hook(colin):
    """As enhance's adapt hook: the network comes back untouched, each case's sigma is recorded (as a
    fraction of the bright signal of the normalised input), the wavelet method stands in without air."""
    from monai_sr.transforms.noise import ReportNoise

    net = torch.nn.Identity()
    report = ReportNoise()
    noisy = _noisy(colin, 0.05)
    img = MetaTensor(torch.from_numpy(noisy[None]), meta={"filename_or_obj": "case_a.nii.gz", "monai_sr_notes": []})
    assert report(img, net) is net
    inside = MetaTensor(torch.from_numpy(noisy[None, 60:120, 80:140, :].copy()), meta={"filename_or_obj": "case_b"})
    report(inside, net)
    (a, b) = report.records
    assert a["source"] == "case_a.nii.gz" and a["method"] == "background" and a["sigma"] == pytest.approx(0.05, rel=0.03)
    assert b["method"] == "wavelet" and b["sigma"] == pytest.approx(0.05, rel=0.1)
    assert img.meta[NOISE_SIGMA_KEY] == [a["sigma"]]
    assert img.meta["monai_sr_notes"] == [f"estimated noise sigma {100 * a['sigma']:.2f}% of the bright signal (background)"]
    assert "case_a.nii.gz: noise sigma 5.0" in report.summary()


def test_report_noise_smaller_is_the_sure_blends_estimate(colin):
    """``ReportNoise("smaller")`` reports exactly the sigma the SURE blend uses: the smaller of the background
    and the wavelet estimate across the thick-slice axis the affine gives (here axis 0 of 3 mm voxels)."""
    from monai_sr.transforms.noise import ReportNoise, noise_slice_axis, sigma_smaller_of_two

    assert noise_slice_axis((3.0, 1.0, 1.0)) == 0 and noise_slice_axis((1.0, 1.0, 1.2)) == 2
    noisy = _noisy(colin, 0.05)
    img = MetaTensor(torch.from_numpy(noisy[None]), affine=torch.diag(torch.tensor([3.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
    report = ReportNoise("smaller")
    report(img, torch.nn.Identity())
    (rec,) = report.records
    sigma, how = sigma_smaller_of_two(noisy, 0)
    assert rec["sigma"] == sigma and rec["method"] == f"smaller: {how.removesuffix(' (smaller of two estimates)')}"
    assert rec["sigma"] == pytest.approx(0.05, rel=0.1)
    assert sigma <= sigma_from_background(noisy) + 1e-12 and sigma <= sigma_from_wavelet(noisy, slice_axis=0) + 1e-12


def test_report_noise_takes_a_given_sigma_in_the_inputs_units(colin):
    """A known sigma (input units) skips the estimate: divided by enhance's normalisation, noted as given,
    and left where the SURE blend reads its sigma; a sigma that is not a positive number is refused."""
    from monai_sr.meta import INTENSITY_SCALE_KEY, NOTES_KEY
    from monai_sr.transforms.noise import SMALLER_SIGMA_KEY, ReportNoise

    img = MetaTensor(torch.from_numpy(_noisy(colin, 0.05)[None]), meta={INTENSITY_SCALE_KEY: 400.0, NOTES_KEY: []})
    report = ReportNoise("smaller", sigma=12.0)
    report(img, torch.nn.Identity())
    (rec,) = report.records
    assert rec["sigma"] == pytest.approx(0.03) and rec["method"] == "given: 12 in the input's units"
    assert img.meta[SMALLER_SIGMA_KEY] == (pytest.approx(0.03), "given: 12 in the input's units")
    assert img.meta[NOTES_KEY] == ["noise sigma 3.00% of the bright signal (given: 12 in the input's units)"]
    with pytest.raises(ValueError, match="normalisation"):  # not through enhance: no scale to convert with
        ReportNoise(sigma=12.0)(MetaTensor(torch.zeros(1, 8, 8, 2)), torch.nn.Identity())
    for bad in (0, -1.0, float("nan"), "12", True):
        with pytest.raises(InputError, match="noise_sigma"):
            ReportNoise(sigma=bad)
