"""write_original_mr_series: what real readers (GDCM via SimpleITK, dcm2niix, pydicom) and the DICOM
validator (dciodvfy) make of the series it writes, its quirks, and the sample data made with it."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, MRImageStorage

from monai_sr import geometry
from monai_sr.io.scanner_series import QUIRKS, write_original_mr_series

REPO = Path(__file__).resolve().parents[2]
ATOL_MM = 1e-4


def _rotation(ax_deg: float, ay_deg: float) -> np.ndarray:
    a, b = np.deg2rad([ax_deg, ay_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return ry @ rx


def _affine() -> np.ndarray:
    """Doubly oblique, anisotropic, off-centre: every geometry mistake shows."""
    a = np.eye(4)
    a[:3, :3] = _rotation(12.0, -5.0) @ np.diag([0.9, 1.1, 2.5])
    a[:3, 3] = [-81.3, -97.25, -33.7]
    return a


def _volume(style: str, shape=(20, 24, 6)) -> np.ndarray:
    rng = np.random.default_rng(1)
    if style == "siemens":
        return rng.integers(0, 4000, shape).astype(np.float64)  # scanner integers
    return rng.normal(300.0, 400.0, shape)  # real values, negatives included


def _read_sitk(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    sitk = pytest.importorskip("SimpleITK")
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float64)  # (k, j, i) -> (i, j, k)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return arr, geometry.lps_to_ras(lps)


def _read_dcm2niix(folder: Path, out: Path) -> tuple[np.ndarray, np.ndarray]:
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (Debian package dcm2niix)")
    nib = pytest.importorskip("nibabel")
    out.mkdir()
    res = subprocess.run([exe, "-z", "n", "-b", "n", "-f", "series", "-o", str(out), str(folder)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    files = sorted(out.glob("*.nii"))
    assert len(files) == 1, (files, res.stdout)
    img = nib.load(str(files[0]))
    return np.asarray(img.get_fdata(dtype=np.float64)), img.affine


def _on_our_grid(data: np.ndarray, aff: np.ndarray, want_aff: np.ndarray, shape) -> np.ndarray:
    """Check ``aff`` is ``want_aff`` up to a flip / permutation of the index axes (atol 1e-4 mm) and
    return ``data`` re-indexed onto ``want_aff``'s grid."""
    data = np.squeeze(data)
    m = np.linalg.inv(want_aff) @ aff  # reader index -> our index
    p = np.round(m)
    assert np.allclose(np.abs(p[:3, :3]).sum(axis=0), 1) and np.allclose(np.abs(p[:3, :3]).sum(axis=1), 1), m
    np.testing.assert_allclose(aff, want_aff @ p, atol=ATOL_MM, rtol=0)
    idx = np.indices(data.shape).reshape(3, -1).astype(np.float64)
    ours = np.rint(p[:3, :3] @ idx + p[:3, 3:]).astype(int)
    out = np.full(shape, np.nan)
    out[tuple(ours)] = data.reshape(-1)
    assert not np.isnan(out).any()
    return out


def _tolerance(folder: Path) -> float:
    ds = pydicom.dcmread(next(p for p in folder.iterdir()), stop_before_pixels=True)
    return float(ds.get("RescaleSlope", 0.0)) / 2.0


def _check_reads(folder: Path, vol: np.ndarray, aff: np.ndarray, tmp: Path) -> None:
    tol = _tolerance(folder) + 1e-6
    arr, got = _read_sitk(folder)
    np.testing.assert_allclose(_on_our_grid(arr, got, aff, vol.shape), vol, atol=tol, rtol=0)
    arr, got = _read_dcm2niix(folder, tmp)
    np.testing.assert_allclose(_on_our_grid(arr, got, aff, vol.shape), vol, atol=tol, rtol=0)


