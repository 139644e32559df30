"""The MONAI Label app (apps/monailabel) through a real ``monailabel start_server`` on 127.0.0.1.

The server runs from ``.venv-monailabel`` (``make monailabel``); its tasks run ``monai-sr enhance`` of
this environment (``MONAI_SR_PYTHON`` = the Python running these tests). Each result is compared with
``monai-sr enhance`` run here on the same input: same voxels (float tolerance) and the field-of-view-rule
affine. The DICOMweb part serves a real Orthanc (tests/orthanc.py) and checks the derived series that
lands in it. Skipped, with the reason, when ``.venv-monailabel`` is absent.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import torch
from helpers import REPO, crop_series, run_cli
from orthanc import orthanc_server

from monai.data import MetaTensor

from monai_sr.geometry import check_affine

pytestmark = pytest.mark.slow  # a server start and one monai-sr process per request: minutes on 2 cores

APP = REPO / "apps" / "monailabel"
ML_PYTHON = REPO / ".venv-monailabel" / "bin" / "python"
FAST = {"fast": True}  # the per-volume fits are not bit-reproducible; the fixed networks are


def _require_app_env() -> None:
    if not ML_PYTHON.is_file():
        pytest.skip(".venv-monailabel is absent (`make monailabel` makes it)")


def _free_port() -> int:
    """A free TCP port above 10000 on 127.0.0.1."""
    while True:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 10000:
            return port


class Server:
    """A running MONAI Label server: ``url``, ``infer``, the log so far, its own ``tmp`` folder (TMPDIR)."""

    def __init__(self, url: str, log: Path, tmp: Path) -> None:
        self.url, self.log_path, self.tmp = url, log, tmp

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def infer(self, model: str, image: str, params: dict | None = None, output: str = "image") -> requests.Response:
        return requests.post(f"{self.url}/infer/{model}", params={"image": image, "output": output},
                             data={"params": json.dumps(params or {})}, timeout=900)


@contextmanager
def monailabel_server(studies: str, root: Path, timeout: float = 300.0) -> Iterator[Server]:
    """``monailabel start_server --app apps/monailabel --studies STUDIES`` on 127.0.0.1:free port; stopped
    by its PID (its process group: uvicorn is the same process) at the end."""
    port = _free_port()
    (root / "tmp").mkdir()
    env = dict(os.environ, MONAI_SR_PYTHON=sys.executable, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               MONAI_LABEL_DATASTORE_AUTO_RELOAD="false", TMPDIR=str(root / "tmp"))
    log = root / "monailabel.log"
    cmd = [str(ML_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", studies,
           "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", log, root / "tmp")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"monailabel exited with {proc.returncode}:\n{server.log()[-4000:]}")
            try:
                if requests.get(server.url + "/info/", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"monailabel did not answer within {timeout:.0f} s:\n{server.log()[-4000:]}")
            time.sleep(1)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _nifti(response: requests.Response, path: Path) -> nib.Nifti1Image:
    assert response.status_code == 200, response.text[:500]
    path.write_bytes(response.content)
    return nib.load(path)


def _multipart(response: requests.Response) -> tuple[dict, bytes]:
    """``output=all``: the params JSON and the image bytes of MONAI Label's multipart answer."""
    assert response.status_code == 200, response.text[:500]
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
             for p in email.message_from_bytes(head + response.content).get_payload()}
    return json.loads(parts["params"]), parts["image"]


