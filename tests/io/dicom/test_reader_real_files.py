"""Our reader against SimpleITK (GDCM) and dcm2niix on real files from registry packages.

Files: pydicom's test files (MR_small in every transfer syntax it ships, plus JPEG lossless / baseline
and deflate transcodes of it made here with dcmtk and pydicom, CT_small, MR2 in J2K), pydicom-data's
Enhanced MR / CT, nibabel's DICOMs, and pydicom's multi-series DICOMDIR. On each one the three readers
must agree on the RAS affine (atol 1e-4) and the voxels, where the tool can read the file at all;
a tool that cannot is skipped with its reason.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import require_tool
from pydicom.uid import DeflatedExplicitVRLittleEndian

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.io.dicom.discover import find_series
from monai_sr.io.dicom.frames import lenient_reading
from monai_sr.io.dicom.reader import load_dicom_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nib.__file__).parent / "nicom" / "tests" / "data"
EMRI_SHA256 = "151233ec63f64ebb63b979df51aa827cd612a53422c073f6ef341770c7bc9a56"

MR_SMALL = sorted(p.name for p in PYDICOM_FILES.glob("MR_small*.dcm"))

def pydicom_data(name: str) -> Path:
    """A file of the pydicom-data package (no download: skipped when the package is missing)."""
    pytest.importorskip("data_store", reason="pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory) -> dict[str, Path]:
    """MR_small in JPEG lossless (dcmtk), JPEG baseline of an 8-bit copy (dcmtk) and deflate (pydicom)."""
    out = tmp_path_factory.mktemp("transcoded")
    src = PYDICOM_FILES / "MR_small.dcm"
    files = {}
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    files["deflate"] = out / "MR_small_deflate.dcm"
    ds.save_as(files["deflate"], enforce_file_format=True)
    if shutil.which("dcmcjpeg"):
        files["jpeg_lossless"] = out / "MR_small_jpeg_lossless_sv1.dcm"
        subprocess.run(["dcmcjpeg", "+e1", str(src), str(files["jpeg_lossless"])], check=True, capture_output=True)
        eight = pydicom.dcmread(src)
        arr = eight.pixel_array.astype(np.int32)
        eight.PixelData = np.clip(arr // 16, 0, 255).astype(np.uint8).tobytes()
        eight.BitsAllocated, eight.BitsStored, eight.HighBit, eight.PixelRepresentation = 8, 8, 7, 0
        for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            eight.pop(kw, None)
        plain8 = out / "MR_small_8bit.dcm"
        eight.save_as(plain8, enforce_file_format=True)
        files["jpeg_baseline"] = out / "MR_small_jpeg_baseline_8bit.dcm"
        subprocess.run(["dcmcjpeg", "+eb", "+q", "95", str(plain8), str(files["jpeg_baseline"])], check=True, capture_output=True)
    return files


def _on_our_grid(data: np.ndarray, affine: np.ndarray, ours: np.ndarray, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Another reader's array and affine brought onto our index order (a signed axis permutation)."""
    affine = np.array(affine, dtype=np.float64)
    if data.ndim == 2:
        data = data[:, :, None]
    if n_slices == 1:  # one slice: its spacing along the normal is a convention of each tool
        cos = abs(float(geometry.slice_normal(_iop(ours)) @ _unit(geometry.ras_to_lps(affine)[:3, 2])))
        assert cos > 1 - 1e-6, "the slice normal differs"
        affine[:3, 2] = ours[:3, 2]
    m = np.linalg.solve(affine, ours)  # our index -> their index
    perm = np.round(m[:3, :3])
    assert np.abs(m[:3, :3] - perm).max() < 1e-3, f"the grids are not an axis permutation of each other:\n{m.round(4)}"
    axes = [int(np.argmax(np.abs(perm[:, a]))) for a in range(3)]
    out = np.transpose(data, axes)
    for a in range(3):
        if perm[axes[a], a] < 0:
            out = np.flip(out, a)
    full = np.eye(4)
    full[:3, :3] = perm
    full[:3, 3] = np.round(m[:3, 3])
    return out, affine @ full


def _unit(v):
    return v / np.linalg.norm(v)


