"""In-plane SR keeps every output slice at its own source slice's position (issue 16).

A real series (a crop of the Colin27 sample, oblique) is made irregular: three slices moved along the
normal by up to 0.07 mm, as a scanner's table steps and rounded positions do; the reader accepts it (steps
within 0.15 mm). The derived series must keep those measured positions, ImagePositionPatient of output
slice k == that of input slice k moved in-plane by the field-of-view rule, instead of the regular grid
from the first to the last slice; through-plane SR says in its notes how it placed the new slices.
Checked by reading the output back with pydicom and with dciodvfy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import require_tool, run_cli

from monai_sr import geometry
from monai_sr.inference import SliceWiseInferer, ZeroFilledInterpolation
from monai_sr.inference.baselines import BicubicInterpolation
from monai_sr.inference.orthogonal import OrthogonalPlanesInferer
from monai_sr.io.dicom.derived import output_positions
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.pipeline import enhance

#: moves along the normal (mm) of the 6 slices: first and last stay, so the regular grid is unchanged
MOVES = np.array([0.0, 0.07, 0.03, 0.0, 0.05, 0.0])


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _geometry(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(IPP per slice in slice order, unit row, unit column, PixelSpacing) read with pydicom."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in _files(folder)]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ipps = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
    ipps = ipps[np.argsort(ipps @ normal)]
    return ipps, iop[:3], iop[3:], np.asarray(headers[0].PixelSpacing, dtype=float)


@pytest.fixture(scope="module")
def irregular_series(tmp_path_factory, small_series) -> Path:
    """The 40 x 48 x 6 small series with slices 1, 2 and 4 moved along the normal (MOVES)."""
    folder = tmp_path_factory.mktemp("irregular") / "series"
    shutil.copytree(small_series, folder)
    ipps, row, col, _ = _geometry(folder)
    normal = np.cross(row, col)
    for f in _files(folder):
        ds = pydicom.dcmread(f)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        k = int(np.argmin(np.linalg.norm(ipps - ipp, axis=1)))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp + MOVES[k] * normal]
        ds.SliceLocation = f"{float((ipp + MOVES[k] * normal) @ normal):.6f}"
        ds.save_as(f)
    return folder


def _expected(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each source slice's position moved in-plane by the x2 field-of-view rule (a quarter of an input
    pixel back along rows and columns), and the regular grid the old writer used instead."""
    ipps, row, col, ps = _geometry(source)
    shift = -0.25 * (row * ps[1] + col * ps[0])  # (1/s - 1) / 2 of an input pixel, s = 2, both in-plane axes
    kept = ipps + shift
    regular = kept[0] + np.outer(np.arange(len(ipps)) / (len(ipps) - 1), kept[-1] - kept[0])
    return kept, regular


def test_the_series_is_irregular_and_read(irregular_series):
    ipps, row, col, _ = _geometry(irregular_series)
    steps = np.diff(ipps @ np.cross(row, col))
    assert steps.max() - steps.min() > 0.1  # uneven steps (2.07 to 1.95 mm)...
    volume = load_dicom_series(irregular_series)  # ...that the reader accepts, on its regular grid
    assert volume.shape[-1] == 6


def _dciodvfy_new_errors(source: Path, out: Path) -> dict[str, list[str]]:
    tool = require_tool("dciodvfy")

    def errors(f: Path) -> set[str]:
        run = subprocess.run([tool, "-new", str(f)], capture_output=True, text=True)
        return {re.sub(r"= <.*?>", "", line).strip() for line in (run.stdout + run.stderr).splitlines()
                if line.startswith("Error")}

    known = set().union(*(errors(f) for f in _files(source)[:2]))
    return {f.name: sorted(errors(f) - known) for f in _files(out) if errors(f) - known}


@pytest.mark.slow  # 26-29 s on the shared machine at load ~10: the entry point loads the bundle
def test_in_plane_sr_keeps_each_slice_at_its_source_position(irregular_series, tmp_path):
    """Classic MR output through the real entry point: IPP of output slice k == input slice k + the FOV shift."""
    out = tmp_path / "sr"
    result = run_cli("enhance", irregular_series, out, "--fast", "--quiet")
    assert result.returncode == 0, result.stderr
    kept, regular = _expected(irregular_series)
    headers = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in _files(out)), key=lambda h: int(h.InstanceNumber))
    written = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
    np.testing.assert_allclose(written, kept, atol=1e-4)
    assert np.abs(written - regular).max() > 0.05  # the regular grid would be off by the moves (0.07 mm)
    # Slice Location follows the position; orientation and pixel spacing as the FOV rule says
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    np.testing.assert_allclose([float(h.SliceLocation) for h in headers], written @ normal, atol=1e-4)
    _, row, col, ps = _geometry(irregular_series)
    np.testing.assert_allclose(iop, [*row, *col], atol=1e-6)
    np.testing.assert_allclose(np.asarray(headers[0].PixelSpacing, dtype=float), ps / 2, atol=1e-6)
    # every output slice still names its own source slice
    sources = {h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in headers}
    assert len(sources) == 6
    assert load_dicom_series(out).shape[-1] == 6  # our reader takes its own output back
    assert not _dciodvfy_new_errors(irregular_series, out)


