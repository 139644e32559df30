"""monai_sr.geometry against independent computations (SimpleITK, hand-derived voxel centres)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from monai_sr import geometry
from monai_sr.errors import GeometryError


def _oblique_affine() -> np.ndarray:
    theta = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.9, 1.1, 2.5])
    a[:3, 3] = [-80.0, 12.5, -33.0]
    return a


@pytest.mark.parametrize("scale", [(2, 2, 1), (1, 1, 4), (3, 2, 1)])
def test_scaled_affine_matches_simpleitk_grid(scale):
    """The FOV rule equals SimpleITK's grid with spacing/s whose first voxel sits half a new voxel inside."""
    a = _oblique_affine()
    out = geometry.scaled_affine(a, scale)
    lps = geometry.ras_to_lps(a)
    sp = geometry.spacing_from_affine(lps)
    direction = lps[:3, :3] / sp
    img = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    img.SetSpacing(sp.tolist())
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    new_sp = sp / np.asarray(scale)
    # corner of the field of view (index -0.5) is shared by both grids
    corner = np.asarray(img.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    new_origin = corner + direction @ (new_sp / 2)
    expected = np.eye(4)
    expected[:3, :3] = direction * new_sp
    expected[:3, 3] = new_origin
    np.testing.assert_allclose(geometry.ras_to_lps(out), expected, atol=1e-9)
    # and the inverse brings it back
    np.testing.assert_allclose(geometry.coarsened_affine(out, scale), a, atol=1e-12)


def test_output_voxel_sits_at_fov_index():
    a = _oblique_affine()
    out = geometry.scaled_affine(a, (2, 2, 1))
    for j in range(4):
        x_out = out @ np.array([j, j, 0, 1.0])
        src = geometry.index_of_output_in_input(j, 2)
        x_in = a @ np.array([src, src, 0, 1.0])
        np.testing.assert_allclose(x_out, x_in, atol=1e-12)


def test_dicom_geometry_round_trip():
    a = _oblique_affine()
    ipp0, iop, ps = geometry.dicom_slice_geometry(a, 0)
    ipp1, _, _ = geometry.dicom_slice_geometry(a, 1)
    back = geometry.affine_from_dicom(iop, ipp0, ps, np.subtract(ipp1, ipp0))
    np.testing.assert_allclose(back, a, atol=1e-9)
    # PixelSpacing is [between rows, between columns]: rows are stepped by index j
    assert ps == pytest.approx([1.1, 0.9])


@pytest.mark.parametrize(
    "affine, message",
    [
        (np.eye(3), "4x4"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "not orthogonal"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1.0]]), "last row"),
    ],
)
def test_check_affine_rejects(affine, message):
    with pytest.raises(GeometryError, match=message):
        geometry.check_affine(affine)


@pytest.mark.parametrize("scale", [0, -2, 1.5, (2, 2)])
def test_scaled_affine_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        geometry.scaled_affine(np.eye(4), scale)


def test_slice_positions_checks():
    assert geometry.check_slice_positions([0.0, 2.0, 4.05, 6.0]) == pytest.approx(2.0, abs=0.05)
    with pytest.raises(GeometryError, match="missing slice"):
        geometry.check_slice_positions([0.0, 2.0, 6.0, 8.0, 10.0])
    with pytest.raises(GeometryError, match="duplicated"):
        geometry.check_slice_positions([0.0, 2.0, 2.0, 4.0])
    with pytest.raises(GeometryError, match="unequal"):
        geometry.check_slice_positions([0.0, 2.0, 4.0, 7.0, 9.0, 11.0])


def test_cropped_affine_puts_the_origin_on_the_start_voxel():
    a = np.array([[0.0, 0.9, 0.0, -10.0], [1.1, 0.0, 0.0, 5.0], [0.0, 0.0, 3.0, 2.0], [0, 0, 0, 1]])
    c = geometry.cropped_affine(a, (2, 3, 7))
    np.testing.assert_allclose(c @ [0, 0, 0, 1], a @ [2, 3, 7, 1])
    np.testing.assert_allclose(c @ [1, 2, 3, 1], a @ [3, 5, 10, 1])
    np.testing.assert_array_equal(c[:3, :3], a[:3, :3])
    with pytest.raises(ValueError, match="one index per spatial axis"):
        geometry.cropped_affine(a, (1, 2))
