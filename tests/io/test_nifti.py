"""NiftiSliceWriter (monai_sr/io/nifti.py): a streamed file is the file the whole-volume writer makes,
written atomically; nothing is left on a missing slice, an error or a wrong shape, and no file is
replaced."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_sr.errors import OutputError
from monai_sr.inference import BicubicInterpolation, OrthogonalPlanesInferer, SliceWiseInferer
from monai_sr.inference.streaming import stream_planes
from monai_sr.io.nifti import NiftiSliceWriter, save_nifti


def _volume(shape=(14, 12, 7)) -> MetaTensor:
    """(1, *shape) random voxels on an oblique grid with unequal spacings and an offset."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-40.0, 25.0, 12.5]
    vals = np.random.default_rng(0).random(shape, dtype=np.float32) * 100.0
    return MetaTensor(torch.from_numpy(vals)[None], affine=torch.from_numpy(affine))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("inferer, net", [
    (SliceWiseInferer(batch_size=3), BicubicInterpolation((2, 2))),
    (OrthogonalPlanesInferer(halo=2, slab=3), BicubicInterpolation((1, 2))),
])
def test_streamed_nifti_equals_whole_volume(tmp_path, suffix, inferer, net):
    src = _volume()
    whole = inferer(src, net)
    ref = save_nifti(whole * 3.0, tmp_path / f"ref{suffix}")
    geo = inferer.output_geometry(src, net)
    out = tmp_path / f"streamed{suffix}"
    with NiftiSliceWriter(out, affine=np.asarray(geo.affine), shape=geo.shape[1:]) as w:
        for k, plane in stream_planes(inferer.stream(src, net), lambda p: p * 3.0):
            w.write_slice(k, plane)
    a, b = nib.load(out), nib.load(ref)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    assert a.header.get_data_dtype() == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, ref.name])  # no leftovers


def test_incomplete_or_failed_stream_leaves_nothing(tmp_path):
    out = tmp_path / "x.nii.gz"
    with pytest.raises(OutputError, match="never written"):
        with NiftiSliceWriter(out, affine=np.eye(4), shape=(4, 3, 2)) as w:
            w.write_slice(0, np.zeros((4, 3)))
    with pytest.raises(RuntimeError):
        with NiftiSliceWriter(out, affine=np.eye(4), shape=(4, 3, 2)) as w:
            w.write_slice(0, np.zeros((4, 3)))
            raise RuntimeError("inference failed")
    with pytest.raises(OutputError, match="shape"):
        with NiftiSliceWriter(out, affine=np.eye(4), shape=(4, 3, 2)) as w:
            w.write_slice(0, np.zeros((3, 4)))
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        NiftiSliceWriter(out, affine=np.eye(4), shape=(4, 3, 2)).__enter__()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_slices_in_any_order(tmp_path, suffix):
    """The gzip thread compresses the leading run of written slices; slices written out of order wait."""
    vals = np.random.default_rng(1).random((6, 5, 9)).astype(np.float32)
    out = tmp_path / f"x{suffix}"
    with NiftiSliceWriter(out, affine=np.eye(4), shape=vals.shape) as w:
        for k in [3, 4, 0, 8, 1, 2, 7, 5, 6]:
            w.write_slice(k, vals[:, :, k])
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), vals)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
