"""The streaming writer (DerivedSeriesWriter): same series as the whole-volume path, slices in any order,
per-slice rescale, window estimated when not given, nothing left on a missing slice or an error, memory
independent of the number of slices; Referenced Frame Number for multi-frame sources."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from monai_sr import geometry
from monai_sr.errors import OutputError
from monai_sr.io.dicom.derived import choose_rescale
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import DerivedSeriesWriter, write_derived_series

SCALE = (2, 2, 1)


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file())


@pytest.fixture(scope="module")
def result(small_series):
    src = load_dicom_series(small_series)
    vol = np.kron(src[0].numpy().astype(np.float64), np.ones(SCALE))
    vol[:, :, 0] *= 0.1  # a dim first slice: its own slope is much finer
    return src, vol, geometry.scaled_affine(src.affine.numpy(), SCALE), source_headers(src.meta)


def _stream(folder, src_result, *, order, fmt="classic", window=None):
    _, vol, affine, headers = src_result
    with DerivedSeriesWriter(folder, affine=affine, shape=vol.shape, source_headers=headers, derivation="stream test",
                             window=window, dicom_format=fmt) as writer:
        for k in order:
            writer.write_slice(k, vol[:, :, k])
    return writer.files


def test_streaming_agrees_with_whole_volume(result, tmp_path):
    src, vol, affine, headers = result
    whole = write_derived_series(vol, affine, tmp_path / "whole", source_headers=headers, derivation="stream test")
    order = np.random.default_rng(0).permutation(vol.shape[2])
    streamed = _stream(tmp_path / "stream", result, order=order)
    assert [p.name for p in streamed] == [p.name for p in whole] == [p.name for p in _files(tmp_path / "stream")]
    a, b = load_dicom_series(tmp_path / "whole"), load_dicom_series(tmp_path / "stream")
    np.testing.assert_allclose(a.affine.numpy(), affine, atol=1e-4)
    np.testing.assert_allclose(b.affine.numpy(), a.affine.numpy(), atol=1e-9)
    whole_slope, _ = choose_rescale(vol)
    np.testing.assert_allclose(a[0].numpy(), vol, atol=whole_slope / 2 + 1e-6)
    slopes = []
    for k, f in enumerate(streamed):
        ds, dw = pydicom.dcmread(f), pydicom.dcmread(whole[k])
        slope = float(ds.RescaleSlope)
        slopes.append(slope)
        assert slope <= whole_slope and float(ds.RealWorldValueMappingSequence[0].RealWorldValueSlope) == slope
        np.testing.assert_allclose(b[0].numpy()[:, :, k], vol[:, :, k], atol=slope / 2 + 1e-6)
        assert ds.InstanceNumber == k + 1 and ds.ImagePositionPatient == dw.ImagePositionPatient
        assert ds.SliceLocation == dw.SliceLocation and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert [i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence] == [
            i.ReferencedSOPInstanceUID for i in dw.SourceImageSequence]
    assert slopes[0] < 0.2 * slopes[1]  # per-slice rescale: the dim slice keeps its precision
    # window: estimated from a sample of all slices, filled into every file, same for all
    windows = {(float(pydicom.dcmread(f).WindowCenter), float(pydicom.dcmread(f).WindowWidth)) for f in streamed}
    assert len(windows) == 1
    (centre, width), = windows
    dw = pydicom.dcmread(whole[0])
    assert abs(centre - float(dw.WindowCenter)) < 0.1 * float(dw.WindowWidth)
    assert abs(width - float(dw.WindowWidth)) < 0.1 * float(dw.WindowWidth)


def test_window_from_the_caller(result, tmp_path):
    (f, *_) = _stream(tmp_path / "out", result, order=range(result[1].shape[2]), window=(300.0, 0.5))
    ds = pydicom.dcmread(f)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (300.0, 1.0)  # width at least 1


def test_enhanced_streaming_equals_whole_volume(result, tmp_path):
    _, vol, affine, headers = result
    (whole,) = write_derived_series(vol, affine, tmp_path / "whole", source_headers=headers, derivation="t",
                                    dicom_format="enhanced")
    (streamed,) = _stream(tmp_path / "stream", result, order=reversed(range(vol.shape[2])), fmt="enhanced")
    assert [p.name for p in (tmp_path / "stream").iterdir()] == [streamed.name]  # no scratch file left
    a, b = pydicom.dcmread(whole), pydicom.dcmread(streamed)
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)  # one shared slope, from the peak seen
    pa, pb = (d.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0] for d in (a, b))
    assert pa.RescaleSlope == pb.RescaleSlope


def test_missing_slice_raises_and_leaves_nothing(result, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="1 of 6 slices never written \\(3\\)"):
        _stream(out, result, order=[0, 1, 2, 4, 5])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="written twice"):
        _stream(out, result, order=[0, 1, 1])
    for k, error, match in ((6, OutputError, "outside 0..5"), (0, RuntimeError, "network failed")):
        with pytest.raises(error, match=match), DerivedSeriesWriter(
            out, affine=result[2], shape=result[1].shape, source_headers=result[3], derivation="t"
        ) as writer:
            writer.write_slice(k, result[1][:, :, 0])
            raise RuntimeError("network failed")
    assert list(tmp_path.iterdir()) == []


def test_a_slice_beyond_the_given_peak_is_refused_not_clipped(result, tmp_path):
    _, vol, affine, headers = result
    with pytest.raises(OutputError, match="exceeds the peak"), DerivedSeriesWriter(
        tmp_path / "out", affine=affine, shape=vol.shape, source_headers=headers, derivation="t", peak=10.0
    ) as writer:
        writer.write_slice(0, vol[:, :, 0] + 1000.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
def test_memory_does_not_grow_with_the_number_of_slices(result, tmp_path, fmt):
    src, _, affine, headers = result
    size = 128

    def peak_bytes(n):
        thin = affine @ np.diag([1.0, 1.0, 6.0 / n, 1.0])
        rng = np.random.default_rng(n)
        tracemalloc.start()
        try:
            with DerivedSeriesWriter(tmp_path / f"{fmt}{n}", affine=thin, shape=(size, size, n), source_headers=headers,
                                     derivation="memory test", dicom_format=fmt) as writer:
                for k in range(n):
                    writer.write_slice(k, rng.normal(100.0, 20.0, (size, size)))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_bytes(4)  # first use: lazy imports and caches
    few, many = peak_bytes(20), peak_bytes(80)
    assert many < 1.1 * few, (few, many)


def _enhanced_source(path):
    """pydicom-data's emri_small (10 frames of 64x64) with functional groups, frames stored in reverse."""
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    def item(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.9, 0.9], SliceThickness=2.0)]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[-30.0, -30.0, 20.0 - 2.0 * f])]))
        for f in range(int(ds.NumberOfFrames))
    ])
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
def test_referenced_frame_numbers_for_a_multi_frame_source(tmp_path, fmt):
    source = _enhanced_source(tmp_path / "emr.dcm")
    vol = load_dicom_series(tmp_path / "emr.dcm")
    frames = vol.meta["dicom_frame_numbers"]
    assert frames == list(range(10, 0, -1))  # slices in position order: the last frame first
    files = write_derived_series(vol[0].numpy(), vol.affine.numpy(), tmp_path / "out",
                                 source_headers=source_headers(vol.meta), source_frames=frames,
                                 derivation="t", dicom_format=fmt)
    if fmt == "classic":
        items = [pydicom.dcmread(f).SourceImageSequence for f in files]
    else:
        items = [g.DerivationImageSequence[0].SourceImageSequence
                 for g in pydicom.dcmread(files[0]).PerFrameFunctionalGroupsSequence]
    for k, seq in enumerate(items):
        (ref,) = seq
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID and ref.ReferencedFrameNumber == frames[k]