@pytest.mark.parametrize("dicom_format", ["classic", "enhanced"])
def test_both_formats_keep_the_positions(irregular_series, tmp_path, dicom_format):
    """The library path (zero-filled x2): classic files, or one Enhanced MR object whose Plane Position
    Sequence of each frame holds its source slice's position."""
    out = tmp_path / "sr"
    enhance(irregular_series, out, network=ZeroFilledInterpolation(2), inferer=SliceWiseInferer(),
            dicom_format=dicom_format)
    if dicom_format == "enhanced":
        (path,) = _files(out)
        written = np.asarray([[float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
                              for item in pydicom.dcmread(path).PerFrameFunctionalGroupsSequence])
    else:
        headers = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in _files(out)),
                         key=lambda h: int(h.InstanceNumber))
        written = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
    kept, regular = _expected(irregular_series)
    np.testing.assert_allclose(written, kept, atol=1e-4)
    assert np.abs(written - regular).max() > 0.05
    assert not _dciodvfy_new_errors(irregular_series, out)


def test_through_plane_sr_states_how_it_placed_the_slices(irregular_series, tmp_path):
    """x2 through-plane: 12 slices on the regular grid of the FOV rule, and a note that says so and how far
    the measured source slices lie off the source grid (0.07 mm here)."""
    out = tmp_path / "sr_through"
    result = enhance(irregular_series, out, network=BicubicInterpolation((1, 2)),
                     inferer=OrthogonalPlanesInferer(lr_axis=2))
    (note,) = [n for n in result.notes if n.startswith("through-plane x2")]
    ipps, row, col, _ = _geometry(irregular_series)
    along = ipps @ np.cross(row, col)
    off = np.abs(along - np.linspace(along[0], along[-1], len(along))).max()
    assert f"lie up to {off:.3f} mm off it" in note and "12 output slices" in note, note
    assert abs(off - 0.07) < 0.002
    written = np.asarray(sorted(([float(v) for v in pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient]
                                 for f in _files(out)), key=lambda p: float(np.asarray(p) @ np.cross(row, col))))
    steps = np.diff(written @ np.cross(row, col))
    np.testing.assert_allclose(steps, (along[-1] - along[0]) / 5 / 2, atol=1e-4)  # regular, half the mean step
    assert not _dciodvfy_new_errors(irregular_series, out)


def test_output_positions_take_the_grid_when_the_slices_do_not_correspond(irregular_series):
    """Another slice count, or an affine whose slices are not the source's: the affine's regular grid."""
    volume = load_dicom_series(irregular_series)
    affine = geometry.scaled_affine(volume.affine.numpy(), (2, 2, 1))
    ipps, row, col, _ = _geometry(irregular_series)
    headers = [pydicom.Dataset() for _ in ipps]
    for h, ipp in zip(headers, ipps):
        h.ImagePositionPatient = [float(v) for v in ipp]

    def grid(a, n):
        lps = geometry.ras_to_lps(a)
        return lps[:3, 3] + np.outer(np.arange(n), lps[:3, 2])

    kept, _ = _expected(irregular_series)
    np.testing.assert_allclose(output_positions(affine, 6, headers), kept, atol=1e-6)
    through = geometry.scaled_affine(volume.affine.numpy(), (1, 1, 2))
    np.testing.assert_allclose(output_positions(through, 12, headers), grid(through, 12))
    moved = affine.copy()
    moved[:3, 3] += affine[:3, 2] * 0.6  # the volume shifted by 0.6 slices: not these slices
    np.testing.assert_allclose(output_positions(moved, 6, headers), grid(moved, 6))
    del headers[3].ImagePositionPatient  # a source slice without a position
    np.testing.assert_allclose(output_positions(affine, 6, headers), grid(affine, 6))