def _iop(ras_affine):
    lps = geometry.ras_to_lps(ras_affine)
    return [*_unit(lps[:3, 0]), *_unit(lps[:3, 1])]


def _sitk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        img = reader.Execute()
    else:
        img = sitk.ReadImage(str(path))
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0), geometry.lps_to_ras(lps)


def _dcm2niix(path: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    tool = require_tool("dcm2niix")
    src = tmp / "d2n_in"
    if path.is_dir():
        shutil.copytree(path, src)
    else:
        src.mkdir()
        shutil.copy(path, src / path.name)
    out = tmp / "d2n_out"
    out.mkdir()
    run = subprocess.run([tool, "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(src)], capture_output=True, text=True, timeout=60)
    niftis = sorted(out.glob("*.nii"))
    if len(niftis) != 1:
        tail = " ".join(run.stdout.strip().splitlines()[-2:])
        pytest.skip(f"dcm2niix cannot read {path.name}: {len(niftis)} NIfTI file(s); it says: {tail}")
    img = nib.load(niftis[0])
    return np.asarray(img.get_fdata(dtype=np.float64)), img.affine


def _agree(path: Path, tool: str, tmp: Path, *, voxel_atol: float = 0.0) -> None:
    ours = load_dicom_series(path)
    a = ours.affine.numpy()
    vol = ours[0].numpy()
    if tool == "sitk":
        try:
            data, affine = _sitk(path)
        except RuntimeError as exc:
            pytest.skip(f"SimpleITK cannot read {path.name}: {str(exc).strip().splitlines()[-1]}")
    else:
        data, affine = _dcm2niix(path, tmp)
    data, affine = _on_our_grid(data, affine, a, vol.shape[2])
    np.testing.assert_allclose(affine, a, atol=1e-4)
    assert data.shape == vol.shape
    np.testing.assert_allclose(vol, data, rtol=1e-6, atol=voxel_atol)


@pytest.mark.parametrize("tool", ["sitk", "dcm2niix"])
@pytest.mark.parametrize("name", MR_SMALL)
def test_mr_small_every_syntax(name, tool, tmp_path):
    _agree(PYDICOM_FILES / name, tool, tmp_path)


def test_mr_small_syntaxes_decode_to_the_same_voxels():
    base = load_dicom_series(PYDICOM_FILES / "MR_small.dcm")[0].numpy()
    syntaxes = set()
    for name in MR_SMALL:
        path = PYDICOM_FILES / name
        syntaxes.add(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
        np.testing.assert_array_equal(load_dicom_series(path)[0].numpy(), base, err_msg=name)
    assert {"RLE Lossless", "Explicit VR Big Endian", "Implicit VR Little Endian", "JPEG-LS Lossless Image Compression",
            "JPEG 2000 Image Compression (Lossless Only)"} <= syntaxes


@pytest.mark.parametrize("tool", ["sitk", "dcm2niix"])
@pytest.mark.parametrize("kind", ["deflate", "jpeg_lossless", "jpeg_baseline"])
def test_transcoded_mr_small(transcoded, kind, tool, tmp_path):
    if kind not in transcoded:
        pytest.skip("dcmcjpeg (dcmtk) is not installed")
    path = transcoded[kind]
    if kind == "jpeg_lossless":
        base = load_dicom_series(PYDICOM_FILES / "MR_small.dcm")[0].numpy()
        np.testing.assert_array_equal(load_dicom_series(path)[0].numpy(), base)
    # lossy JPEG: decoders round the inverse DCT differently (GDCM's IJG by a grey level or two,
    # dcm2niix's built-in integer decoder by a few)
    atol = {"sitk": 2.0, "dcm2niix": 6.0}[tool] if kind == "jpeg_baseline" else 0.0
    _agree(path, tool, tmp_path, voxel_atol=atol)


@pytest.mark.parametrize("tool", ["sitk", "dcm2niix"])
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR2_J2KR.dcm", "eCT_Supplemental.dcm"])
def test_other_real_files(name, tool, tmp_path):
    path = PYDICOM_FILES / name if (PYDICOM_FILES / name).exists() else pydicom_data(name)
    _agree(path, tool, tmp_path)


@pytest.mark.parametrize("tool", ["sitk", "dcm2niix"])
@pytest.mark.parametrize("name", ["decimal_rescale.dcm", "slicethickness_empty_string.dcm", "philips_mprage.dcm.gz"])
def test_nibabel_files(name, tool, tmp_path):
    path = NIBABEL_FILES / name
    if name.endswith(".gz"):
        plain = tmp_path / name[:-3]
        plain.write_bytes(gzip.decompress(path.read_bytes()))
        path = plain
    _agree(path, tool, tmp_path)


def test_nibabel_mosaic_and_headerless_files_are_refused_clearly():
    with pytest.raises(InputError, match="mosaic"):
        load_dicom_series(NIBABEL_FILES / "0.dcm")
    with pytest.raises(InputError, match="without pixel data"):
        load_dicom_series(NIBABEL_FILES / "csa_slice_norm.dcm")


def test_enhanced_ct_frames_sorted_by_position_with_shared_rescale():
    path = pydicom_data("eCT_Supplemental.dcm")
    vol = load_dicom_series(path)
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float64) - 1024.0  # shared Pixel Value Transformation: slope 1, intercept -1024
    # frame 2 (z = -149) comes first along the normal (0, 0, -1)
    np.testing.assert_array_equal(vol[0].numpy(), raw[::-1].transpose(2, 1, 0).astype(np.float32))
    assert vol.meta["dicom_frame_numbers"] == [2, 1]
    assert float(vol.meta["dicom_headers"][0]["00200032"]["Value"][2]) == -149.0


def test_emri_small_is_identified_and_refused_without_geometry():
    path = pydicom_data("emri_small.dcm")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == EMRI_SHA256
    (cand,), _ = find_series(path)
    assert cand.describe()["slices"] == 10 and cand.modality == "MR"
    assert cand.describe()["orientation"] == "no geometry"
    # pydicom-data's copy was anonymised down to no functional groups: no frame can be placed
    with pytest.raises(GeometryError, match="missing ImagePositionPatient .*PlanePositionSequence.*frame 1"):
        load_dicom_series(path)


DICOMDIR = PYDICOM_FILES / "dicomdirtests" / "DICOMDIR"


def test_dicomdir_lists_every_series_and_refuses_without_choice():
    cands, _ = find_series(DICOMDIR)
    assert len({c.uid for c in cands}) == 13
    by_desc = {c.description: c for c in cands}
    smart = by_desc["SmartScore - Gated 0.5 sec"].describe()
    assert (smart["slices"], smart["matrix"], smart["orientation"], smart["spacing"]) == (5, "16x16", "axial", "0.4883x0.4883x2.5")
    assert by_desc["ANGIO Projected from   C"].describe()["orientation"] == "mixed"
    with pytest.raises(InputError, match="found 13 series; choose one with --series"):
        load_dicom_series(DICOMDIR)
    # a folder scan (recursive) finds the same series as the DICOMDIR's records
    assert sorted(c.uid for c in find_series(DICOMDIR.parent)[0]) == sorted(c.uid for c in cands)


@pytest.mark.parametrize("tool", ["sitk", "dcm2niix"])
def test_dicomdir_series_agrees_with_tools(tool, tmp_path):
    vol = load_dicom_series(DICOMDIR, series="5")
    assert vol.shape == (1, 16, 16, 5)
    folder = Path(vol.meta["dicom_files"][0]).parent
    _agree(folder, tool, tmp_path)


def test_dicomdir_series_with_geometry_problems_are_refused():
    with pytest.raises(GeometryError, match="mixed orientations"):
        load_dicom_series(DICOMDIR, series="700")
    with pytest.raises(GeometryError, match="unequal slice spacing|missing slice"):
        load_dicom_series(DICOMDIR, series="1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2")
    with pytest.raises(GeometryError, match="cannot resample: a gap of 202.500 mm"):
        load_dicom_series(DICOMDIR, series="1.3.6.1.4.1.5962.1.1.0.0.0.1196530851.28319.0.2", resample=True)
    with pytest.raises(GeometryError, match="missing ImagePositionPatient"):
        load_dicom_series(DICOMDIR, series="3")


def test_strict_validation_is_restored_after_reading():
    load_dicom_series(PYDICOM_FILES / "MR_small.dcm")
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.RAISE
    with lenient_reading():
        assert pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.RAISE
