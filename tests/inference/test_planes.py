"""PlaneMeanInferer: a 2D network along several axes, averaged, against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy.ndimage import uniform_filter

from monai_sr.errors import ModelError
from monai_sr.inference import PlaneMeanInferer


class Box3(torch.nn.Module):
    """3 x 3 mean filter of a plane (edges: nearest), scale 1."""

    scale = (1, 1)

    def forward(self, x):
        x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return torch.nn.functional.avg_pool2d(x, 3, stride=1)


class Up(torch.nn.Module):
    scale = (2, 2)

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2)


def test_mean_of_the_three_plane_filters():
    rng = np.random.default_rng(0)
    vol = rng.random((9, 7, 5)).astype(np.float32)
    affine = torch.tensor([[0.0, -1.2, 0, 3], [0.9, 0, 0, 1], [0, 0, 2.5, -4], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.from_numpy(vol)[None], affine=affine)
    out = PlaneMeanInferer(axes=(0, 1, 2), batch_size=3)(img, Box3())
    expected = np.mean(
        [uniform_filter(vol, size=[1 if a == ax else 3 for a in range(3)], mode="nearest") for ax in (0, 1, 2)], axis=0
    )
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out.affine.numpy(), affine.numpy())
    one = PlaneMeanInferer(axes=(2,))(img, Box3())
    np.testing.assert_allclose(one[0].numpy(), uniform_filter(vol, size=[3, 3, 1], mode="nearest"), atol=1e-5)


def test_refuses_a_network_that_changes_the_grid_and_bad_axes():
    with pytest.raises(ModelError, match="scale 1"):
        PlaneMeanInferer().volume_scale(Up())
    for axes in [(), (0, 0), (3,)]:
        with pytest.raises(ValueError, match="axes"):
            PlaneMeanInferer(axes=axes)


@pytest.mark.parametrize(
    "spacing, shape, expected",
    [
        ((1.0, 1.0, 1.0), (181, 217, 181), (0, 1, 2)),  # isotropic: the three orientations
        ((1.0, 1.0, 1.4), (64, 64, 40), (0, 1, 2)),  # near-isotropic (ratio 1.4 <= 1.5)
        ((0.9, 0.9, 5.0), (256, 256, 30), (2,)),  # thick axial slices: axial planes only
        ((5.0, 1.0, 1.0), (24, 256, 256), (0,)),  # thick sagittal slices
        ((1.0, 4.0, 1.0), (200, 30, 200), (1,)),  # thick coronal slices
        ((1.0, 3.0, 3.0), (200, 40, 50), (1,)),  # two coarse axes: slices along the coarsest (ties: the first)
        ((0.195, 0.195, 3.0), (1024, 1024, 1), (2,)),  # a single 2D slice: its own plane
        ((1.0, 1.0, 1.0), (128, 128, 3), (2,)),  # a short stack of isotropic voxels: in-plane only
        ((2.0, 1.0, 1.0), (4, 200, 200), (0,)),  # few slices along axis 0
    ],
)
def test_plane_choice_from_spacing(spacing, shape, expected):
    from monai_sr.inference.planes import choose_plane_axes

    assert choose_plane_axes(spacing, shape) == expected


def test_plane_choice_thresholds_and_bad_spacing():
    from monai_sr.errors import GeometryError
    from monai_sr.inference.planes import choose_plane_axes

    assert choose_plane_axes((1, 1, 2), (50, 50, 50), anisotropy=2.5) == (0, 1, 2)
    assert choose_plane_axes((1, 1, 2), (50, 50, 50), anisotropy=1.5) == (2,)
    assert choose_plane_axes((1, 1, 1), (50, 50, 10), min_slices=12) == (2,)
    with pytest.raises(GeometryError, match="spacing"):
        choose_plane_axes((1, 0, 1), (10, 10, 10))


def test_auto_axes_follow_the_affine_and_note_the_choice():
    rng = np.random.default_rng(1)
    vol = rng.random((12, 10, 9)).astype(np.float32)
    # oblique affine: columns of norm 0.9, 0.9, 5 mm (thick slices along index axis 2)
    rot = np.array([[0.0, -1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 0.9, 5.0])
    img = MetaTensor(torch.from_numpy(vol)[None], affine=torch.as_tensor(affine))
    img.meta["monai_sr_notes"] = []
    inferer = PlaneMeanInferer(axes="auto", batch_size=4)
    out = inferer(img, Box3())
    assert inferer.last_axes == (2,)
    np.testing.assert_allclose(out[0].numpy(), uniform_filter(vol, size=[3, 3, 1], mode="nearest"), atol=1e-5)
    assert any("slices along axis 2" in n for n in img.meta["monai_sr_notes"])
    iso = MetaTensor(torch.from_numpy(vol)[None], affine=torch.eye(4, dtype=torch.float64))
    out_iso = inferer(iso, Box3())
    assert inferer.last_axes == (0, 1, 2)
    np.testing.assert_allclose(out_iso[0].numpy(), PlaneMeanInferer(axes=(0, 1, 2))(iso, Box3())[0].numpy(), atol=1e-6)


def test_auto_axes_need_geometry():
    from monai_sr.errors import GeometryError

    with pytest.raises(GeometryError, match="affine"):
        PlaneMeanInferer(axes="auto")(torch.zeros(1, 8, 8, 8), Box3())
    with pytest.raises(ValueError, match="auto"):
        PlaneMeanInferer(axes="all")


def test_single_plane_self_ensemble_only_when_one_orientation_runs():
    calls = []

    class Count(Box3):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    vol = torch.rand(1, 10, 10, 10)
    thick = MetaTensor(vol, affine=torch.diag(torch.tensor([1.0, 1.0, 4.0, 1.0], dtype=torch.float64)))
    iso = MetaTensor(vol, affine=torch.eye(4, dtype=torch.float64))
    inferer = PlaneMeanInferer(axes="auto", batch_size=10, single_plane_self_ensemble="flips")
    out = inferer(thick, Count())
    assert len(calls) == 4  # one batch of 10 slices, four flips
    np.testing.assert_allclose(out[0].numpy(), uniform_filter(vol[0].numpy(), size=[3, 3, 1], mode="nearest"), atol=1e-5)
    calls.clear()
    inferer(iso, Count())
    assert len(calls) == 3  # one batch per orientation, no flips
