"""Enhanced MR Image Storage output: one multi-frame object that dciodvfy accepts, that SimpleITK (GDCM)
and dcm2niix read with the geometry we meant, and whose frames are the classic slices (positions and
pixels); rescale keeps units and precision in both formats."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import require_tool
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage

from monai_sr import geometry
from monai_sr.errors import OutputError
from monai_sr.io.dicom.derived import choose_rescale
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import DicomFormat, as_dicom_format, write_derived_series

SCALE = (2, 2, 1)


def _write(series, folder, fmt, *, scale=SCALE, transform=None):
    src = load_dicom_series(series)
    vol = np.kron(src[0].numpy().astype(np.float64), np.ones(scale))
    if transform is not None:
        vol = transform(vol)
    affine = geometry.scaled_affine(src.affine.numpy(), scale)
    files = write_derived_series(vol, affine, folder, source_headers=source_headers(src.meta),
                                 derivation="2x2x1 super-resolution (test)", dicom_format=fmt)
    return src, vol, affine, files


@pytest.fixture(scope="module", params=["small", "quirky"])
def both(request, tmp_path_factory):
    """The same result written in both formats, from a plain and from a quirky vendor-style source."""
    series = request.getfixturevalue(f"{request.param}_series")
    root = tmp_path_factory.mktemp(f"formats_{request.param}")
    src, vol, affine, classic = _write(series, root / "classic", "classic")
    _, _, _, (enhanced,) = _write(series, root / "enhanced", "enhanced")
    return src, vol, affine, classic, enhanced


def _real(ds):
    """Stored frames -> real values through the shared Pixel Value Transformation (pydicom's apply_rescale
    reads only top-level Rescale Slope / Intercept)."""
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    return ds.pixel_array * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)


def _frame_positions(ds):
    return [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ds.PerFrameFunctionalGroupsSequence]


def _sitk_affine(img):
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return geometry.lps_to_ras(lps)


def test_format_option():
    assert as_dicom_format("Enhanced") is DicomFormat.ENHANCED
    with pytest.raises(OutputError, match="did you mean 'enhanced'.*available: classic, enhanced"):
        as_dicom_format("enhancd")


def test_one_object_with_the_classic_frames(both):
    src, vol, _, classic, enhanced = both
    ds = pydicom.dcmread(enhanced)
    slices = sorted((pydicom.dcmread(f) for f in classic), key=lambda d: int(d.InstanceNumber))
    assert ds.SOPClassUID == EnhancedMRImageStorage and slices[0].SOPClassUID == MRImageStorage
    assert int(ds.NumberOfFrames) == len(slices) == vol.shape[2]
    assert (int(ds.Rows), int(ds.Columns)) == (vol.shape[1], vol.shape[0])
    # per-frame positions are the classic positions, exactly (same DS strings)
    assert _frame_positions(ds) == [[float(v) for v in d.ImagePositionPatient] for d in slices]
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == list(slices[0].ImageOrientationPatient)
    assert list(shared.PixelMeasuresSequence[0].PixelSpacing) == list(slices[0].PixelSpacing)
    # pixels: stored integers and rescale are those of the classic slices
    pvt = shared.PixelValueTransformationSequence[0]
    assert (pvt.RescaleSlope, pvt.RescaleIntercept) == (slices[0].RescaleSlope, slices[0].RescaleIntercept)
    np.testing.assert_array_equal(ds.pixel_array, np.stack([d.pixel_array for d in slices]))
    real = _real(ds)
    np.testing.assert_allclose(real.transpose(2, 1, 0), vol, atol=float(pvt.RescaleSlope) / 2 + 1e-6)
    # frame content indexes the frames along the one stack, as the dimension index says
    pointers = [int(d.DimensionIndexPointer) for d in ds.DimensionIndexSequence]
    assert pointers == [0x00209056, 0x00209057]
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        content = frame.FrameContentSequence[0]
        assert list(content.DimensionIndexValues) == [1, k + 1] and content.InStackPositionNumber == k + 1
    assert shared.FrameVOILUTSequence[0].WindowWidth == slices[0].WindowWidth


def test_derived_identity_and_references(both):
    src, _, _, _, enhanced = both
    ds = pydicom.dcmread(enhanced)
    first = source_headers(src.meta)[0]
    sources = {d.SOPInstanceUID for d in source_headers(src.meta)}
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate", "AccessionNumber"):
        assert ds[kw].value == first[kw].value, kw
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID and ds.SOPInstanceUID not in sources
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    assert ds.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0].FrameType == ds.ImageType
    assert ds.SoftwareVersions and ds.ContributingEquipmentSequence[0].Manufacturer == first.Manufacturer
    evidence = {r.ReferencedSOPInstanceUID for s in ds.SourceImageEvidenceSequence
                for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
    assert evidence == sources
    for frame in ds.PerFrameFunctionalGroupsSequence:
        derivation = frame.DerivationImageSequence[0]
        assert derivation.DerivationCodeSequence[0].CodeValue == "113085"  # spatial resampling
        assert {r.ReferencedSOPInstanceUID for r in derivation.SourceImageSequence} <= sources
    assert not any(e.tag.is_private for e in ds.iterall()), "private elements must not be copied"
    assert not any(e.tag.group == 0x0000 for e in ds), "command-set elements must not be copied"
    # the classic MR Image module does not belong in an Enhanced MR image
    assert "ScanningSequence" not in ds and "RescaleSlope" not in ds and "ImagePositionPatient" not in ds


def test_dciodvfy_has_no_errors(both):
    tool = require_tool("dciodvfy")
    enhanced = both[4]
    run = subprocess.run([tool, "-new", str(enhanced)], capture_output=True, text=True)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_simpleitk_reads_the_geometry_we_meant(both):
    _, vol, affine, _, enhanced = both
    img = sitk.ReadImage(str(enhanced))
    np.testing.assert_allclose(_sitk_affine(img), affine, atol=1e-4)
    assert img.GetSize() == vol.shape
    slope = float(pydicom.dcmread(enhanced).SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope)
    np.testing.assert_allclose(sitk.GetArrayFromImage(img).transpose(2, 1, 0), vol, atol=slope / 2 + 1e-4)


def test_dcm2niix_reads_the_geometry_we_meant(both, tmp_path):
    tool = require_tool("dcm2niix")
    _, vol, affine, _, enhanced = both
    run = subprocess.run([tool, "-z", "n", "-b", "n", "-f", "conv", "-o", str(tmp_path), str(enhanced.parent)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    (nii,) = tmp_path.glob("conv*.nii")
    a, b = nib.as_closest_canonical(nib.load(nii)), nib.as_closest_canonical(nib.Nifti1Image(vol, affine))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    slope = float(pydicom.dcmread(enhanced).SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope)
    np.testing.assert_allclose(a.get_fdata(), b.get_fdata(), atol=slope / 2 + 1e-3)


def _read_real(files, fmt):
    if fmt == "enhanced":
        (f,) = files
        ds = pydicom.dcmread(f)
        return _real(ds).transpose(2, 1, 0)
    return load_dicom_series(files[0].parent)[0].numpy()


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
@pytest.mark.parametrize("case", ["beyond_int16", "tiny_range"])
def test_rescale_keeps_units_and_precision(small_series, tmp_path, fmt, case):
    """Far outside int16 gets a slope > 1 (never a wrap-around); a tiny range gets a slope < 1 (precision)."""
    transform = {"beyond_int16": lambda v: v * 100.0 - 5000.0, "tiny_range": lambda v: v * 1e-4 - 0.01}[case]
    src, vol, _, files = _write(small_series, tmp_path / "out", fmt, scale=(1, 1, 1), transform=transform)
    slope, intercept = choose_rescale(vol)
    assert intercept == 0 and (slope > 1 if case == "beyond_int16" else slope < 1e-3)
    back = _read_real(files, fmt)
    np.testing.assert_allclose(back, vol, atol=slope / 2 + 1e-9 * np.abs(vol).max())
    # the extremes survive with their signs (no wrap-around)
    assert np.sign(back.min()) == np.sign(vol.min()) and np.sign(back.max()) == np.sign(vol.max())
    assert abs(back.max() - vol.max()) <= slope and abs(back.min() - vol.min()) <= slope
