"""LR/HR training pairs from an HR volume: aligned patches whose affines obey the field-of-view rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_sr import geometry
from monai_sr.transforms.lowres import RandSimulateLowResolution, SimulateLowResolution
from monai_sr.transforms.pairs import MakeSRPair, MakeSRPaird, RandPatchPair, RandPatchPaird, pair_factors, slice_pairs


def _hr() -> MetaTensor:
    a = np.eye(4)
    a[:3, :3] = np.array([[0, 0, 1.2], [-0.8, 0, 0], [0, 1.0, 0]])
    a[:3, 3] = [12.0, -4.0, 7.5]
    x = torch.rand(1, 24, 16, 12, generator=torch.Generator().manual_seed(0))
    return MetaTensor(x, affine=torch.as_tensor(a, dtype=torch.float64))


@pytest.mark.parametrize(
    "factors, lr_size", [((2, 2, 1), (4, 3, 1)), ((1, 2, 2), (1, 5, 3)), ((2, 1, 3), (5, 4, 2)), ((3, 2, 1), 2)]
)
def test_patch_pairs_are_aligned(factors, lr_size):
    hr = _hr()
    lr, hr_same = MakeSRPair(SimulateLowResolution(factors))(hr)
    assert hr_same is hr and pair_factors(lr, hr) == factors
    t = RandPatchPair(lr_size).set_random_state(3)
    for _ in range(3):
        lr_p, hr_p = t(lr, hr)
        size = (lr_size,) * 3 if np.isscalar(lr_size) else lr_size
        assert tuple(lr_p.shape[1:]) == size and tuple(hr_p.shape[1:]) == tuple(s * p for s, p in zip(factors, size))
        np.testing.assert_allclose(geometry.scaled_affine(np.asarray(lr_p.affine), factors), np.asarray(hr_p.affine), atol=1e-9)
        # the crops are the pieces of the whole volumes at the sampled position
        i = t.start
        torch.testing.assert_close(lr_p.as_tensor(), lr.as_tensor()[:, i[0] : i[0] + size[0], i[1] : i[1] + size[1], i[2] : i[2] + size[2]])


def test_slice_pairs_along_any_axis():
    hr = _hr()
    for axis in range(3):
        factors = [2, 2, 2]
        factors[axis] = 1
        lr = SimulateLowResolution(factors)(hr)
        pairs = list(slice_pairs(lr, hr, axis=axis))
        assert len(pairs) == hr.shape[axis + 1]
        lr_k, hr_k = pairs[1]
        assert lr_k.ndim == 3 and tuple(hr_k.shape[1:]) == tuple(2 * n for n in lr_k.shape[1:])
        torch.testing.assert_close(hr_k, hr.as_tensor().select(axis + 1, 1))


def test_dict_pipeline_is_reproducible_and_matches_arrays():
    hr = _hr()
    def pipeline():
        degrade = RandSimulateLowResolution((1, 1, 2), slice_axis=2, slice_thickness_range=(1.0, 3.0))
        return Compose([MakeSRPaird("hr", "lr", degrade), RandPatchPaird("lr", "hr", (6, 4, 3))]).set_random_state(11)

    first, second = pipeline()({"hr": hr}), pipeline()({"hr": hr})
    torch.testing.assert_close(first["lr"].as_tensor(), second["lr"].as_tensor())
    torch.testing.assert_close(first["hr"].as_tensor(), second["hr"].as_tensor())
    assert 1.0 <= first["lr"].meta["slice_thickness"] <= 3.0
    np.testing.assert_allclose(
        geometry.scaled_affine(np.asarray(first["lr"].affine), (1, 1, 2)), np.asarray(first["hr"].affine), atol=1e-9
    )
    # the dict twin crops where the array transform does with the same random state
    lr = SimulateLowResolution((2, 2, 1))(hr)
    a = RandPatchPair(4).set_random_state(5)(lr, hr)
    d = RandPatchPaird("lr", "hr", 4).set_random_state(5)({"lr": lr, "hr": hr})
    torch.testing.assert_close(d["lr"].as_tensor(), a[0].as_tensor())
    torch.testing.assert_close(d["hr"].as_tensor(), a[1].as_tensor())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandPatchPair(0), "got 0"),
        (lambda: RandPatchPair((4, -1, 2)), "got -1"),
        (lambda: RandPatchPair(30)(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 16, 8)), "size 30"),
        (lambda: RandPatchPair((2, 2))(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 16, 8)), r"\[2, 2\]"),
        (lambda: pair_factors(torch.zeros(1, 8, 8, 8), torch.zeros(1, 12, 16, 8)), "HR size 12"),
        (lambda: list(slice_pairs(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 16, 16), axis=2)), "factor 2"),
        (lambda: list(slice_pairs(torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 16, 8), axis=3)), "axis 3"),
        (lambda: MakeSRPair("blur"), "blur"),
        (lambda: MakeSRPaird(["a", "b"], "lr", SimulateLowResolution(2)), r"\['lr'\]"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
