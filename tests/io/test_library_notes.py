"""pydicom's and nibabel's warnings become our own one-line notes (issue 16): a real series with an
invalid UID (a leading zero, common in old archives) through the real entry point, and the collector."""

from __future__ import annotations

import logging
import shutil
import warnings

import pydicom
from helpers import run_cli, tree_digest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from monai_sr.io.library_notes import from_file, library_notes

BAD_UID = b"1.2.826.0.1.3680043.8.498.0123"  # "0123": a component with a leading zero, invalid for VR UI


def _with_bad_series_uid(series, folder):
    shutil.copytree(series, folder)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds._dict[Tag(0x0020000E)] = RawDataElement(Tag(0x0020000E), "UI", len(BAD_UID), BAD_UID, 0, False, True)
        ds.save_as(f)
    return folder


def test_pydicom_warning_is_one_note_not_raw_stderr(small_series, tmp_path):
    src = _with_bad_series_uid(small_series, tmp_path / "series")
    before = tree_digest(src)
    out = tmp_path / "sr"
    result = run_cli("enhance", src, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Invalid value" not in result.stderr and "pydicom" not in result.stderr, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note") and "pydicom" in line]
    assert len(notes) == 1, result.stdout
    assert notes[0].startswith(f"note    pydicom: Invalid value for VR UI: '{BAD_UID.decode()}'"), notes[0]
    assert "https://" not in notes[0]  # pydicom's link to the standard dropped: one short line
    assert notes[0].endswith("in 6 files: IM0001.dcm, IM0002.dcm, IM0003.dcm, ...)"), notes[0]  # where it came from
    assert len(list(out.iterdir())) == len(list(src.iterdir()))
    assert tree_digest(src) == before


def test_collector_counts_library_messages_and_passes_others_on():
    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("always")
        with library_notes() as notes:
            for _ in range(3):
                logging.getLogger("pydicom").warning("Expected explicit VR, but found implicit VR")
            logging.getLogger("nibabel.global").warning("pixdim[0] (qfac) should be 1 (default) or -1")
            with library_notes() as inner:
                pydicom.valuerep.validate_value("UI", "1.2.abc", pydicom.config.WARN)  # logs and warns: once
            warnings.warn("ours, not a library's", UserWarning)
    assert inner == ["pydicom: Invalid value for VR UI: '1.2.abc'."]
    assert notes == ["pydicom: Expected explicit VR, but found implicit VR (seen 3 times)",
                     "nibabel: pixdim[0] (qfac) should be 1 (default) or -1"]
    assert [str(w.message) for w in outside] == ["ours, not a library's"]
    assert logging.getLogger("pydicom").propagate and not any(
        type(h).__name__ == "_Handler" for h in logging.getLogger("nibabel.global").handlers)


def test_notes_name_the_files_they_came_from(tmp_path):
    """Warnings raised while a file is being read (from_file) name it: one file, several, or more than
    three (the first three, then '...'); the files are told apart by name, counts kept."""
    with library_notes() as notes:
        for name in ("IM0001.dcm", "IM0002.dcm", "IM0003.dcm", "IM0004.dcm"):
            with from_file(tmp_path / name):
                pydicom.valuerep.validate_value("UI", "1.2.abc", pydicom.config.WARN)
        with from_file(tmp_path / "IM0005.dcm"):
            logging.getLogger("pydicom").warning("Expected explicit VR, but found implicit VR")
            logging.getLogger("pydicom").warning("Expected explicit VR, but found implicit VR")
        with from_file(tmp_path / "IM0006.dcm"), from_file(tmp_path / "inner.dcm"):
            warnings.warn_explicit("odd header", UserWarning, pydicom.__file__, 1)
    assert notes == [
        "pydicom: Invalid value for VR UI: '1.2.abc'. (seen 4 times, in 4 files: IM0001.dcm, IM0002.dcm, "
        "IM0003.dcm, ...)",
        "pydicom: Expected explicit VR, but found implicit VR (seen 2 times, in IM0005.dcm)",
        "pydicom: odd header (in inner.dcm)",
    ]