@pytest.mark.parametrize("style", ["siemens", "philips"])
def test_readers_get_the_geometry_and_values(style, tmp_path):
    vol, aff = _volume(style), _affine()
    folder = tmp_path / "series"
    paths = write_original_mr_series(vol, aff, folder, style=style)
    assert [p.name for p in paths] == sorted(p.name for p in folder.iterdir())
    _check_reads(folder, vol, aff, tmp_path / "nii")
    if style == "siemens":  # exact: the stored integers are the values
        arr, _ = _read_sitk(folder)
        assert np.array_equal(arr, vol)
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == MRImageStorage
    assert list(ds.ImageType[:2]) == ["ORIGINAL", "PRIMARY"]
    assert ds.Modality == "MR" and ds.PatientPosition == "HFS"
    if style == "philips":
        assert ds.PixelRepresentation == 1 and float(ds.RescaleSlope) == 1.5 and float(ds.RescaleIntercept) == -10
    else:
        assert ds.PixelRepresentation == 0 and "RescaleSlope" not in ds
    for tag in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
                "EchoTime", "InversionTime", "FlipAngle", "MagneticFieldStrength", "ImagingFrequency",
                "EchoTrainLength", "PixelBandwidth", "AcquisitionMatrix", "InPlanePhaseEncodingDirection",
                "ReceiveCoilName", "SoftwareVersions", "FrameOfReferenceUID", "SpacingBetweenSlices",
                "SliceLocation", "WindowCenter", "WindowWidth", "ContentTime", "AcquisitionTime"):
        assert tag in ds, tag
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation"):
        for v in np.atleast_1d(ds[kw].value):
            assert len(str(v)) <= 16


def test_philips_wide_range_gets_a_larger_slope(tmp_path):
    vol = np.linspace(-2.0e4, 9.0e4, 20 * 24 * 3).reshape(20, 24, 3)
    paths = write_original_mr_series(vol, _affine(), tmp_path / "s", style="philips")
    ds = pydicom.dcmread(paths[0])
    slope = float(ds.RescaleSlope)
    assert slope in (3.0, 6.0)
    arr, _ = _read_sitk(tmp_path / "s")
    np.testing.assert_allclose(arr, vol, atol=slope / 2 + 1e-6, rtol=0)


@pytest.mark.parametrize("style", ["siemens", "philips"])
def test_dciodvfy_finds_no_error(style, tmp_path):
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is not installed (Debian package dicom3tools)")
    paths = write_original_mr_series(_volume(style), _affine(), tmp_path / "s", style=style)
    for p in (paths[0], paths[-1]):
        res = subprocess.run([exe, "-new", str(p)], capture_output=True, text=True, timeout=60)
        lines = (res.stdout + res.stderr).splitlines()
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, "\n".join(lines)


def _positions(paths):
    dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    normal = geometry.slice_normal(dss[0].ImageOrientationPatient)
    return dss, np.array([float(np.dot(np.asarray(d.ImagePositionPatient, float), normal)) for d in dss])


def _check_quirk_present(quirk: str, folder: Path, style: str) -> None:
    files = sorted(folder.iterdir())
    dss, pos = _positions(files)
    for ds, f in zip(dss, files):
        assert pydicom.dcmread(f).pixel_array.shape == (24, 20)
    if quirk == "spacing_tag_lies":
        true_step = np.median(np.abs(np.diff(np.sort(pos))))
        assert abs(float(dss[0].SpacingBetweenSlices) - true_step) > 0.5
    elif quirk == "command_set":
        for ds in dss:
            assert ds.AffectedSOPClassUID == MRImageStorage and ds[0x00000100].value == 1
            assert ds.AffectedSOPInstanceUID == ds.SOPInstanceUID
    elif quirk == "zero_window":
        assert all(float(ds.WindowWidth) == 0 for ds in dss)
    elif quirk == "private_tags":
        group, creator = (0x0051, "SIEMENS MR HEADER") if style == "siemens" else (0x2001, "Philips Imaging DD 001")
        for ds in dss:
            assert ds[group, 0x0010].value == creator
            block = ds.private_block(group, creator)
            assert len([e for e in ds if e.tag.group == group and e.tag.element >= 0x1000]) >= 2
            assert block.block_start == 0x1000
    elif quirk == "shuffled_names":
        assert not any(re.fullmatch(r"IM\d{4}\.dcm", f.name) for f in files)
        order = np.argsort(pos)
        inst = np.array([int(ds.InstanceNumber) for ds in dss])[order]
        assert np.all(np.diff(inst) < 0)  # InstanceNumber descends while the position ascends
        assert [f.name for f in np.array(files)[order]] != sorted(f.name for f in files)
    elif quirk == "implicit_vr":
        assert all(ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian for ds in dss)
    else:  # pragma: no cover
        raise AssertionError(quirk)


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_each_quirk_is_present_and_survived(quirk, tmp_path):
    vol, aff = _volume("siemens"), _affine()
    folder = tmp_path / "s"
    write_original_mr_series(vol, aff, folder, quirks=[quirk], seed=5)
    _check_quirk_present(quirk, folder, "siemens")
    _check_reads(folder, vol, aff, tmp_path / "nii")


