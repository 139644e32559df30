"""A cohort from a PACS: ``monai-sr enhance dicomweb+http://.../dicom-web?StudyInstanceUID=... OUT --send URL``
against a real Orthanc on loopback (tests/orthanc.py): QIDO-RS finds the series, WADO-RS fetches them, the
outputs and the manifest are the folder cohort's, and the derived series arrive back in Orthanc."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest
from helpers import crop_series, run_cli
from orthanc import _free_port, orthanc_server

from monai_sr.errors import InputError
from monai_sr.io.dicomweb import SeriesRef, parse_query, search_series
from monai_sr.io.pacs import send_series

FAST = ("--quiet", "--fast", "--set", "self_ensemble=none", "--set", "data_consistency=false")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding two small real series (two studies), uploaded by STOW-RS; yields (orthanc, series)."""
    root = tmp_path_factory.mktemp("dicomweb")
    series = [crop_series(root / "a", style="siemens", seed=1), crop_series(root / "b", style="philips", seed=2)]
    with orthanc_server(root / "orthanc") as server:
        for folder in series:
            send_series(folder, server.dicomweb_url).raise_for_failures()
        yield server, series


def _uids(folder):
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _rows(out):
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _voxels(path):
    from monai_sr.pipeline import load_volume

    vol = load_volume(path)
    return np.asarray(vol), np.asarray(vol.affine)


def test_query_parsing():
    q = parse_query("dicomweb+http://127.0.0.1:8042/dicom-web/?StudyInstanceUID=1.2,1.3&SeriesDescription=*T1*")
    assert q.root == "http://127.0.0.1:8042/dicom-web"
    assert q.params == (("StudyInstanceUID", "1.2,1.3"), ("SeriesDescription", "*T1*"), ("Modality", "MR"))
    assert parse_query("dicomweb+https://pacs/dw?Modality=CT").params == (("Modality", "CT"),)
    for bad in ("dicomweb+http:///dicom-web", "dicomweb+http://h/dw?StudyInstanceUID", "dicomweb+http://h/dw?a b=1",
                "http://h/dw", "dicomweb+http://h:99999/dw"):
        with pytest.raises(InputError):
            parse_query(bad)
    ref = SeriesRef("1.2", "1.2.3", "MR", "", ("1.2.3.2", "1.2.3.1"))
    assert ref.digest == SeriesRef("1.2", "1.2.3", "MR", "x", ("1.2.3.1", "1.2.3.2")).digest  # the UIDs, sorted
    assert ref.digest != SeriesRef("1.2", "1.2.3", "MR", "", ("1.2.3.1",)).digest  # an instance fewer: new input


def test_search_finds_each_series_once(pacs):
    server, series = pacs
    (study_a, series_a), (study_b, series_b) = _uids(series[0]), _uids(series[1])
    url = f"dicomweb+{server.dicomweb_url}"
    both = search_series(f"{url}?StudyInstanceUID={study_a},{study_b}&StudyInstanceUID={study_a}")
    assert [r.series_uid for r in both] == sorted([series_a, series_b])
    assert all(r.modality == "MR" and len(r.instance_uids) == 6 for r in both)
    assert [r.series_uid for r in search_series(f"{url}?SeriesInstanceUID={series_b}")] == [series_b]
    assert search_series(f"{url}?Modality=CT") == []


def test_cohort_from_a_query_fetched_enhanced_and_sent_back(pacs, tmp_path):
    server, series = pacs
    (study_a, series_a), (study_b, series_b) = _uids(series[0]), _uids(series[1])
    query = f"dicomweb+{server.dicomweb_url}?StudyInstanceUID={study_a},{study_b}"
    out = tmp_path / "out"
    run = run_cli("enhance", query, out, *FAST, "--send", server.dicomweb_url)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 case(s): 2 done now, 0 done before (skipped), 0 failed" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.csv", series_a, series_b])  # nothing else left
    rows = _rows(out)
    assert sorted((r["case"], r["output"], r["status"]) for r in rows) == sorted(
        [(series_a, series_a, "done"), (series_b, series_b, "done")])
    assert all(r["input_digest"].startswith("qido:") for r in rows)
    assert all("fetched 6 instance(s) by WADO-RS" in r["notes"] and f"sent 6 instance(s) to {server.dicomweb_url}"
               in r["notes"] for r in rows)

    for (study, source), folder in zip(((study_a, series_a), (study_b, series_b)), series):
        derived = sorted((out / source).iterdir())
        assert len(derived) == 6
        ds = pydicom.dcmread(derived[0])
        assert str(ds.StudyInstanceUID) == study and str(ds.SeriesInstanceUID) != source  # same study, new series
        assert (ds.Rows, ds.Columns) == (96, 80)  # 48 x 40 source rows x columns, x2
        orthanc_id = server.lookup_series(str(ds.SeriesInstanceUID))  # arrived back in the PACS, complete
        assert orthanc_id is not None and len(server.get(f"/series/{orthanc_id}")["Instances"]) == 6
        local = tmp_path / f"local_{source}"  # the same series enhanced from the folder: the same voxels
        assert run_cli("enhance", folder, local, *FAST).returncode == 0
        (a, aff_a), (b, aff_b) = _voxels(out / source), _voxels(local)
        assert np.array_equal(a, b) and np.array_equal(aff_a, aff_b)

    # resume: the same instances on the PACS, outputs present; the derived series now in the same studies
    # (Manufacturer monai_sr) are found by the query and left out, not enhanced again
    again = run_cli("enhance", query, out, *FAST)
    assert again.returncode == 0, again.stderr
    assert "2 case(s) (2 series derived by monai_sr left out): 0 done now, 2 done before (skipped)" in again.stdout
    assert len(_rows(out)) == 2


