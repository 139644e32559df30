"""Hostile DICOM headers (issue 16's fuzzing finds and silent drops): each is refused with an error that
names the file and the tag, or skipped with a note where the file is no part of the series; never a
traceback, never a memory bomb, never a slice dropped in silence."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from helpers import run_cli, tree_digest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from monai_sr.errors import MonaiSRError
from monai_sr.io.volume_source import open_volume


def _raw(ds, tag: int, vr: str, value: bytes) -> None:
    """Store ``value`` as it is (pydicom would refuse to write most of these values)."""
    value += b" " if len(value) % 2 else b""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _series(tmp_path: Path, small_series: Path, edit=None, which=(2,)) -> Path:
    folder = tmp_path / "series"
    shutil.copytree(small_series, folder)
    files = sorted(folder.iterdir())
    for i in which:
        ds = pydicom.dcmread(files[i])
        edit(ds)
        ds.save_as(files[i])
    return folder


ALL = range(6)
CASES = {
    # fuzzing finds: tracebacks before
    "slope_not_a_number": (lambda ds: _raw(ds, 0x00281053, "DS", b"abc"), (2,), 2, "RescaleSlope (0028,1053) is 'abc'"),
    "slope_two_values": (lambda ds: _raw(ds, 0x00281053, "DS", b"1\\2"), (2,), 2, "RescaleSlope (0028,1053) holds 2 values"),
    "intercept_not_a_number": (lambda ds: _raw(ds, 0x00281052, "DS", b"x"), (2,), 2, "RescaleIntercept (0028,1052) is 'x'"),
    "frames_not_a_number": (lambda ds: _raw(ds, 0x00280008, "IS", b"abc"), (2,), 2, "NumberOfFrames (0028,0008) is 'abc'"),
    # silently wrong before
    "slope_zero": (lambda ds: _raw(ds, 0x00281053, "DS", b"0"), ALL, 0, "RescaleSlope (0028,1053) is 0"),
    "slope_nan": (lambda ds: _raw(ds, 0x00281053, "DS", b"nan"), (2,), 2, "not a finite number"),
    "frames_negative": (lambda ds: _raw(ds, 0x00280008, "IS", b"-3"), (2,), 2, "NumberOfFrames (0028,0008) is -3"),
    "frames_more_than_held": (lambda ds: _raw(ds, 0x00280008, "IS", b"2"), (2,), 2, "more than the file holds"),
    "matrix_bomb": (lambda ds: (setattr(ds, "Rows", 65535), setattr(ds, "Columns", 65535)), ALL, 0,
                    "damaged DICOM file: Rows (0028,0010) 65535 x Columns (0028,0011) 65535 need 8589672450 bytes"),
    "last_slice_without_pixels": (lambda ds: delattr(ds, "PixelData"), (5,), 5, "no pixel data, though the file belongs"),
    # unclear messages before
    "pixel_spacing_zero": (lambda ds: setattr(ds, "PixelSpacing", [0, 0]), ALL, 0, "PixelSpacing (0028,0030) is [0.0, 0.0]"),
    "pixel_spacing_negative": (lambda ds: setattr(ds, "PixelSpacing", [-1, 1]), ALL, 0, "spacing must be positive"),
    "orientation_not_perpendicular": (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.5, 0.866, 0]), ALL, 0,
                                      "ImageOrientationPatient (0020,0037) in IM0001.dcm: row and column directions"),
    "orientation_zero_vector": (lambda ds: setattr(ds, "ImageOrientationPatient", [0, 0, 0, 0, 1, 0]), ALL, 0,
                                "not unit vectors"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_naming_file_and_tag(tmp_path, small_series, case):
    edit, which, culprit, cause = CASES[case]
    folder = _series(tmp_path, small_series, edit, which)
    with pytest.raises(MonaiSRError) as err:
        open_volume(folder).load()
    assert err.value.path == str(sorted(folder.iterdir())[culprit]), str(err.value)
    assert cause in str(err.value) and "\n" not in str(err.value)


def test_number_of_frames_bomb_refused_from_the_header(tmp_path, small_series):
    """99,999,999 frames declared in a 6 kB file: refused before a single frame is made (it took 11 GB)."""
    folder = _series(tmp_path, small_series, lambda ds: _raw(ds, 0x00280008, "IS", b"99999999"))
    before = tree_digest(folder)
    out = tmp_path / "out"
    result = run_cli("enhance", folder, out, "--quiet", "--bundle", tmp_path / "never_loaded")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IM0003.dcm: NumberOfFrames (0028,0008) 99999999 with Rows" in lines[0]
    assert "is more than the file holds" in lines[0]
    assert not out.exists() and tree_digest(folder) == before


def test_empty_modality_lut_sequence_means_no_lut(tmp_path, small_series):
    folder = _series(tmp_path, small_series, lambda ds: setattr(ds, "ModalityLUTSequence", pydicom.Sequence([])))
    reference = open_volume(small_series).load()
    assert (open_volume(folder).load() == reference).all()


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_links_are_skipped_with_a_note(tmp_path, small_series, kind):
    folder = _series(tmp_path, small_series, lambda ds: None, which=())
    link = folder / "link.dcm"
    os.symlink(folder / "nowhere" if kind == "dangling" else link, link)
    source = open_volume(folder)
    assert source.shape[2] == 6
    assert any("skipped link.dcm" in note and "link" in note for note in source.meta["monai_sr_notes"])
