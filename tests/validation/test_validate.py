"""validate_volumes: flagging, resampling between grids, data consistency, QA, axis rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SAMPLE_SERIES
from monai.transforms import SpatialCrop

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.pipeline import load_volume
from monai_sr.transforms.kspace import KSpaceTruncation
from monai_sr.validation.metrics import head_mask
from monai_sr.validation.qa import position_findings, run_qa
from monai_sr.validation.validate import default_slice_axis, validate_volumes


def test_one_corrupted_slice_is_flagged_alone(colin_crop, noisy):
    rng = np.random.default_rng(11)
    bad = 13
    noisy[0, :, :, bad] += torch.from_numpy(rng.normal(0.0, 120.0, noisy.shape[1:3]).astype(np.float32))
    result = validate_volumes(noisy, colin_crop)
    assert result.mode == "reference"
    assert np.flatnonzero(result.flagged).tolist() == [bad]
    assert result.worst[0] == bad
    assert "PSNR" in result.reasons[bad]
    assert result.settings["resampled"] is False
    # data range: reference max - min inside the (auto) head mask
    inside = colin_crop[0].numpy()[head_mask(colin_crop[0].numpy())]
    assert result.settings["data_range"] == pytest.approx(float(inside.max() - inside.min()))
    good = np.delete(result.column("psnr"), bad)
    assert good.min() > 40 and result.column("psnr")[bad] < good.min() - 10


def test_clean_prediction_flags_nothing(colin_crop, noisy):
    result = validate_volumes(noisy, colin_crop, mask="none")
    assert not result.flagged.any()
    assert result.settings["mask"].startswith("none")


def test_positions_follow_the_affine(colin_crop, noisy):
    result = validate_volumes(noisy, colin_crop)
    np.testing.assert_allclose(np.diff(result.positions_mm), 2.0, atol=1e-6)  # 2 mm slices, oblique grid
    assert result.axis == 2 and "largest spacing" in result.settings["axis_rule"]


def test_grids_differ_reference_is_resampled(colin_crop, noisy):
    """A bigger crop of the same volume as reference: resampled onto the prediction grid, near-exact match."""
    from helpers import SAMPLE_REFERENCE

    big = SpatialCrop(roi_start=(30, 30, 10), roi_end=(150, 170, 50))(load_volume(SAMPLE_REFERENCE))
    same = validate_volumes(noisy, colin_crop)
    moved = validate_volumes(noisy, big)
    assert moved.settings["resampled"] is True and "affines" in moved.settings["resampling"]
    # integer shifts: trilinear sampling at voxel centres reproduces the voxels
    np.testing.assert_allclose(moved.column("psnr"), same.column("psnr"), atol=1e-3)
    assert moved.summary()["settings"]["resampled"] is True


def test_no_overlap_is_refused(colin_crop, tmp_path):
    from helpers import SAMPLE_REFERENCE

    far = SpatialCrop(roi_start=(0, 0, 0), roi_end=(30, 30, 10))(load_volume(SAMPLE_REFERENCE))
    with pytest.raises(GeometryError, match="does not overlap") as exc:
        validate_volumes(colin_crop, far)
    assert "prediction" in str(exc.value)


def test_data_consistency_with_the_low_resolution_input(colin_crop):
    """The prediction is the truth; the input is its k-space truncation -> near-perfect consistency.
    A prediction on a grid that is not an integer refinement of the input's is refused."""
    from monai.data import MetaTensor

    low = MetaTensor(KSpaceTruncation(factors=(2, 2), axes=(0, 1))(colin_crop.as_tensor()),
                     affine=geometry.coarsened_affine(colin_crop.affine.numpy(), (2, 2, 1)))
    result = validate_volumes(colin_crop, lowres=low)
    assert result.mode == "consistency" and result.settings["factors"] == [2, 2, 1]
    assert np.nanmin(result.column("psnr")) > 60
    assert result.n_slices == 24 and not result.flagged.any()
    moved = low.affine.numpy().copy()
    moved[0, 3] += 3.0  # 3 mm to the right
    shifted = MetaTensor(low.as_tensor(), affine=moved)
    with pytest.raises(GeometryError, match="coarsened"):
        validate_volumes(colin_crop, lowres=shifted)
    odd = SpatialCrop(roi_start=(0, 0, 0), roi_end=(49, 60, 24))(low)
    with pytest.raises(GeometryError, match="integer factor"):
        validate_volumes(colin_crop, lowres=odd)