def _fov_affine(affine: np.ndarray, scale: tuple[int, int, int]) -> np.ndarray:
    """DESIGN.md's field-of-view rule, written out here independently of monai_sr.geometry."""
    s = np.asarray(scale, dtype=np.float64)
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] / s[None, :]
    out[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((1 / s - 1) / 2)
    return out


def _same_as_cli(result: nib.Nifti1Image, source: Path, bundle: str, work: Path, *args: str) -> np.ndarray:
    """``monai-sr enhance SOURCE --bundle BUNDLE ARGS`` here; ``result`` must hold the same voxels and affine."""
    ref_path = work / f"cli_{bundle}.nii.gz"
    run = run_cli("enhance", source, ref_path, "--bundle", bundle, "--quiet", *args)
    assert run.returncode == 0, run.stderr
    ref = nib.load(ref_path)
    assert result.shape == ref.shape
    np.testing.assert_allclose(result.affine, ref.affine, atol=1e-6)
    np.testing.assert_allclose(np.asarray(result.dataobj), np.asarray(ref.dataobj), rtol=1e-5, atol=1e-3)
    return np.asarray(ref.dataobj)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    """A studies folder (MONAI Label's local datastore) of two real volumes cut from the sample: ``small``
    (40 x 48 x 6 at 2 mm, oblique) and ``thick`` (every other slice of a 12-slice crop: 4 mm slices)."""
    _require_app_env()
    from monai_sr.io.nifti import save_nifti
    from monai_sr.pipeline import load_volume

    root = tmp_path_factory.mktemp("studies")
    small = load_volume(crop_series(root.parent / "small_src", style="siemens"))
    save_nifti(small, root / "small.nii.gz")
    full = load_volume(crop_series(root.parent / "thick_src", style="siemens", n_slices=12))
    affine = full.affine.numpy().astype(np.float64)
    affine[:3, 2] *= 2  # every other slice: twice the step along the slice axis
    data = torch.from_numpy(full[0].numpy()[:, :, ::2].copy())[None]
    save_nifti(MetaTensor(data, affine=torch.from_numpy(check_affine(affine))), root / "thick.nii.gz")
    return root


def test_folder_datastore(studies: Path, tmp_path: Path) -> None:
    """POST /infer for each bundle on the local datastore: the result is monai-sr enhance's, on the
    field-of-view-rule grid; bad requests get a clear 404/422 and the server keeps serving."""
    with monailabel_server(str(studies), tmp_path) as server:
        info = requests.get(server.url + "/info/", timeout=30).json()
        assert {m: info["models"][m]["type"] for m in ("mri_sr_unet", "mri_sr_selfsupervised", "mri_denoise_dncnn")} == {
            "mri_sr_unet": "others", "mri_sr_selfsupervised": "others", "mri_denoise_dncnn": "others"}

        small = nib.load(studies / "small.nii.gz")
        sr = _nifti(server.infer("mri_sr_unet", "small", FAST), tmp_path / "sr.nii.gz")
        assert sr.shape == (80, 96, 6)
        np.testing.assert_allclose(sr.affine, _fov_affine(small.affine, (2, 2, 1)), atol=1e-5)
        _same_as_cli(sr, studies / "small.nii.gz", "mri_sr_unet", tmp_path, "--fast")

        thick = nib.load(studies / "thick.nii.gz")
        tp = _nifti(server.infer("mri_sr_selfsupervised", "thick", FAST), tmp_path / "tp.nii.gz")
        assert tp.shape == (40, 48, 12)
        np.testing.assert_allclose(tp.affine, _fov_affine(thick.affine, (1, 1, 2)), atol=1e-5)
        _same_as_cli(tp, studies / "thick.nii.gz", "mri_sr_selfsupervised", tmp_path, "--fast")

        params, image = _multipart(server.infer("mri_denoise_dncnn", "small", FAST, output="all"))
        (tmp_path / "dn.nii.gz").write_bytes(image)
        dn = nib.load(tmp_path / "dn.nii.gz")
        np.testing.assert_allclose(dn.affine, small.affine, atol=1e-5)
        ref = _same_as_cli(dn, studies / "small.nii.gz", "mri_denoise_dncnn", tmp_path, "--fast")
        assert not np.allclose(ref, np.asarray(small.dataobj), atol=1e-3)  # it did change the image
        assert params["bundle"] == "mri_denoise_dncnn" and any("noise sigma" in n for n in params["notes"])

        default = server.infer("mri_sr_unet", "small", output="json")  # the default (0.5.0: no per-volume fit)
        assert default.status_code == 200, default.text
        assert not any(n.startswith("per-volume fit") for n in default.json()["notes"]), default.json()

        unknown_image = server.infer("mri_sr_unet", "no_such_image")
        assert unknown_image.status_code == 404 and "no_such_image" in unknown_image.json()["detail"]
        unknown_model = server.infer("no_such_model", "small")
        assert unknown_model.status_code == 404 and "mri_sr_unet" in unknown_model.json()["detail"]
        refused = server.infer("mri_sr_selfsupervised", "small", FAST)  # isotropic: no through-plane factor
        assert refused.status_code == 422 and "through-plane" in refused.json()["detail"]
        no_dicom = server.infer("mri_sr_unet", "small", {**FAST, "derived_dicom": True})  # a NIfTI study
        assert no_dicom.status_code == 422 and "DICOM series" in no_dicom.json()["detail"]
        assert requests.get(server.url + "/info/", timeout=30).ok
        log = server.log()
    assert "mri_sr_unet (NIfTI): super-resolve slices 6/6" in log  # progress reached MONAI Label's log
    assert not list(server.tmp.glob("monai_sr_*"))  # no result or work folder left behind


def _upload(series: Path, dicomweb: str) -> str:
    """STOW-RS ``series`` with ``monai-sr send``; its Series Instance UID."""
    run = run_cli("send", series, "--to", dicomweb)
    assert run.returncode == 0, run.stderr
    return str(pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def test_dicomweb_datastore(tmp_path: Path) -> None:
    """MONAI Label's DICOMweb datastore on a real Orthanc: infer on an MR series equals monai-sr enhance
    of the series; ``derived_dicom`` lands the whole derived series in Orthanc as a volume; a CT series is
    refused with monai-sr's reason and the server keeps serving."""
    _require_app_env()
    series = crop_series(tmp_path / "mr", style="siemens")
    ct = tmp_path / "ct"
    shutil.copytree(series, ct)
    ct_uid = pydicom.uid.generate_uid()
    for f in ct.iterdir():
        ds = pydicom.dcmread(f)
        ds.Modality, ds.SeriesInstanceUID = "CT", ct_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(f)
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        mr_uid = _upload(series, orthanc.dicomweb_url)
        assert _upload(ct, orthanc.dicomweb_url) == ct_uid
        with monailabel_server(orthanc.dicomweb_url, tmp_path) as server:
            assert requests.get(server.url + "/datastore/", timeout=60).json()["total"] == 1  # the MR series only
            assert requests.post(server.url + "/activelearning/random", json={}, timeout=60).json()["id"] == mr_uid

            params, image = _multipart(server.infer("mri_sr_unet", mr_uid, {**FAST, "derived_dicom": True}, output="all"))
            (tmp_path / "sr.nii.gz").write_bytes(image)
            sr = nib.load(tmp_path / "sr.nii.gz")
            assert sr.shape == (80, 96, 6)
            _same_as_cli(sr, series, "mri_sr_unet", tmp_path, "--fast")

            derived = params["derived_series"]
            assert derived["instances"] == derived["stored"] == 6
            orthanc_id = orthanc.lookup_series(derived["series_instance_uid"])
            assert orthanc_id is not None
            assert len(orthanc.get(f"/series/{orthanc_id}")["Instances"]) == 6
            assert orthanc.get(f"/series/{orthanc_id}/ordered-slices")["Type"] == "Volume"
            stored = tmp_path / "stored"  # the series as Orthanc holds it: the NIfTI's image, up to the rescale step
            stored.mkdir()
            slopes = []
            for k, instance in enumerate(orthanc.get(f"/series/{orthanc_id}")["Instances"]):
                (stored / f"{k}.dcm").write_bytes(orthanc.get(f"/instances/{instance}/file"))
                slopes.append(float(pydicom.dcmread(stored / f"{k}.dcm", stop_before_pixels=True).get("RescaleSlope", 1)))
            from monai_sr.pipeline import load_volume

            back = load_volume(stored)
            np.testing.assert_allclose(back.affine.numpy(), sr.affine, atol=1e-4)
            np.testing.assert_allclose(back[0].numpy(), np.asarray(sr.dataobj), atol=max(slopes) / 2 + 1e-3)
            study = orthanc.get(f"/series/{orthanc_id}")["ParentStudy"]
            assert orthanc.lookup_series(mr_uid) in orthanc.get(f"/studies/{study}")["Series"]  # same study

            refused = server.infer("mri_sr_unet", ct_uid, FAST)
            assert refused.status_code == 422 and "CT" in refused.json()["detail"], refused.text
            assert server.infer("mri_denoise_dncnn", mr_uid, FAST).status_code == 200  # still serving


@pytest.mark.parametrize("python", [None, "/nonexistent/python"])
def test_server_without_monai_sr_says_so_in_one_line(tmp_path: Path, python: str | None) -> None:
    """The app copied outside the checkout, no monai-sr on PATH, $MONAI_SR_PYTHON unset or not an executable:
    the server stops before it listens, exit 2, with the cause in one line and no traceback."""
    _require_app_env()
    app = tmp_path / "app" / "monailabel"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("logs", "__pycache__"))
    (tmp_path / "studies").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MONAI_SR_PYTHON"}
    env["PATH"] = "/usr/bin:/bin"
    if python:
        env["MONAI_SR_PYTHON"] = python
    done = subprocess.run([str(ML_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
                           str(tmp_path / "studies"), "--host", "127.0.0.1", "--port", str(_free_port())],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "MONAI_SR_PYTHON" in errors[0] and str(app) in errors[0], out[-3000:]
    assert (python or "monai_sr not found") in errors[0]
    assert "Traceback" not in out
