"""A real Orthanc for the tests: its own storage folder and config, free ports, 127.0.0.1, killed at the end.

Needs the Debian packages ``orthanc`` and ``orthanc-dicomweb``; :func:`orthanc_server` skips the test
with the reason when either is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

AET = "ORTHANC_TEST"
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dicomweb_plugin() -> Path | None:
    for folder in _PLUGIN_DIRS:
        hits = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if hits:
            return hits[0]
    return None


class Orthanc:
    """A running Orthanc: ``aet``, ``dicom_port``, ``http_port``, REST helpers (``get``, ``lookup_series``)."""

    def __init__(self, root: Path, process: subprocess.Popen, aet: str, dicom_port: int, http_port: int) -> None:
        self.root, self.process, self.aet, self.dicom_port, self.http_port = root, process, aet, dicom_port, http_port

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicom_url(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest}/dicom-web"

    def get(self, path: str, **params):
        import requests

        r = requests.get(self.rest + path, params=params, timeout=30)
        r.raise_for_status()
        return r.json() if "json" in r.headers.get("Content-Type", "") else r.content

    def lookup_series(self, series_uid: str) -> str | None:
        """Orthanc's id of the series with this Series Instance UID, or None."""
        import requests

        r = requests.post(self.rest + "/tools/lookup", data=series_uid, timeout=30)
        r.raise_for_status()
        ids = [hit["ID"] for hit in r.json() if hit["Type"] == "Series"]
        return ids[0] if ids else None

    def log(self) -> str:
        return (self.root / "orthanc.log").read_text(errors="replace")[-4000:]


@contextmanager
def orthanc_server(root: Path, *, aet: str = AET, timeout: float = 60.0) -> Iterator[Orthanc]:
    """Start Orthanc with storage under ``root``; yield :class:`Orthanc`; terminate it (kill if needed)."""
    exe = shutil.which("Orthanc")
    if exe is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    plugin = _dicomweb_plugin()
    if plugin is None:
        pytest.skip("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    root.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = _free_port(), _free_port()
    while http_port == dicom_port:
        http_port = _free_port()
    config = {
        "Name": "monai_sr_tests",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "StorageCompression": False,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "DicomServerEnabled": True,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SslEnabled": False,
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "SaveJobs": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (root / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(root / "orthanc.log", "wb")
    process = subprocess.Popen([exe, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = Orthanc(root, process, aet, dicom_port, http_port)
    try:
        _wait_ready(server, timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


def _wait_ready(server: Orthanc, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {server.process.returncode}:\n{server.log()}")
        try:
            plugins = requests.get(server.rest + "/plugins", timeout=2).json()
            with closing(socket.create_connection(("127.0.0.1", server.dicom_port), timeout=2)):
                pass
            if "dicom-web" not in plugins:
                raise RuntimeError(f"Orthanc started without the DICOMweb plugin ({plugins}):\n{server.log()}")
            return
        except (requests.RequestException, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s:\n{server.log()}")
