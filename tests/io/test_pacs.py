"""Sending to a real Orthanc (tests/orthanc.py): C-STORE and STOW-RS of both output formats arrive
complete, ordered as a volume and with our pixels; refused associations, closed ports, HTTP errors and
partial stores are reported per instance and exit non-zero through the real entry point."""

from __future__ import annotations

import io
import json

import numpy as np
import pydicom
import pytest
from helpers import run_cli, tree_digest
from orthanc import _free_port, orthanc_server

from monai_sr import geometry
from monai_sr.errors import SendError
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import write_derived_series
from monai_sr.io.pacs import InstanceResult, check_destination, parse_destination, stow_results


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _derived(series, folder, fmt):
    """A fresh derived series (new UIDs each call), 2x in-plane, written by the real writer."""
    src = load_dicom_series(series)
    vol = np.kron(src[0].numpy().astype(np.float64), np.ones((2, 2, 1)))
    affine = geometry.scaled_affine(src.affine.numpy(), (2, 2, 1))
    write_derived_series(vol, affine, folder, source_headers=source_headers(src.meta), derivation="send test", dicom_format=fmt)
    return {str(pydicom.dcmread(f).SOPInstanceUID): f for f in sorted(folder.iterdir())}


def _series_uid(files):
    return str(pydicom.dcmread(next(iter(files.values())), stop_before_pixels=True).SeriesInstanceUID)


def _assert_refused(result, n_failed, cause):
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == n_failed and all(cause in line for line in failed), result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("monai-sr: error: ") and cause in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("protocol", ["dicom", "stow"])
@pytest.mark.parametrize("fmt", ["classic", "enhanced"])
def test_series_arrives_complete_as_a_volume_with_our_pixels(orthanc, small_series, tmp_path, fmt, protocol):
    files = _derived(small_series, tmp_path / "out", fmt)
    url = orthanc.dicom_url if protocol == "dicom" else orthanc.dicomweb_url
    result = run_cli("send", tmp_path / "out", "--to", url, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sent    {len(files)} of {len(files)} instance(s) to {url}" in result.stdout

    series_id = orthanc.lookup_series(_series_uid(files))
    assert series_id, f"series not in Orthanc:\n{orthanc.log()}"
    series = orthanc.get(f"/series/{series_id}")
    assert len(series["Instances"]) == len(files)
    ordered = orthanc.get(f"/series/{series_id}/ordered-slices")
    if fmt == "classic":
        assert ordered["Type"] == "Volume"
        order = [str(pydicom.dcmread(io.BytesIO(orthanc.get(path[:-len("/file")] + "/file"))).InstanceNumber)
                 for path in ordered["Dicom"]]
        assert order in (sorted(order, key=int), sorted(order, key=int, reverse=True))  # along the normal
    else:
        # Orthanc (1.10) lists the frames of one multi-frame instance in frame order and calls that a
        # "Sequence": it orders instances by position, not frames by their functional groups.
        frames = pydicom.dcmread(next(iter(files.values())), stop_before_pixels=True).NumberOfFrames
        assert ordered["SlicesShort"] == [[series["Instances"][0], 0, frames]]

    for instance_id in series["Instances"]:
        theirs = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance_id}/file")))
        ours = pydicom.dcmread(files[str(theirs.SOPInstanceUID)])
        assert theirs.PixelData == ours.PixelData
        np.testing.assert_array_equal(theirs.pixel_array, ours.pixel_array)
        if fmt == "enhanced":
            pos = [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in theirs.PerFrameFunctionalGroupsSequence]
            assert pos == [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ours.PerFrameFunctionalGroupsSequence]
        else:
            assert list(theirs.ImagePositionPatient) == list(ours.ImagePositionPatient)


def test_wrong_called_aet_is_refused_per_instance(orthanc, small_series, tmp_path):
    files = _derived(small_series, tmp_path / "out", "classic")
    result = run_cli("send", tmp_path / "out", "--to", f"dicom://NOT_ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--aet", "SR_TEST", "--quiet")
    _assert_refused(result, len(files), "association rejected")
    assert "Called AE title not recognised" in result.stdout
    assert orthanc.lookup_series(_series_uid(files)) is None


def test_closed_port_is_reported_per_instance(small_series, tmp_path):
    files = _derived(small_series, tmp_path / "out", "enhanced")
    result = run_cli("send", tmp_path / "out", "--to", f"dicom://ANY@127.0.0.1:{_free_port()}", "--timeout", "5", "--quiet")
    _assert_refused(result, len(files), "cannot connect")


def test_http_error_is_reported_per_instance(orthanc, small_series, tmp_path):
    files = _derived(small_series, tmp_path / "out", "classic")
    result = run_cli("send", tmp_path / "out", "--to", f"{orthanc.rest}/no-such-root", "--quiet")
    _assert_refused(result, len(files), "HTTP 404")


