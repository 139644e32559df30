"""Geometry checks against the slice positions, the resample way out, and real-archive tolerance."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import DicomSeriesReader, load_dicom_series
from monai_sr.io.scanner_series import write_original_mr_series


def _ramp_series(folder, *, n=8, step=2.0, seed=3):
    """A small axial series whose value is the slice position along the normal (z, mm): interpolation is exact."""
    affine = np.diag([1.5, 1.5, step, 1.0])
    affine[:3, 3] = [-10.0, -12.0, 20.0]
    z = affine[2, 3] + step * np.arange(n)
    vol = np.broadcast_to(z[None, None, :] * 10.0, (12, 10, n)).copy()
    write_original_mr_series(vol, affine, folder, style="philips", seed=seed)
    return sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def _copy(files, folder, *, edit=None):
    folder.mkdir()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if edit:
            edit(k, ds)
        ds.save_as(folder / f.name)
    return folder


def test_missing_slice_refused_then_resampled(tmp_path):
    files = _ramp_series(tmp_path / "src")
    gap = _copy(files[:3] + files[4:], tmp_path / "gap")
    with pytest.raises(GeometryError, match=r"missing slice\(s\).*resample=True \(--resample\)"):
        load_dicom_series(gap)
    vol = load_dicom_series(gap, resample=True)
    assert vol.shape[3] == 8
    np.testing.assert_allclose(geometry.spacing_from_affine(vol.affine.numpy()), [1.5, 1.5, 2.0], atol=1e-6)
    full = load_dicom_series(tmp_path / "src")
    np.testing.assert_allclose(vol.affine.numpy(), full.affine.numpy(), atol=1e-6)
    # the value is linear in z, so linear interpolation restores the missing slice (within the rescale step)
    np.testing.assert_allclose(vol[0].numpy(), full[0].numpy(), atol=1.0)
    notes = " ".join(vol.meta["monai_sr_notes"])
    assert "resampled 7 slices" in notes and "onto 8 slices every 2.0000 mm" in notes
    # which slice was filled: output slice 3 (26 mm) between the files of 24 and 28 mm; the rest are the sources
    (filled,) = [n for n in vol.meta["monai_sr_notes"] if n.startswith("--resample filled")]
    assert filled.startswith("--resample filled 1 of 8 slices by interpolation, output slice(s) 3 (0-based")
    assert f"3 at 26.000 mm between {files[2].name} (24.000) and {files[4].name} (28.000)" in filled
    assert filled.endswith("the other 7 lie within 0.01 mm of a source slice")
    headers = source_headers(vol.meta)
    assert len(headers) == 8 and "SliceLocation" not in headers[3]
    np.testing.assert_allclose(float(headers[3].ImagePositionPatient[2]), 26.0, atol=1e-4)


def test_unequal_steps_refused_then_resampled(tmp_path):
    files = _ramp_series(tmp_path / "src")
    shifts = [0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0]

    def move(k, ds):
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], float(ds.ImagePositionPatient[2]) + shifts[k]]

    uneven = _copy(files, tmp_path / "uneven", edit=move)
    with pytest.raises(GeometryError, match="unequal slice spacing: step 2.700 mm between slices 2 and 3"):
        load_dicom_series(uneven)
    vol = load_dicom_series(uneven, resample=True)
    assert vol.shape[3] == 8
    z = vol.affine.numpy()[2, 3] + 2.0 * np.arange(8)
    # stored values belong to the original z; at the grid z the interpolation of the two neighbours
    pos = np.array([20 + 2 * k + shifts[k] for k in range(8)])
    vals = np.array([10.0 * (20 + 2 * k) for k in range(8)])
    np.testing.assert_allclose(vol[0].numpy()[3, 4, :], np.interp(z, pos, vals), atol=1.0)
    (filled,) = [n for n in vol.meta["monai_sr_notes"] if n.startswith("--resample filled")]
    assert "filled 1 of 8 slices by interpolation, output slice(s) 3 (0-based" in filled  # 26 mm: 24 .. 26.7


def test_positions_rounded_to_a_tenth_of_a_mm_are_accepted(tmp_path):
    files = _ramp_series(tmp_path / "src", step=1.25)

    def rounded(k, ds):
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{float(ds.ImagePositionPatient[2]) + 0.0001:.1f}"]

    vol = load_dicom_series(_copy(files, tmp_path / "rounded", edit=rounded))
    assert vol.shape[3] == 8 and not vol.meta["monai_sr_notes"]
    np.testing.assert_allclose(geometry.spacing_from_affine(vol.affine.numpy())[2], 1.25, atol=0.02)


def test_gantry_tilt_refused_even_with_resample(tmp_path):
    files = _ramp_series(tmp_path / "src")

    def tilt(k, ds):
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], float(ds.ImagePositionPatient[1]) + 0.35 * k, ds.ImagePositionPatient[2]]

    tilted = _copy(files, tmp_path / "tilt", edit=tilt)
    for resample in (False, True):
        with pytest.raises(GeometryError, match="degrees off their normal .*gantry tilt.*not resampled"):
            load_dicom_series(tilted, resample=resample)


def test_positions_off_one_line_refused(tmp_path):
    files = _ramp_series(tmp_path / "src")

    def wobble(k, ds):
        if k == 4:
            ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 3.0, ds.ImagePositionPatient[1], ds.ImagePositionPatient[2]]

    with pytest.raises(GeometryError, match="do not lie on one line: slice 4"):
        load_dicom_series(_copy(files, tmp_path / "wobble", edit=wobble))


def test_mixed_orientations_and_duplicates(tmp_path):
    files = _ramp_series(tmp_path / "src")

    def rotate(k, ds):
        if k == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    with pytest.raises(GeometryError, match="mixed orientations"):
        load_dicom_series(_copy(files, tmp_path / "mixed", edit=rotate), resample=True)

    def dup(k, ds):
        if k == 5:
            ds.ImagePositionPatient = list(pydicom.dcmread(files[4]).ImagePositionPatient)

    folder = _copy(files, tmp_path / "dup", edit=dup)
    with pytest.raises(GeometryError, match="duplicated slice position"):
        load_dicom_series(folder)
    with pytest.raises(GeometryError, match="cannot resample: two slices share a position"):
        load_dicom_series(folder, resample=True)


def test_real_archive_tolerance(tmp_path, small_series, quirky_series):
    """Zero-length and non-DICOM files, trailing padding, group-0000 elements, odd UID roots, sub-folders."""
    folder = tmp_path / "archive"
    (folder / "sub" / "deeper").mkdir(parents=True)
    files = sorted(small_series.iterdir())
    odd_series = "2.25.329800735698586629295641978511506172918"  # UUID-derived root
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = odd_series
        target = folder / ("sub/deeper" if k % 2 else "sub") / f"slice{k}"
        with pydicom.config.disable_value_validation():
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.0{k}.1"  # a component with a leading zero (invalid, seen in archives)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(target)
        if k == 1:
            target.write_bytes(target.read_bytes() + b"\x00" * 16)  # trailing padding after the pixel data
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "README.txt").write_text("exported by PACS\n")
    vol = load_dicom_series(folder, series=odd_series)
    ref = load_dicom_series(small_series)
    np.testing.assert_allclose(vol.affine.numpy(), ref.affine.numpy(), atol=1e-6)
    np.testing.assert_array_equal(vol[0].numpy(), ref[0].numpy())
    notes = " ".join(vol.meta["monai_sr_notes"])
    assert "skipped empty file empty.dcm" in notes and "skipped non-DICOM file README.txt" in notes
    # the quirky series keeps a C-STORE command set (group 0000) in each stored dataset: read, not carried
    quirky = load_dicom_series(quirky_series)
    assert any(e.tag.group == 0 for e in pydicom.dcmread(next(quirky_series.iterdir())))
    assert not any(k.startswith("0000") for h in quirky.meta["dicom_headers"] for k in h)


def test_undecodable_transfer_syntax_names_file_and_syntax(tmp_path, small_series, monkeypatch):
    folder = tmp_path / "mpeg"
    folder.mkdir()
    files = sorted(small_series.iterdir())
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    victim = folder / files[2].name
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pixel decoder exists
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    with pydicom.config.disable_value_validation():
        ds.save_as(victim, enforce_file_format=True)
    with pytest.raises(InputError, match=r"mpeg/IM\d+\.dcm: pixel data in transfer syntax 'MPEG2 Main Profile / Main Level' .*cannot be decoded"):
        load_dicom_series(folder)

    # a syntax whose plugin is not installed
    from pydicom import pixels

    class Missing:
        is_available = False
        missing_dependencies = ["pylibjpeg-openjpeg - requires pylibjpeg>=2.0"]

    j2k = pydicom.uid.JPEG2000Lossless
    real = pixels.get_decoder
    monkeypatch.setattr(pixels, "get_decoder", lambda uid: Missing() if uid == j2k else real(uid))
    ds.file_meta.TransferSyntaxUID = j2k
    with pydicom.config.disable_value_validation():
        ds.save_as(victim, enforce_file_format=True)
    with pytest.raises(InputError, match="JPEG 2000 Image Compression .Lossless Only.* install one of pylibjpeg-openjpeg"):
        load_dicom_series(folder)


def test_reader_options_through_load_image(tmp_path):
    from monai.transforms import LoadImage

    files = _ramp_series(tmp_path / "src")
    gap = _copy(files[:3] + files[4:], tmp_path / "gap")
    img = LoadImage(reader=DicomSeriesReader(resample=True), image_only=True, ensure_channel_first=True)(str(gap))
    assert img.shape == (1, 12, 10, 8)
    assert DicomSeriesReader().verify_suffix(str(gap)) and not DicomSeriesReader().verify_suffix(str(tmp_path / "x.nii.gz"))


def test_multi_valued_character_set(tmp_path, small_series):
    """Specific Character Set with code extensions (several values) is kept, and names decode with it."""

    def charset(k, ds):
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 87"]
        ds.PatientName = "Yamada^Tarou=山田^太郎"

    folder = _copy(sorted(small_series.iterdir()), tmp_path / "jp", edit=charset)
    headers = source_headers(load_dicom_series(folder).meta)
    assert list(headers[0].SpecificCharacterSet) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    assert all(str(h.PatientName) == "Yamada^Tarou=山田^太郎" for h in headers)
