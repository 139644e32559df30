"""Non-ASCII patient names survive reader -> writer -> pydicom in both formats, with their Specific
Character Set; private elements of the source do not travel."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import write_derived_series

CASES = {
    "utf8": ("ISO_IR 192", "Müller^Jürgen", "Kopf – MRT ½ Dosis"),
    "latin1": ("ISO_IR 100", "Müller^Jürgen", "Schädel nativ"),
    # JIS X 0208 through ISO 2022 escapes: alphabetic, ideographic and phonetic groups (PS3.5 H.3)
    "japanese": (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "頭部"),
}


def _relabel(series, folder, charset, name, study):
    """Copy of ``series`` whose files declare ``charset`` and carry ``name`` and a study description in it."""
    folder.mkdir()
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.StudyDescription = study
        ds.save_as(folder / f.name)
    return folder


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_patient_name_survives(small_series, tmp_path, case, fmt):
    charset, name, study = CASES[case]
    source = _relabel(small_series, tmp_path / "src", charset, name, study)
    raw = (source / sorted(p.name for p in source.iterdir())[0]).read_bytes()
    if case == "japanese":
        assert b"\x1b$B" in raw  # really written with the JIS X 0208 escape, not as UTF-8
    src = load_dicom_series(source)
    files = write_derived_series(src[0].numpy(), src.affine.numpy(), tmp_path / "out", source_headers=source_headers(src.meta),
                                 derivation="charset test", dicom_format=fmt)
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.SpecificCharacterSet == charset
        assert str(ds.PatientName) == name
        assert ds.StudyDescription == study
        if case == "japanese":
            assert ds.PatientName.ideographic == "山田^太郎" and ds.PatientName.phonetic == "やまだ^たろう"
        if case == "latin1":
            assert "Müller".encode("latin-1") in f.read_bytes()


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
def test_iso2022_name_is_written_back(small_series, tmp_path, fmt):
    """The writer alone (headers from pydicom, not the reader): JIS X 0208 escapes out, same name back."""
    charset, name, study = CASES["japanese"]
    headers = []
    for f in sorted(small_series.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        ds.SpecificCharacterSet, ds.PatientName, ds.StudyDescription = charset, name, study
        headers.append(ds)
    src = load_dicom_series(small_series)
    (first, *_) = write_derived_series(src[0].numpy(), src.affine.numpy(), tmp_path / "out", source_headers=headers,
                                       derivation="charset test", dicom_format=fmt)
    assert b"\x1b$B" in first.read_bytes()
    ds = pydicom.dcmread(first)
    assert ds.SpecificCharacterSet == charset and str(ds.PatientName) == name and ds.StudyDescription == study


@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
def test_private_elements_do_not_travel(quirky_series, tmp_path, fmt):
    first = pydicom.dcmread(sorted(quirky_series.iterdir())[0])
    assert any(e.tag.is_private for e in first), "the quirky source should carry private elements"
    src = load_dicom_series(quirky_series)
    files = write_derived_series(np.asarray(src[0]), src.affine.numpy(), tmp_path / "out",
                                 source_headers=source_headers(src.meta), derivation="t", dicom_format=fmt)
    for f in files:
        ds = pydicom.dcmread(f)
        assert not [e.tag for e in ds.iterall() if e.tag.is_private]
