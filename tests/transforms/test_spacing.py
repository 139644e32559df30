"""Scale from spacing, acquisition geometry from DICOM meta, SR geometry against SimpleITK's Expand."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from monai_sr.transforms import spacing as sp

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, written out to stay independent of monai_sr


def _oblique_affine(spacing=(0.9766, 0.9766, 4.0)) -> np.ndarray:
    theta = np.deg2rad(17.0)
    rot = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = [101.0, -12.0, 40.5]
    return a


def _headers(**tags) -> list[dict]:
    ds = pydicom.Dataset()
    for k, v in tags.items():
        setattr(ds, k, v)
    return [ds.to_json_dict()]


def _volume(shape=(6, 5, 4), headers=None, **meta) -> MetaTensor:
    m = MetaTensor(torch.rand(1, *shape), affine=torch.as_tensor(_oblique_affine(), dtype=torch.float64))
    if headers is not None:
        m.meta["dicom_headers"] = headers
    m.meta.update(meta)
    return m


def test_scale_from_spacing_policies():
    assert sp.scale_from_spacing((0.9766, 0.9766, 5.0), (0.4883, 0.4883, 1.0)) == (2, 2, 5)
    assert sp.scale_from_spacing((2.0, 2.0, 3.0), 1.0) == (2, 2, 3)
    with pytest.raises(ValueError, match=r"axis 2: spacing ratio 5.2 / 2 = 2.6"):
        sp.scale_from_spacing((1.0, 1.0, 5.2), (1.0, 1.0, 2.0))
    assert sp.scale_from_spacing((1.0, 1.0, 5.2), (1.0, 1.0, 2.0), policy="round") == (1, 1, 3)
    assert sp.scale_from_spacing((1.0, 1.0, 5.2), (1.0, 1.0, 2.0), policy="floor") == (1, 1, 2)
    with pytest.raises(ValueError, match=r"axis 1: target spacing 3 mm is coarser than the spacing 1 mm"):
        sp.scale_from_spacing((1.0, 1.0, 1.0), (1.0, 3.0, 1.0))
    with pytest.raises(ValueError, match="axis 0: spacing 0 mm"):
        sp.scale_from_spacing((0.0, 1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="must have 3 values"):
        sp.scale_from_spacing((1.0, 1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="ceil"):
        sp.scale_from_spacing((2.0,), 1.0, policy="ceil")


def test_acquisition_geometry_reads_thickness_gap_and_type():
    vol = _volume(headers=_headers(SliceThickness="3", SpacingBetweenSlices="4", MRAcquisitionType="2D"))
    acq = sp.acquisition_geometry(vol)
    np.testing.assert_allclose(acq.spacing, (0.9766, 0.9766, 4.0))
    assert (acq.slice_thickness, acq.slice_gap, acq.acquisition_type) == (3.0, pytest.approx(1.0), "2D")
    assert acq.spacing_between_slices_tag == 4.0
    # a thickness a transform put in meta wins over the header; no headers: nothing invented
    assert sp.acquisition_geometry(_volume(headers=vol.meta["dicom_headers"], slice_thickness=1.5)).slice_thickness == 1.5
    bare = sp.acquisition_geometry(_volume())
    assert (bare.slice_thickness, bare.slice_gap, bare.acquisition_type) == (None, None, None)
    with pytest.raises(ValueError, match="slice_axis 3"):
        sp.acquisition_geometry(vol, slice_axis=3)


@pytest.mark.parametrize("scale", [(2, 2, 1), (1, 1, 4), (3, 2, 2)])
def test_sr_geometry_matches_simpleitk_expand(scale):
    """SimpleITK's Expand keeps the field of view; its grid is the one SRGeometry gives the output."""
    lr = _volume(shape=(4, 3, 2))
    out = sp.SRGeometry(scale)(torch.rand(1, *(n * s for n, s in zip(lr.shape[1:], scale))), lr)
    lps = FLIP @ _oblique_affine()
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.Image([4, 3, 2], sitk.sitkFloat32)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    ref = sitk.Expand(img, list(scale))
    expected = np.eye(4)
    expected[:3, :3] = np.asarray(ref.GetDirection()).reshape(3, 3) * np.asarray(ref.GetSpacing())
    expected[:3, 3] = ref.GetOrigin()
    assert tuple(out.shape[1:]) == ref.GetSize()
    np.testing.assert_allclose(np.asarray(out.affine), FLIP @ expected, atol=1e-6)
    # a thin wrapper: the same as apply_sr_geometry
    np.testing.assert_array_equal(np.asarray(out.affine), np.asarray(sp.apply_sr_geometry(out, lr, scale).affine))