def test_all_quirks_together_philips(tmp_path):
    vol, aff = _volume("philips"), _affine()
    folder = tmp_path / "s"
    write_original_mr_series(vol, aff, folder, style="philips", quirks=tuple(QUIRKS), seed=7)
    for q in QUIRKS:
        _check_quirk_present(q, folder, "philips")
    _check_reads(folder, vol, aff, tmp_path / "nii")


def test_deterministic_and_seeded(tmp_path):
    vol, aff = _volume("siemens"), _affine()
    a = write_original_mr_series(vol, aff, tmp_path / "a", seed=3, quirks=["shuffled_names"])
    b = write_original_mr_series(vol, aff, tmp_path / "b", seed=3, quirks=["shuffled_names"])
    assert [p.name for p in a] == [p.name for p in b]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b))
    c = write_original_mr_series(vol, aff, tmp_path / "c", seed=4)
    d0, d1 = pydicom.dcmread(a[0]), pydicom.dcmread(c[0])
    assert d0.StudyInstanceUID != d1.StudyInstanceUID and d0.SOPInstanceUID != d1.SOPInstanceUID
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in c}) == len(c)
    assert d1.file_meta.MediaStorageSOPInstanceUID == d1.SOPInstanceUID


def test_slice_thickness_and_overwrite(tmp_path):
    vol, aff = _volume("siemens", (8, 6, 3)), _affine()
    folder = tmp_path / "s"
    write_original_mr_series(vol, aff, folder, slice_thickness=2.0)
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    assert float(ds.SliceThickness) == 2.0 and float(ds.SpacingBetweenSlices) == 2.5
    with pytest.raises(ValueError, match="not empty"):
        write_original_mr_series(vol, aff, folder)
    write_original_mr_series(vol, aff, folder, overwrite=True, quirks=["shuffled_names"])
    assert len(list(folder.iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"style": "ge"}, "style"),
        ({"quirks": ["nope"]}, "unknown quirk"),
        ({"quirks": "implicit_vr"}, "sequence of names"),
        ({"slice_thickness": -1.0}, "slice_thickness"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        write_original_mr_series(_volume("siemens", (4, 4, 2)), _affine(), tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_bad_volumes(tmp_path):
    aff = _affine()
    with pytest.raises(ValueError, match="3D"):
        write_original_mr_series(np.zeros((4, 4)), aff, tmp_path / "s")
    with pytest.raises(ValueError, match="non-finite"):
        write_original_mr_series(np.full((4, 4, 2), np.nan), aff, tmp_path / "s")
    with pytest.raises(ValueError, match="unsigned 16-bit"):
        write_original_mr_series(np.full((4, 4, 2), -5.0), aff, tmp_path / "s")
    sheared = aff.copy()
    sheared[0, 2] += 1.0
    with pytest.raises(ValueError, match="affine"):
        write_original_mr_series(np.zeros((4, 4, 2)), sheared, tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


# --- the sample data of data/sample ----------------------------------------------------------------

MANIFEST = REPO / "data_specs" / "sample_data.json"


def test_sample_data_geometry_matches_manifest():
    nib = pytest.importorskip("nibabel")
    man = json.loads(MANIFEST.read_text())
    ref_aff = np.asarray(man["geometry"]["reference_affine_ras"])
    lr_aff = np.asarray(man["geometry"]["lowres_affine_ras"])
    np.testing.assert_allclose(lr_aff, geometry.coarsened_affine(ref_aff, (2, 2, 1)), atol=1e-9)
    ref = nib.load(str(REPO / "data/sample/colin27_t1_oblique_reference_1mm.nii.gz"))
    assert ref.shape == (180, 216, 60)
    assert int(ref.header["sform_code"]) == 1 and int(ref.header["qform_code"]) == 1
    np.testing.assert_allclose(ref.affine, ref_aff, atol=ATOL_MM)
    np.testing.assert_allclose(geometry.spacing_from_affine(ref_aff), [1, 1, 2], atol=1e-9)
    arr, got = _read_sitk(REPO / "data/sample/colin27_t1_oblique_2mm")
    assert arr.shape == (90, 108, 60)
    np.testing.assert_allclose(got, lr_aff, atol=ATOL_MM, rtol=0)
    total = sum(e["bytes"] for e in man["outputs"].values())
    assert total < 5e6


def test_make_sample_data_check():
    spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "scripts" / "make_sample_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        mod.find_source(None)
    except SystemExit as exc:
        pytest.skip(f"sample data source not available: {exc}; `make data` puts it into $MONAI_SR_DATA")
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_data.py"), "--check"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