def test_qa_finds_outlier_and_duplicated_slices(colin_crop):
    vol = colin_crop.clone()
    vol[0, :, :, 5] *= 1.6  # intensity jump
    vol[0, :, :, 17] = vol[0, :, :, 16]  # stored twice
    result = validate_volumes(vol)
    assert result.mode == "qa" and result.metrics is None
    kinds = {(f.slice, f.kind) for f in result.findings}
    assert (5, "outlier") in kinds and (17, "duplicated slice") in kinds
    assert set(np.flatnonzero(result.flagged)) == {5, 17}


def test_qa_of_a_clean_dicom_series_has_no_findings(small_series):
    vol = load_volume(small_series)
    stats, findings = run_qa(vol[0].numpy(), 2, meta=vol.meta)
    assert findings == [] and stats["mean"].shape == (6,)
    assert default_slice_axis(vol)[0] == 2


def test_position_findings_list_every_irregular_step():
    p = np.array([0.0, 2.0, 4.0, 4.0, 6.0, 10.0, 12.0, 15.1, 17.1, 19.1])
    found = [(f.slice, f.kind) for f in position_findings(p)]
    assert found == [(3, "duplicated position"), (5, "missing slices"), (7, "unequal step")]


def test_default_axis_rules(colin_crop):
    from monai.data import MetaTensor

    def vol(spacing):
        return MetaTensor(np.zeros((1, 4, 4, 4), np.float32), affine=np.diag([*spacing, 1.0]))

    assert default_slice_axis(vol((1, 1, 1)))[0] == 2
    assert default_slice_axis(vol((1, 3, 1)))[0] == 1
    assert default_slice_axis(vol((3, 3, 1)))[0] == 1  # tie without axis 2: the higher axis
    assert default_slice_axis(vol((3, 1, 3)))[0] == 2
    assert default_slice_axis(load_volume(SAMPLE_SERIES))[0] == 2


def test_geometry_helpers():
    a = np.diag([2.0, 3.0, 4.0, 1.0])
    a[:3, 3] = [10, 20, 30]
    b = geometry.scaled_affine(a, (2, 1, 1))
    m = geometry.index_map(b, a)
    np.testing.assert_allclose(m @ [1, 0, 0, 1], [0.25, 0, 0, 1])  # output voxel 1 at (1 + .5) / 2 - .5
    flip = a.copy()
    flip[:3, 2] *= -1
    np.testing.assert_allclose(geometry.slice_positions(flip, (2, 2, 3), 2), [-30, -26, -22])
    np.testing.assert_allclose(geometry.slice_positions(a, (5, 2, 3), 0), [10, 12, 14, 16, 18])


def test_mask_from_a_volume(colin_crop, noisy):
    from monai.data import MetaTensor

    m = np.zeros(colin_crop.shape, np.float32)
    m[0, 20:60, 30:90, :] = 1.0
    result = validate_volumes(noisy, colin_crop, mask=MetaTensor(m, affine=colin_crop.affine))
    assert result.settings["mask_voxels"] == 40 * 60 * 24 and result.settings["mask"].startswith("file")
    np.testing.assert_array_equal(result.column("mask_voxels"), 40 * 60)
    inside = colin_crop[0].numpy()[20:60, 30:90]
    assert result.settings["data_range"] == pytest.approx(float(inside.max() - inside.min()))


@pytest.mark.parametrize("how", ["all", "part"])
def test_nan_or_inf_in_a_prediction_tensor_is_refused_with_the_count(colin_crop, noisy, how):
    pred = noisy.clone()
    if how == "all":
        pred[:] = float("nan")
        expected = rf"{pred[0].numel()} NaN/Inf voxel\(s\) in 24 of 24 slice\(s\) along index axis 2 \(first at voxel \(0, 0, 0\)\)"
    else:
        pred[0, 10, 20, 5], pred[0, 11, 20, 5], pred[0, 1, 2, 9] = float("nan"), float("-inf"), float("inf")
        expected = r"3 NaN/Inf voxel\(s\) in 2 of 24 slice\(s\) along index axis 2 \(first at voxel \(1, 2, 9\)\)"
    with pytest.raises(InputError, match="the prediction holds " + expected + "; refused"):
        validate_volumes(pred, colin_crop)
    with pytest.raises(InputError, match="the reference holds"):
        validate_volumes(colin_crop, pred)