def test_sr_geometry_divides_slice_thickness_only_across_slices():
    lr = _volume(headers=_headers(SliceThickness="3"))
    through = sp.SRGeometry((1, 1, 2))(torch.rand(1, 6, 5, 8), lr)
    assert through.meta["slice_thickness"] == pytest.approx(1.5)
    assert through.meta["dicom_headers"] == lr.meta["dicom_headers"]  # the rest of the meta travels
    in_plane = sp.SRGeometry((2, 2, 1))(torch.rand(1, 12, 10, 4), lr)
    assert "slice_thickness" not in in_plane.meta
    again = sp.SRGeometry((1, 1, 3))(torch.rand(1, 6, 5, 24), through)  # the meta value wins over the header
    assert again.meta["slice_thickness"] == pytest.approx(0.5)
    assert "slice_thickness" not in sp.SRGeometry((1, 1, 2))(torch.rand(1, 6, 5, 8), _volume()).meta


def test_sr_geometry_without_source_and_dict_twin():
    lr = _volume(headers=_headers(SliceThickness="3"))
    out = torch.nn.functional.interpolate(lr[None], scale_factor=(2, 2, 2))[0]  # keeps lr's meta
    assert isinstance(out, MetaTensor)
    a = sp.SRGeometry(2)(out)
    b = sp.SRGeometry(2)(out.as_tensor(), lr)
    np.testing.assert_array_equal(np.asarray(a.affine), np.asarray(b.affine))
    assert a.meta["slice_thickness"] == b.meta["slice_thickness"] == 1.5
    d = sp.SRGeometryd("pred", 2, source_key="image")({"pred": out.as_tensor(), "image": lr})
    np.testing.assert_array_equal(np.asarray(d["pred"].affine), np.asarray(b.affine))
    d2 = sp.SRGeometryd("pred", 2)({"pred": out})
    np.testing.assert_array_equal(np.asarray(d2["pred"].affine), np.asarray(b.affine))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: sp.SRGeometry(0), "got 0"),
        (lambda: sp.SRGeometry((2, -2, 1)), "got -2"),
        (lambda: sp.SRGeometry(1.5), "got 1.5"),
        (lambda: sp.SRGeometry(2, slice_axis=-1), "got -1"),
        (lambda: sp.SRGeometry((2, 2))(torch.rand(1, 4, 4, 4), _volume((2, 2, 2))), r"\[2, 2\]"),
        (lambda: sp.SRGeometry(2)(torch.rand(1, 5, 4, 4), _volume((2, 2, 2))), r"\(5, 4, 4\)"),
        (lambda: sp.SRGeometry(2)(torch.rand(1, 4, 4, 4)), "plain tensor"),
        (lambda: sp.SRGeometry(2)(_volume((5, 4, 4))), "size 5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_scale_from_spacing_round_ties_go_up_and_clinical_ratios():
    # 7 mm slices over 0.86 mm pixels: 8.14, not an integer; round -> 8 (0.875 mm), floor -> 8, exact refuses
    assert sp.scale_from_spacing((0.86, 0.86, 7.0), 0.86, policy="round") == (1, 1, 8)
    with pytest.raises(ValueError, match=r"axis 2: spacing ratio 7 / 0.86 = 8.14"):
        sp.scale_from_spacing((0.86, 0.86, 7.0), 0.86)
    # a tie goes up (Python's round() would give 4), floor keeps 4
    assert sp.scale_from_spacing((4.5,), 1.0, policy="round") == (5,)
    assert sp.scale_from_spacing((4.5,), 1.0, policy="floor") == (4,)
    assert sp.scale_from_spacing((5.5,), 1.0, policy="round") == (6,)
