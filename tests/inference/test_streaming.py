"""Streaming output: the NIfTI slice writer makes the file the whole-volume writer makes, atomically."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monai.inferers import Inferer
from sr_helpers import Interp, ramp_volume

from monai_sr.errors import OutputError
from monai_sr.inference import OrthogonalPlanesInferer, SliceWiseInferer
from monai_sr.inference.streaming import stream_planes
from monai_sr.io.nifti import NiftiSliceWriter, save_nifti


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("inferer, net", [
    (SliceWiseInferer(batch_size=3), Interp((2, 2))),
    (OrthogonalPlanesInferer(halo=2, slab=3), Interp((1, 2))),
])
def test_streamed_nifti_equals_whole_volume(tmp_path, suffix, inferer, net):
    src = ramp_volume((14, 12, 7))
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


class _WholeVolume(Inferer):
    """A non-streaming inferer (the whole result first), for comparison."""

    def __init__(self, inner):
        self.inner = inner

    def volume_scale(self, network):
        return self.inner.volume_scale(network)

    def __call__(self, inputs, network, progress=None):
        return self.inner(inputs, network, progress=progress)


@pytest.mark.parametrize("out_name", ["sr.nii.gz", "sr_dicom"])
def test_enhance_streaming_equals_whole_volume(small_series, tmp_path, out_name):
    from monai_sr.pipeline import enhance, load_volume

    net = Interp((2, 2), "bicubic")
    streamed, whole = tmp_path / "a" / out_name, tmp_path / "b" / out_name
    streamed.parent.mkdir()
    whole.parent.mkdir()
    enhance(small_series, streamed, network=net, inferer=SliceWiseInferer(batch_size=4))
    enhance(small_series, whole, network=net, inferer=_WholeVolume(SliceWiseInferer(batch_size=4)))
    a, b = load_volume(streamed), load_volume(whole)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine), atol=1e-6)
