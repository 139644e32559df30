"""Reader and derived-series writer: geometry round trip, derived-series rules, atomic output."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError, OutputError
from monai_sr.io.dicom import derived
from monai_sr.io.dicom.derived import choose_rescale
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import DicomSeriesReader, load_dicom_series
from monai_sr.io.dicom.writer import write_derived_series


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file())


def test_reader_agrees_with_simpleitk(small_series):
    """Cross-reader consistency: SimpleITK's GDCM series reader gives the same affine and voxels."""
    ours = load_dicom_series(small_series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(small_series)))
    img = reader.Execute()
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    np.testing.assert_allclose(ours.affine.numpy(), geometry.lps_to_ras(lps), atol=1e-4)
    # SimpleITK arrays are (slice, row, column); ours (column, row, slice)
    np.testing.assert_array_equal(ours[0].numpy(), sitk.GetArrayFromImage(img).transpose(2, 1, 0))


def test_reader_is_a_monai_image_reader(small_series):
    from monai.transforms import LoadImage

    img = LoadImage(reader=DicomSeriesReader(), image_only=True, ensure_channel_first=True)(str(small_series))
    direct = load_dicom_series(small_series)
    assert img.shape == direct.shape
    np.testing.assert_allclose(img.affine.numpy(), direct.affine.numpy(), atol=1e-9)


def test_quirky_series_is_read_by_position_with_rescale(quirky_series):
    vol = load_dicom_series(quirky_series)
    notes = " ".join(vol.meta["monai_sr_notes"])
    assert "SpacingBetweenSlices" in notes and "positions are used" in notes
    # the measured step wins over the lying tag
    step = geometry.spacing_from_affine(vol.affine.numpy())[2]
    sbs = float(pydicom.dcmread(_files(quirky_series)[0], stop_before_pixels=True).SpacingBetweenSlices)
    assert abs(step - sbs) > 0.2
    # slices are in position order whatever the file names and instance numbers say
    ras_z = [vol.affine.numpy() @ np.array([0, 0, k, 1.0]) for k in range(vol.shape[3])]
    normal = geometry.lps_to_ras(np.eye(4))[:3, :3] @ geometry.slice_normal(source_headers(vol.meta)[0].ImageOrientationPatient)
    along = [float(p[:3] @ normal) for p in ras_z]
    assert np.all(np.diff(along) > 0)
    # rescale applied: real values, not stored integers
    ds = source_headers(vol.meta)[0]
    assert float(ds.RescaleSlope) != 1.0


def _round_trip(series, tmp_path, scale=(1, 1, 1)):
    src = load_dicom_series(series)
    vol = src[0].numpy().astype(np.float64)
    if scale != (1, 1, 1):
        vol = np.kron(vol, np.ones(scale))  # any array on the finer grid will do for geometry
    affine = geometry.scaled_affine(src.affine.numpy(), scale)
    out = tmp_path / "derived"
    write_derived_series(vol, affine, out, source_headers=source_headers(src.meta), derivation="round trip test")
    return src, vol, affine, out


@pytest.mark.parametrize("scale", [(1, 1, 1), (2, 2, 1), (1, 1, 2)])
def test_write_read_round_trip(small_series, tmp_path, scale):
    src, vol, affine, out = _round_trip(small_series, tmp_path, scale)
    back = load_dicom_series(out)
    np.testing.assert_allclose(back.affine.numpy(), affine, atol=1e-4)
    slope = float(pydicom.dcmread(_files(out)[0], stop_before_pixels=True).RescaleSlope)
    np.testing.assert_allclose(back[0].numpy(), vol, atol=slope / 2 + 1e-6)


def test_derived_series_rules(quirky_series, tmp_path):
    src, _, _, out = _round_trip(quirky_series, tmp_path, (2, 2, 1))
    sources = {d.SOPInstanceUID for d in source_headers(src.meta)}
    first = source_headers(src.meta)[0]
    written = [pydicom.dcmread(f) for f in _files(out)]
    assert len(written) == src.shape[3]
    uids = {d.SOPInstanceUID for d in written}
    assert len(uids) == len(written) and not uids & sources
    for ds in written:
        assert ds.StudyInstanceUID == first.StudyInstanceUID
        assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
        assert ds.PatientID == first.PatientID and ds.PatientName == first.PatientName
        assert ds.SeriesInstanceUID != first.SeriesInstanceUID
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and len(ds.ImageType) >= 3
        assert ds.DerivationDescription
        assert {i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence} <= sources
        assert ds.SoftwareVersions and ds.Manufacturer == derived.SOFTWARE_NAME
        assert float(ds.WindowWidth) >= 1  # the source had a zero window
        assert not any(e.tag.group == 0x0000 for e in ds), "command-set elements must not be copied"
        assert not any(e.tag.is_private for e in ds), "private elements must not be copied"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            assert all(len(str(v)) <= 16 for v in ds[kw].value)
        assert ds.pixel_array.dtype == np.int16
    assert len({d.SeriesInstanceUID for d in written}) == 1


def test_rescale_keeps_units_beyond_int16(small_series, tmp_path):
    src = load_dicom_series(small_series)
    vol = src[0].numpy().astype(np.float64) * 100.0 - 5000.0  # far outside int16
    out = tmp_path / "wide"
    write_derived_series(vol, src.affine.numpy(), out, source_headers=source_headers(src.meta), derivation="t")
    slope, intercept = choose_rescale(vol)
    assert slope > 1 and intercept == 0
    np.testing.assert_allclose(load_dicom_series(out)[0].numpy(), vol, atol=slope / 2 + 1e-3)


def test_existing_output_is_refused_and_kept(small_series, tmp_path):
    src = load_dicom_series(small_series)
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        write_derived_series(src[0].numpy(), src.affine.numpy(), out, source_headers=source_headers(src.meta), derivation="t")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_midway_leaves_nothing(small_series, tmp_path, monkeypatch):
    src = load_dicom_series(small_series)
    out = tmp_path / "partial"

    def boom(done, total):
        if done == 3:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_derived_series(src[0].numpy(), src.affine.numpy(), out, source_headers=source_headers(src.meta),
                             derivation="t", progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_reader_errors(tmp_path, small_series):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        load_dicom_series(empty)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no DICOM image files"):
        load_dicom_series(junk)
    # a missing slice in the middle
    gap = tmp_path / "gap"
    gap.mkdir()
    files = sorted(_files(small_series), key=lambda f: float(pydicom.dcmread(f).SliceLocation))
    for f in files[:2] + files[3:]:
        (gap / f.name).write_bytes(f.read_bytes())
    with pytest.raises(GeometryError, match="missing slice"):
        load_dicom_series(gap)
    # two series in one folder
    two = tmp_path / "two"
    two.mkdir()
    for f in files:
        (two / f.name).write_bytes(f.read_bytes())
    ds = pydicom.dcmread(files[0])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(two / "other.dcm")
    with pytest.raises(InputError, match="2 series"):
        load_dicom_series(two)
    # missing geometry is an error naming the tag, not an identity affine
    nogeo = tmp_path / "nogeo"
    nogeo.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(nogeo / f.name)
    with pytest.raises(GeometryError, match="missing ImagePositionPatient"):
        load_dicom_series(nogeo)
