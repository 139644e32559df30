"""Assemble the training and evaluation volumes from the registry packages they come from
(``monai-sr data fetch``, ``make data``), each checked against its sha256 in ``data_specs/``.

Every entry of ``data_specs/shared_data.json`` and ``data_specs/tissue_maps.json`` names its source:
registry, package, version and the path inside the package. The package file is fetched with the
registry's own client and kept in a cache folder:

- PyPI wheels (nilearn, pydeface, pydicom-data): ``pip download --no-deps --only-binary :all:``;
- PyPI sdists (pycortex, whose S1 subject is only in the sdist): ``pip download --no-deps
  --no-binary PKG`` (pip prepares the sdist's metadata, fetching its build requirements as wheels);
- Debian (mricron-data, Colin27): ``apt-get download PKG=VERSION``, unpacked here (a ``.deb`` is an ``ar``
  archive holding ``data.tar.*``), so no dpkg is needed to unpack.

A member is copied byte for byte, except a DICOM slice (pydicom-data) that becomes a one-slice NIfTI:
pixels transposed to (x, y), real values ``float32(stored) * float32(slope) + float32(intercept)``,
diagonal affine from PixelSpacing and SliceThickness, units mm, written by nibabel (deterministic gzip).
Package files already in the cache (or put there by hand on a machine without the registry) are used
as they are; nothing is written to the data folder unless its sha256 matches.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from monai_sr.errors import InputError
from monai_sr.resources import DATA_SPECS, data_path, sha256_file

__all__ = ["SPECS", "Entry", "entries", "fetch", "check"]

#: The manifests whose files ``monai-sr data fetch`` assembles.
SPECS = ("shared_data.json", "tissue_maps.json")


@dataclass(frozen=True)
class Entry:
    name: str  # file name in the data folder
    sha256: str
    registry: str  # "PyPI" or "Debian"
    package: str
    version: str
    member: str  # path inside the package file
    note: str  # what the manifest says was done to it ("" for a byte copy)
    spec: str  # manifest file name

    @property
    def sdist(self) -> bool:
        return "sdist" in self.note

    def how_to_get(self) -> str:
        if self.registry == "Debian":
            return (f"apt-get download {self.package}={self.version} (or the .deb from "
                    f"https://snapshot.debian.org/binary/{self.package}/), put in the cache folder")
        kind = "sdist (.tar.gz)" if self.sdist else "wheel (.whl)"
        return (f"pip download --no-deps {self.package}=={self.version} (the {kind} from "
                f"https://pypi.org/project/{self.package}/{self.version}/#files), put in the cache folder")


def entries(specs: Sequence[str] = SPECS) -> list[Entry]:
    """The files of the manifests (names in ``data_specs/``, or absolute paths), with their sources."""
    out = []
    for spec in specs:
        path = Path(spec) if Path(spec).is_absolute() else data_path(DATA_SPECS, spec)
        for e in json.loads(path.read_text())["files"]:
            src = e["source"]
            member, _, note = src["path"].partition(" (")
            out.append(Entry(e["path"], e["sha256"], src["registry"], src["package"], src["version"], member.strip(),
                             note.rstrip(")"), Path(spec).name))
    return out


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- getting the package file -------------------------------------------------------------------------

def _cached(entry: Entry, cache: Path) -> Path | None:
    if entry.registry == "Debian":
        pattern = f"{entry.package}_{entry.version.split(':')[-1]}_*.deb"
    else:
        stem = entry.package.replace("-", "_")
        pattern = f"{stem}-{entry.version}.tar.gz" if entry.sdist else f"{stem}-{entry.version}-*.whl"
    found = sorted(p for p in cache.glob(pattern) if p.is_file())
    if not found and entry.registry != "Debian":  # sdists of old packages keep the dash
        found = sorted(cache.glob(f"{entry.package}-{entry.version}.tar.gz"))
    return found[0] if found else None


def _download(entry: Entry, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    if entry.registry == "Debian":
        if shutil.which("apt-get") is None:
            raise InputError(f"apt-get is not available to download Debian {entry.package} {entry.version}")
        cmd = ["apt-get", "download", f"{entry.package}={entry.version}"]
    elif entry.registry == "PyPI":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache)]
        cmd += (["--no-binary", entry.package] if entry.sdist else ["--only-binary", ":all:"])
        cmd.append(f"{entry.package}=={entry.version}")
    else:
        raise InputError(f"unknown registry {entry.registry!r} for {entry.name} in data_specs/{entry.spec}")
    result = subprocess.run(cmd, cwd=cache, capture_output=True, text=True)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])[:300]
        raise InputError(f"`{' '.join(cmd)}` failed: {tail}")


def _deb_member(deb: Path, member: str) -> bytes:
    """A file of a Debian package's data archive (``ar`` with ``data.tar.{xz,gz,zst}``)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise InputError("not a Debian package (ar archive)", path=deb)
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise InputError("data.tar.zst: unpack with dpkg-deb -x and copy the file by hand", path=deb)
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for m in tar.getmembers():
                    if m.name.lstrip("./") == member:
                        return tar.extractfile(m).read()
            raise InputError(f"{member} not in the package", path=deb)
        pos += 60 + size + (size & 1)
    raise InputError("no data.tar in the package", path=deb)