def test_partial_store_names_the_instance_left_behind(orthanc, small_series, tmp_path):
    """An object of a SOP class Orthanc does not accept, among good ones: those stored, it reported."""
    folder = tmp_path / "out"
    files = _derived(small_series, folder, "classic")
    odd = pydicom.dcmread(next(iter(files.values())))
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.999.1"  # a private SOP class
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    odd.save_as(folder / "ZZ_odd.dcm")
    result = run_cli("send", folder, "--to", orthanc.dicom_url, "--quiet")
    _assert_refused(result, 1, "not accepted")
    assert "ZZ_odd.dcm" in result.stdout and f"sent    {len(files)} of {len(files) + 1}" in result.stdout
    series = orthanc.get(f"/series/{orthanc.lookup_series(_series_uid(files))}")
    assert len(series["Instances"]) == len(files)


def test_enhance_send_through_the_entry_point(orthanc, small_series, tmp_path):
    out = tmp_path / "sr"
    result = run_cli("enhance", small_series, out, "--dicom-format", "enhanced", "--send", orthanc.dicomweb_url, "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    (written,) = sorted(out.iterdir())
    ds = pydicom.dcmread(written, stop_before_pixels=True)
    assert ds.SOPClassUID == pydicom.uid.EnhancedMRImageStorage
    assert "sent    1 of 1 instance(s)" in result.stdout
    series = orthanc.get(f"/series/{orthanc.lookup_series(str(ds.SeriesInstanceUID))}")
    assert len(series["Instances"]) == 1


def test_enhance_send_failure_keeps_the_output_and_exits_1(small_series, tmp_path):
    out = tmp_path / "sr"
    bad = f"dicom://NOBODY@127.0.0.1:{_free_port()}"
    result = run_cli("enhance", small_series, out, "--send", bad, "--timeout", "5", "--quiet")
    _assert_refused(result, len(list(out.iterdir())), "cannot connect")
    assert len(list(out.iterdir())) == len(list(small_series.iterdir()))


def test_bad_destinations_are_refused_before_work():
    for url, cause in [("dicom://127.0.0.1:104", "AE title"), ("dicom://AET@host", "port"), ("ftp://x/y", "scheme"),
                       ("dicom://" + "A" * 17 + "@h:104", "16")]:
        with pytest.raises(SendError, match=cause):
            parse_destination(url)
    assert parse_destination("dicom://PACS@10.0.0.2:11112").called_aet == "PACS"


def test_stow_response_is_read_per_instance(tmp_path):
    """A 202 (some stored) response: the Failed SOP Sequence names the instance, with its reason."""
    batch = [InstanceResult(tmp_path / f"MR{k}.dcm", f"1.2.3.{k}", False) for k in range(3)]
    response = pydicom.Dataset()
    response.ReferencedSOPSequence = [pydicom.Dataset(), pydicom.Dataset()]
    response.FailedSOPSequence = [pydicom.Dataset()]
    for item, uid in zip([*response.ReferencedSOPSequence, *response.FailedSOPSequence], ["1.2.3.0", "1.2.3.2", "1.2.3.1"]):
        item.ReferencedSOPClassUID = pydicom.uid.MRImageStorage
        item.ReferencedSOPInstanceUID = uid
    response.FailedSOPSequence[0].FailureReason = 0xA700
    results = stow_results(batch, 202, "Accepted", json.dumps(response.to_json_dict()).encode(), "http://pacs/studies")
    assert [r.stored for r in results] == [True, False, True]
    assert "0xA700" in results[1].detail and "Out of Resources" in results[1].detail
    # an HTTP error without a DICOM body fails every instance with the status
    results = stow_results(batch, 503, "Service Unavailable", b"busy", "http://pacs/studies")
    assert not any(r.stored for r in results) and all("HTTP 503" in r.detail for r in results)


def _assert_unresolvable(result, url):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"monai-sr: error: {url}: cannot resolve host 'no-such-host.invalid' ({lines[0].rsplit('(', 1)[-1]}"], result.stderr
    assert "Traceback" not in result.stderr and "FAILED" not in result.stdout


@pytest.mark.parametrize("url", ["dicom://AET@no-such-host.invalid:104", "http://no-such-host.invalid:8042/dicom-web"])
def test_send_to_a_host_that_does_not_resolve_is_one_line(small_series, url):
    """The .invalid top-level domain never resolves (RFC 6761): one line naming the destination and
    the cause, exit 1, no traceback, nothing sent per instance (the progress bar left on)."""
    before = tree_digest(small_series)
    _assert_unresolvable(run_cli("send", small_series, "--to", url, "--timeout", "5"), url)
    assert tree_digest(small_series) == before


def test_enhance_send_to_a_host_that_does_not_resolve_is_refused_before_work(small_series, tmp_path):
    out = tmp_path / "sr"
    url = "dicom://PACS@no-such-host.invalid:11112"
    before = tree_digest(small_series)
    _assert_unresolvable(run_cli("enhance", small_series, out, "--send", url, "--timeout", "5", "--quiet"), url)
    assert not out.exists() and not list(tmp_path.glob(".*.partial")), "refused before anything was written"
    assert tree_digest(small_series) == before


def test_a_slow_name_lookup_counts_as_failed_and_a_proxy_resolves_for_itself(monkeypatch):
    import socket
    import time

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(2))
    with pytest.raises(SendError, match=r"cannot resolve host 'pacs.example' \(no answer within 0.2 s\)"):
        check_destination("dicom://PACS@pacs.example:104", timeout=0.2)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert check_destination("https://pacs.example/dicom-web", timeout=0.2).host == "pacs.example"
