"""Enhanced MR multi-frame objects: per-frame geometry and rescale, several stacks split, never mixed.

The objects are pydicom-data's emri_small.dcm (10 frames of 64x64, whose anonymised copy lost its
functional groups) with per-frame / shared functional groups put back.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.io.dicom.discover import find_series
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series

IOP = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal: rows go anterior, columns go down
SPACING = [0.9, 0.8]


def _item(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _enhanced(path, frames, *, dims=None):
    """Write emri_small with functional groups; ``frames`` holds per file frame: (x position, slope, content dict)."""
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    shared = _item(
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=IOP)]),
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=SPACING, SliceThickness=2.0, SpacingBetweenSlices=2.0)]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for x, slope, content in frames:
        per.append(
            _item(
                PlanePositionSequence=Sequence([_item(ImagePositionPatient=[x, -20.0, 30.0])]),
                PixelValueTransformationSequence=Sequence([_item(RescaleSlope=slope, RescaleIntercept=-5.0, RescaleType="US")]),
                FrameContentSequence=Sequence([_item(**content)]),
                **({"MREchoSequence": Sequence([_item(EffectiveEchoTime=content.pop("_te"))])} if "_te" in content else {}),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    if dims:
        ds.DimensionIndexSequence = Sequence([_item(DimensionIndexPointer=p, FunctionalGroupPointer=0x00209111) for p in dims])
    ds.NumberOfFrames = len(frames)
    ds.save_as(path, enforce_file_format=True)
    return ds.pixel_array.astype(np.float64)


def test_per_frame_positions_and_rescale(tmp_path):
    order = [3, 0, 7, 1, 9, 2, 5, 4, 8, 6]  # frames stored out of position order
    slopes = [1.0 + 0.25 * k for k in range(10)]
    frames = [(10.0 + 2.0 * p, slopes[f], {"StackID": "1", "InStackPositionNumber": p + 1}) for f, p in enumerate(order)]
    path = tmp_path / "emr.dcm"
    stored = _enhanced(path, frames, dims=[0x00209056, 0x00209057])
    vol = load_dicom_series(path)
    assert vol.shape == (1, 64, 64, 10)
    # the normal is row x column = -x (LPS): slices run from the largest x down
    inv = np.argsort(order)[::-1]  # frame index at each slice
    for k in range(10):
        f = inv[k]
        np.testing.assert_allclose(vol[0, :, :, k].numpy(), (stored[f] * slopes[f] - 5.0).T, rtol=1e-6)
    lps = geometry.ras_to_lps(vol.affine.numpy())
    np.testing.assert_allclose(lps[:3, 3], [28.0, -20.0, 30.0], atol=1e-6)
    np.testing.assert_allclose(lps[:3, :3], np.column_stack([[0, 0.8, 0], [0, 0, -0.9], [-2.0, 0, 0]]), atol=1e-6)
    assert vol.meta["dicom_frame_numbers"] == [int(f) + 1 for f in inv]
    hdr = source_headers(vol.meta)[4]
    assert float(hdr.ImagePositionPatient[0]) == 20.0 and float(hdr.RescaleSlope) == slopes[inv[4]]
    assert hdr.NumberOfFrames == 1 and "PerFrameFunctionalGroupsSequence" not in hdr
    (cand,), _ = find_series(path)
    d = cand.describe()
    assert (d["slices"], d["orientation"], d["spacing"], d["acquisition"]) == (10, "sagittal", "0.8x0.9x2", "3D")


def test_two_echoes_are_split_and_never_mixed(tmp_path):
    frames = [(10.0 + 2.0 * p, 1.0, {"StackID": "1", "InStackPositionNumber": p + 1, "_te": te})
              for te in (10.0, 25.0) for p in range(5)]
    path = tmp_path / "echoes.dcm"
    stored = _enhanced(path, frames)
    cands, _ = find_series(path)
    assert [c.selector for c in cands] == ["301:TE=10", "301:TE=25"]
    with pytest.raises(InputError, match=r"found 2 series/stacks; choose one with --series .*301:TE=10 .*301:TE=25"):
        load_dicom_series(path)
    with pytest.raises(InputError, match="series 301 holds 2 stacks that must not be mixed"):
        load_dicom_series(path, series="301")
    second = load_dicom_series(path, series="301:TE=25")
    assert second.shape == (1, 64, 64, 5)
    np.testing.assert_allclose(second[0].numpy(), (stored[5:][::-1] - 5.0).transpose(2, 1, 0))
    assert float(source_headers(second.meta)[0].EchoTime) == 25.0


def test_temporal_positions_and_dimension_indices_are_split(tmp_path):
    frames = [(10.0 + 2.0 * p, 1.0, {"TemporalPositionIndex": t, "InStackPositionNumber": p + 1}) for t in (1, 2) for p in range(5)]
    path = tmp_path / "dyn.dcm"
    _enhanced(path, frames)
    assert [c.stack for c in find_series(path)[0]] == ["time=1", "time=2"]
    frames = [(10.0 + 2.0 * p, 1.0, {"DimensionIndexValues": [b, p + 1]}) for b in (1, 2) for p in range(5)]
    path = tmp_path / "dwi.dcm"
    _enhanced(path, frames, dims=[0x00189087, 0x00209057])  # Diffusion b-value, In-Stack Position
    assert [c.stack for c in find_series(path)[0]] == ["dim1=1", "dim1=2"]
    assert load_dicom_series(path, series="301:dim1=2").shape == (1, 64, 64, 5)


def test_mixed_stacks_without_stack_attributes_are_refused(tmp_path):
    """Two frames on one position and nothing that names their stacks: refused, not averaged or mixed."""
    frames = [(10.0 + 2.0 * (p % 5), 1.0, {"InStackPositionNumber": p % 5 + 1}) for p in range(10)]
    path = tmp_path / "same.dcm"
    _enhanced(path, frames)
    with pytest.raises(GeometryError, match="duplicated slice position"):
        load_dicom_series(path)


def test_frame_without_position_names_the_frame(tmp_path):
    frames = [(10.0 + 2.0 * p, 1.0, {"InStackPositionNumber": p + 1}) for p in range(10)]
    path = tmp_path / "nopos.dcm"
    _enhanced(path, frames)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[6].PlanePositionSequence
    ds.save_as(path)
    with pytest.raises(GeometryError, match="missing ImagePositionPatient .*emr|missing ImagePositionPatient .*nopos.dcm frame 7"):
        load_dicom_series(path)
