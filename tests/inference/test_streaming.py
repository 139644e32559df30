"""Streaming enhance: a streaming inferer's output equals the whole-volume path's, NIfTI and DICOM
(the NIfTI slice writer itself: tests/io/test_nifti.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sr_helpers import Interp

from monai_sr.inference import SliceWiseInferer
from monai_sr.inference.streaming import WholeVolumeInferer


@pytest.mark.parametrize("out_name", ["sr.nii.gz", "sr_dicom"])
def test_enhance_streaming_equals_whole_volume(small_series, tmp_path, out_name):
    from monai_sr.pipeline import enhance, load_volume

    net = Interp((2, 2), "bicubic")
    streamed, whole = tmp_path / "a" / out_name, tmp_path / "b" / out_name
    streamed.parent.mkdir()
    whole.parent.mkdir()
    enhance(small_series, streamed, network=net, inferer=SliceWiseInferer(batch_size=4))
    enhance(small_series, whole, network=net, inferer=WholeVolumeInferer(SliceWiseInferer(batch_size=4)))
    a, b = load_volume(streamed), load_volume(whole)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine), atol=1e-6)