def test_unreachable_or_empty_query_is_refused_before_anything(pacs, tmp_path):
    server, _ = pacs
    closed = f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web?StudyInstanceUID=1.2.3"
    run = run_cli("enhance", closed, tmp_path / "out", *FAST)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the DICOMweb server" in lines[0] and "127.0.0.1" in lines[0]
    assert not (tmp_path / "out").exists()

    none = run_cli("enhance", f"dicomweb+{server.dicomweb_url}?StudyInstanceUID=1.2.3.4", tmp_path / "out", *FAST)
    assert none.returncode == 1 and "no series matches the query" in none.stderr
    assert not (tmp_path / "out").exists()
    nifti = run_cli("enhance", f"dicomweb+{server.dicomweb_url}", tmp_path / "x.nii.gz", *FAST)
    assert nifti.returncode == 1 and "OUTPUT must be a folder" in nifti.stderr


def test_a_broken_series_fails_alone_with_its_cause(pacs, tmp_path):
    """A series missing a slice on the PACS: its case is failed with the one-line cause, the other is done,
    nothing partial is left; a fetch that misses an instance QIDO-RS listed is refused naming the URL."""
    server, series = pacs
    (study_a, series_a) = _uids(series[0])
    broken = crop_series(tmp_path / "c", style="siemens", seed=3, n_slices=7)
    study_c, series_c = _uids(broken)
    middle = sorted(broken.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))[3]
    middle.unlink()
    send_series(broken, server.dicomweb_url).raise_for_failures()
    out = tmp_path / "out"
    run = run_cli("enhance", f"dicomweb+{server.dicomweb_url}?StudyInstanceUID={study_a},{study_c}", out, *FAST)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"1 of 2 cases failed: {series_c}" in run.stderr and "Traceback" not in run.stderr
    state = {r["case"]: r for r in _rows(out)}
    assert state[series_a]["status"] == "done" and state[series_c]["status"] == "failed"
    assert "missing" in state[series_c]["error"] and "\n" not in state[series_c]["error"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.csv", series_a])  # nothing partial, no work folder

    from monai_sr.io.dicomweb import fetch_series

    (ref,) = search_series(f"dicomweb+{server.dicomweb_url}?SeriesInstanceUID={series_a}")
    (tmp_path / "f").mkdir()
    extra = SeriesRef(ref.study_uid, ref.series_uid, "MR", "", (*ref.instance_uids, "1.2.3.4.5"))
    with pytest.raises(InputError, match=r"WADO-RS returned 6 of the 7 instances QIDO-RS lists") as err:
        fetch_series(extra, server.dicomweb_url, tmp_path / "f")
    assert f"/studies/{study_a}/series/{series_a}" in str(err.value)


@pytest.mark.slow  # two torchrun ranks with start-up: 20 s at load ~6 on the 2-core machine, more when loaded
def test_query_on_two_ranks_each_case_once(pacs, tmp_path):
    """torchrun, 2 gloo ranks over a DICOMweb query: rank 0 searches, each rank fetches and enhances its own
    series; each case exactly once in the manifest, no work folder left."""
    import subprocess
    import sys

    server, series = pacs
    (study_a, series_a), (study_b, series_b) = _uids(series[0]), _uids(series[1])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai_sr",
           "enhance", f"dicomweb+{server.dicomweb_url}?StudyInstanceUID={study_a},{study_b}", str(out), *FAST]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("cohort  ") == 1 and "2 done now" in run.stdout and "on 2 ranks" in run.stdout
    assert "[rank 0] done" in run.stdout and "[rank 1] done" in run.stdout
    assert sorted(r["case"] for r in _rows(out)) == sorted([series_a, series_b])
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.csv", series_a, series_b])
