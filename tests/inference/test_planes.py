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