def _member(entry: Entry, package_file: Path) -> bytes:
    name = package_file.name
    if name.endswith(".deb"):
        return _deb_member(package_file, entry.member)
    if name.endswith(".whl"):
        with zipfile.ZipFile(package_file) as z:
            for candidate in (entry.member, f"{entry.package.replace('-', '_')}/{entry.member}"):
                if candidate in z.namelist():
                    return z.read(candidate)
            hits = [n for n in z.namelist() if n.endswith("/" + entry.member)]
            if len(hits) == 1:
                return z.read(hits[0])
    if name.endswith(".tar.gz"):
        with tarfile.open(package_file) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.split("/", 1)[-1] == entry.member:
                    return tar.extractfile(m).read()
    raise InputError(f"{entry.member} not found in the package file", path=package_file)


# --- making the data file --------------------------------------------------------------------------------

def _dicom_slice_to_nifti(data: bytes) -> bytes:
    import nibabel as nib
    import numpy as np
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    slope, intercept = np.float32(ds.get("RescaleSlope", 1.0)), np.float32(ds.get("RescaleIntercept", 0.0))
    values = ds.pixel_array.astype(np.float32) * slope + intercept
    rows, cols = (float(v) for v in ds.PixelSpacing)
    image = nib.Nifti1Image(np.ascontiguousarray(values.T[:, :, None]).astype(np.float32),
                            np.diag([cols, rows, float(ds.SliceThickness), 1.0]))
    image.header.set_xyzt_units("mm")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "slice.nii.gz"
        nib.save(image, str(out))
        return out.read_bytes()


def _make(entry: Entry, member: bytes) -> bytes:
    if entry.member.endswith(".dcm") and entry.name.endswith((".nii", ".nii.gz")):
        made = _dicom_slice_to_nifti(member)
        return made if entry.name.endswith(".gz") else gzip.decompress(made)
    return member


# --- the commands ------------------------------------------------------------------------------------------

def check(dest: str | os.PathLike, specs: Sequence[str] = SPECS) -> dict[str, str]:
    """``{file: "ok" | "missing" | "sha256 mismatch"}`` for the data folder ``dest``."""
    status = {}
    for e in entries(specs):
        path = Path(dest) / e.name
        status[e.name] = "missing" if not path.is_file() else "ok" if sha256_file(path) == e.sha256 else "sha256 mismatch"
    return status


def fetch(
    dest: str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
    specs: Sequence[str] = SPECS,
    download: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Put every file of the manifests into ``dest`` (sha256-checked); returns ``{file: status}``, status
    "ok" (already there), "fetched", or the reason it is missing with how to get it."""
    dest = Path(dest)
    cache = Path(cache) if cache is not None else dest / ".packages"
    todo = [e for e in entries(specs) if names is None or e.name in names]
    unknown = set(names or ()) - {e.name for e in todo}
    if unknown:
        raise InputError(f"not in data_specs/{', '.join(specs)}: {', '.join(sorted(unknown))}")
    status: dict[str, str] = {}
    dest.mkdir(parents=True, exist_ok=True)
    for e in todo:
        target = dest / e.name
        if target.is_file() and sha256_file(target) == e.sha256:
            status[e.name] = "ok"
            continue
        try:
            package_file = _cached(e, cache)
            if package_file is None and download:
                log(f"downloading {e.registry} {e.package} {e.version} for {e.name}")
                _download(e, cache)
                package_file = _cached(e, cache)
            if package_file is None:
                raise InputError(f"{e.registry} package {e.package} {e.version} not in {cache}")
            made = _make(e, _member(e, package_file))
            digest = _sha256_bytes(made)
            if digest != e.sha256:
                raise InputError(f"made from {package_file.name} with sha256 {digest}, data_specs/{e.spec} says {e.sha256}")
            tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
            tmp.write_bytes(made)
            os.replace(tmp, target)
            status[e.name] = "fetched"
        except InputError as exc:
            status[e.name] = f"MISSING: {exc.cause}; to get it: {e.how_to_get()}"
        log(f"{e.name}: {status[e.name]}")
    return status
