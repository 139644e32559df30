"""Every inference mode gives the geometry DESIGN.md prescribes, checked two independent ways:

* the affine against voxel centres derived by hand from the rule "output voxel j sits at input index
  (j + 0.5) / s - 0.5" (no monai_sr geometry code involved);
* the voxels: the input holds a linear function of world position, linear interpolation reproduces a
  linear function exactly, so inside the volume every output voxel must hold f(its world position under
  the returned affine) - a wrong affine or a shifted grid fails this.

Streaming gives the same voxels as the whole-volume call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from sr_helpers import W, Interp, ramp_volume, world

from monai_sr.errors import ModelError
from monai_sr.inference import (
    OrthogonalPlanesInferer,
    ScaleAwareInferer,
    SliceWiseInferer,
    SlidingWindowSRInferer,
)


def hand_affine_check(out, src, scale):
    """Output voxel centres from the DESIGN.md rule, against the returned affine."""
    a_in, a_out = np.asarray(src.affine, np.float64), np.asarray(out.affine, np.float64)
    rng = np.random.default_rng(0)
    j = np.stack([rng.integers(0, n, 20) for n in out.shape[1:]], axis=-1).astype(np.float64)
    j = np.concatenate([j, np.zeros((1, 3)), np.asarray(out.shape[1:], np.float64)[None] - 1])
    src_idx = (j + 0.5) / np.asarray(scale, np.float64) - 0.5
    np.testing.assert_allclose(world(a_out, j), world(a_in, src_idx), atol=1e-6)


def interior(src_shape, scale):
    """Mask of output voxels whose source position lies inside the input grid (no edge clamping)."""
    axes = []
    for n, s in zip(src_shape, scale):
        pos = (np.arange(n * s) + 0.5) / s - 0.5
        axes.append((pos >= 0) & (pos <= n - 1))
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def ramp_check(out, src, scale):
    mask = interior(src.shape[1:], scale)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape[1:]], indexing="ij"), axis=-1).astype(np.float64)
    expected = world(np.asarray(out.affine, np.float64), idx) @ W + 7.0
    np.testing.assert_allclose(out[0].numpy()[mask], expected[mask], atol=2e-4)
    assert mask.sum() > 100


CASES = [
    ("slice axis 2", SliceWiseInferer(axis=2, batch_size=3), Interp((2, 3)), (2, 3, 1)),
    ("slice axis 0", SliceWiseInferer(axis=0, batch_size=4), Interp((2, 2)), (1, 2, 2)),
    ("slice axis 1, blocks", SliceWiseInferer(axis=1, batch_size=4, halo=2, slab=3), Interp((2, 2)), (2, 1, 2)),
    ("2.5D", SliceWiseInferer(axis=2, batch_size=3, context=1), Interp((2, 2), in_channels=3), (2, 2, 1)),
    ("orthogonal lr 2", OrthogonalPlanesInferer(lr_axis=2, batch_size=5), Interp((1, 4)), (1, 1, 4)),
    ("orthogonal lr 2 (s,1)", OrthogonalPlanesInferer(lr_axis=2, halo=2, slab=3), Interp((3, 1)), (1, 1, 3)),
    ("orthogonal lr 0", OrthogonalPlanesInferer(lr_axis=0, batch_size=4), Interp((1, 2)), (2, 1, 1)),
    ("sliding 3D one window", SlidingWindowSRInferer((12, 10, 8)), Interp((2, 1, 3), "trilinear"), (2, 1, 3)),
    ("sliding 2D", SlidingWindowSRInferer(64, slab=3), Interp((2, 2)), (2, 2, 1)),
]


@pytest.mark.parametrize("name, inferer, net, scale", CASES, ids=[c[0] for c in CASES])
def test_mode_geometry_and_voxels(name, inferer, net, scale):
    src = ramp_volume()
    assert isinstance(inferer, Inferer) and isinstance(inferer, ScaleAwareInferer)
    assert inferer.volume_scale(net) == scale
    out = inferer(src, net)
    assert out.shape[1:] == tuple(n * s for n, s in zip(src.shape[1:], scale))
    hand_affine_check(out, src, scale)
    ramp_check(out, src, scale)
    geo = inferer.output_geometry(src, net)
    assert geo.shape == out.shape
    np.testing.assert_array_equal(np.asarray(geo.affine), np.asarray(out.affine))
    # streaming: the same voxels, slice by slice, in order
    planes = list(inferer.stream(src, net))
    assert [k for k, _ in planes] == list(range(out.shape[3]))
    np.testing.assert_array_equal(np.stack([p for _, p in planes], axis=-1), out[0].numpy())


def test_sliding_3d_many_windows_stitch_exactly():
    """Nearest-neighbour zoom is window-local, so overlapping zoomed windows must stitch to the whole."""
    src = ramp_volume((20, 18, 9))
    net = Interp((2, 2, 1), "nearest")
    out = SlidingWindowSRInferer((8, 8, 4), overlap=0.5, mode="constant", halo=2, slab=4)(src, net)
    whole = F.interpolate(src.as_tensor()[None], scale_factor=(2.0, 2.0, 1.0), mode="nearest")[0]
    np.testing.assert_allclose(out.as_tensor(), whole, atol=1e-5)
    hand_affine_check(out, src, (2, 2, 1))


def test_blocks_with_halo_equal_whole_volume():
    src = ramp_volume((10, 9, 11))
    torch.manual_seed(0)
    src = src + torch.rand_like(src.as_tensor())  # not linear any more: blocks must really match
    for whole, blocked, net in [
        (SliceWiseInferer(axis=0), SliceWiseInferer(axis=0, halo=2, slab=3), Interp((2, 2))),
        (OrthogonalPlanesInferer(), OrthogonalPlanesInferer(halo=2, slab=4, batch_size=3), Interp((1, 3))),
        (SliceWiseInferer(context=2, batch_size=11), SliceWiseInferer(context=2, batch_size=2), Interp((2, 2), in_channels=5)),
    ]:
        np.testing.assert_allclose(blocked(src, net).as_tensor(), whole(src, net).as_tensor(), atol=1e-5)


class _Channel0(Interp):
    def forward(self, x):
        return super().forward(x[:, :1])


def test_25d_edge_slices_replicated():
    src = ramp_volume((6, 5, 4))
    out = SliceWiseInferer(context=1)(src, _Channel0((1, 1), in_channels=3))
    vol = src[0].numpy()
    expected = vol[:, :, [0, 0, 1, 2]]  # channel 0 is the previous slice; slice 0 repeats itself
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)


def test_meta_carried_and_thickness_untouched_in_plane():
    src = ramp_volume()
    src.meta["dicom_headers"] = ["kept"]
    out = SliceWiseInferer()(src, Interp((2, 2)))
    assert out.meta["dicom_headers"] == ["kept"]


def test_refusals():
    src = ramp_volume()
    with pytest.raises(ModelError, match="scale"):
        SliceWiseInferer()(src, torch.nn.Identity())
    with pytest.raises(ModelError, match="2D network"):
        SliceWiseInferer().volume_scale(Interp((2, 2, 2)))
    with pytest.raises(ModelError, match=r"\(1, s\)"):
        OrthogonalPlanesInferer().volume_scale(Interp((2, 2)))
    with pytest.raises(ValueError, match="channel-first"):
        SliceWiseInferer()(src[0], Interp((2, 2)))
    with pytest.raises(ValueError, match="memory_budget"):
        SliceWiseInferer(batch_size="auto")
    with pytest.raises(ValueError, match="fp16"):
        SliceWiseInferer(amp="fp8")
    with pytest.raises(ModelError, match="expected"):
        SliceWiseInferer()(src, _WrongScale())


class _WrongScale(Interp):
    def __init__(self):
        super().__init__((2, 2))

    def forward(self, x):
        return F.interpolate(x, scale_factor=3.0)
