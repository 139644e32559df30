#!/usr/bin/env python
"""Make the sample data of data/sample/ from the real Colin27 T1 volume, reproducibly.

Source: ``colin27_t1_1mm.nii.gz`` = Debian ``mricron-data`` 1.2.20211006+dfsg-4,
``usr/share/mricron/templates/ch2.nii.gz`` (BSD-3-clause), 181 x 217 x 181 at 1 mm, uint8, RAS.

What it makes (all parameters are the constants below and are recorded in data_specs/sample_data.json):

* the HIGH-resolution reference ``data/sample/colin27_t1_oblique_reference_1mm.nii.gz``: an oblique axial
  slab, 180 x 216 x 60 at 1 x 1 x 2 mm. The in-plane grid is Colin's axial plane cropped by one voxel;
  each 2 mm slice is the mean of two adjacent 1 mm slices (a box slice profile); the head is rotated in
  the scanner by changing the affine only (the voxels are Colin's own, never interpolated). Intensities
  are Colin's times 4 (exact integers, int16).
* the LOW-resolution scanner series ``data/sample/colin27_t1_oblique_2mm/``: the reference with its
  in-plane resolution halved by k-space truncation (:func:`monai_sr.transforms.kspace.fourier_resample`
  to 90 x 108), magnitude taken as a scanner does, rounded, written as an ORIGINAL\\PRIMARY Siemens-style
  MR series (:func:`monai_sr.io.scanner_series.write_original_mr_series`); its affine is
  ``geometry.coarsened_affine(reference_affine, (2, 2, 1))``.

Usage::

    python scripts/make_sample_data.py [--source PATH]   # (re)write data/sample and the manifest
    python scripts/make_sample_data.py --check           # regenerate in a temp dir, compare sha256s

Outputs are byte-identical on rerun (fixed UIDs, dates, gzip mtime 0). ``--check`` also accepts a
``.nii.gz`` whose compressed bytes differ (another zlib) when its uncompressed sha256 matches.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from monai_sr import geometry
from monai_sr.io.scanner_series import write_original_mr_series
from monai_sr.transforms.kspace import fourier_resample

REPO = Path(__file__).resolve().parents[1]

MANIFEST = REPO / "data_specs" / "sample_data.json"
SAMPLE_DIR = "data/sample"
SERIES_NAME = "colin27_t1_oblique_2mm"
REFERENCE_NAME = "colin27_t1_oblique_reference_1mm.nii.gz"

SOURCE = {
    "file": "colin27_t1_1mm.nii.gz",
    "description": "Colin27 T1: one real subject (Colin Holmes), average of 27 T1 scans, 181x217x181, 1 mm, uint8",
    "package": "mricron-data",
    "package_manager": "Debian (apt)",
    "version": "1.2.20211006+dfsg-4",
    "path_in_package": "usr/share/mricron/templates/ch2.nii.gz",
    "licence": "BSD-3-Clause",
    "licence_source": "Debian copyright file of mricron-data (usr/share/doc/mricron-data/copyright)",
    "sha256": "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
}

PARAMS = {
    "rotation_deg": {
        "about_left_right_axis": 12.0,
        "about_anterior_posterior_axis": 5.0,
        "composition": "R = R_AP(5) @ R_LR(12) applied to the RAS affine about the scanner origin (0, 0, 0): "
        "reference_affine = R4 @ slab_affine; voxels are not resampled",
    },
    "crop": {
        "in_plane_start_ij": [1, 0],
        "in_plane_size_ij": [180, 216],
        "note": "source columns i 1..180 (drops x = -90 mm), rows j 0..215 (drops y = +91 mm)",
    },
    "slab": {
        "first_source_slice": 30,
        "n_source_slices": 120,
        "n_slices": 60,
        "slice_profile": "box: each 2 mm slice = mean of source slices (30 + 2m, 31 + 2m)",
        "source_z_range_mm": [-41.0, 78.0],
    },
    "intensity_scale": 4.0,
    "reference": {"shape": [180, 216, 60], "spacing_mm": [1.0, 1.0, 2.0], "dtype": "int16 (exact integers)"},
    "lowres": {
        "factors": [2, 2, 1],
        "method": "monai_sr.transforms.kspace.fourier_resample to (90, 108) over axes (0, 1), "
        "np.abs, np.rint, uint16",
        "affine": "monai_sr.geometry.coarsened_affine(reference_affine, (2, 2, 1))",
        "dicom": {"style": "siemens", "seed": 27, "series_number": 3, "series_description": "t1_mprage_tra_2mm"},
    },
}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    return sha256_bytes(Path(path).read_bytes())


def _rot(axis: int, deg: float) -> np.ndarray:
    """4x4 rotation by ``deg`` about RAS axis ``axis`` (0 = left-right, 1 = anterior-posterior)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    a, b = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(4)
    r[a, a] = c
    r[a, b] = -s
    r[b, a] = s
    r[b, b] = c
    return r


def build(source: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(reference int16, reference affine, lowres uint16, lowres affine)`` from the source file."""
    import nibabel as nib

    img = nib.load(str(source))
    vol = np.asarray(img.dataobj)
    if vol.shape != (181, 217, 181) or vol.dtype != np.uint8:
        raise SystemExit(f"{source}: expected 181x217x181 uint8, got {vol.shape} {vol.dtype}")
    src_aff = geometry.check_affine(img.affine)

    i0, j0 = PARAMS["crop"]["in_plane_start_ij"]
    ni, nj = PARAMS["crop"]["in_plane_size_ij"]
    k0 = PARAMS["slab"]["first_source_slice"]
    nk = PARAMS["slab"]["n_source_slices"]
    sub = vol[i0 : i0 + ni, j0 : j0 + nj, k0 : k0 + nk].astype(np.int32)
    # Affine of the cropped 1 mm sub-volume: voxel (0, 0, 0) is source voxel (i0, j0, k0).
    sub_aff = src_aff.copy()
    sub_aff[:3, 3] = (src_aff @ np.array([i0, j0, k0, 1.0]))[:3]
    # Box slice profile: the 2 mm slice is the sum of a pair; times 4 / 2 keeps exact integers.
    scale = PARAMS["intensity_scale"]
    pair_sum = sub[:, :, 0::2] + sub[:, :, 1::2]
    reference = (pair_sum * (scale / 2.0)).astype(np.int16)
    assert np.array_equal(reference, pair_sum * int(scale / 2))
    slab_aff = geometry.coarsened_affine(sub_aff, (1, 1, 2))
    rot = _rot(1, PARAMS["rotation_deg"]["about_anterior_posterior_axis"]) @ _rot(
        0, PARAMS["rotation_deg"]["about_left_right_axis"]
    )
    ref_aff = rot @ slab_aff

    factors = PARAMS["lowres"]["factors"]
    lr_shape = [reference.shape[a] // factors[a] for a in (0, 1)]
    lowres = np.abs(fourier_resample(reference.astype(np.float64), lr_shape, axes=(0, 1)))
    lowres = np.rint(lowres).astype(np.uint16)
    lr_aff = geometry.coarsened_affine(ref_aff, factors)
    return reference, ref_aff, lowres, lr_aff


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray) -> tuple[bytes, bytes]:
    """``(gzip bytes, raw NIfTI bytes)`` of ``data`` with a RAS scanner-anatomical sform and qform."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"monai_sr sample: colin27 oblique reference"
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buf.getvalue(), raw


def write_outputs(source: Path, out_root: Path) -> dict:
    """Write the outputs under ``out_root/data/sample`` and return the manifest's outputs + geometry."""
    reference, ref_aff, lowres, lr_aff = build(source)
    sample = out_root / SAMPLE_DIR
    sample.mkdir(parents=True, exist_ok=True)
    gz, raw = nifti_gz_bytes(reference, ref_aff)
    ref_path = sample / REFERENCE_NAME
    tmp = ref_path.with_name(ref_path.name + ".tmp")
    tmp.write_bytes(gz)
    os.replace(tmp, ref_path)
    d = PARAMS["lowres"]["dicom"]
    paths = write_original_mr_series(
        lowres.astype(np.float64),
        lr_aff,
        sample / SERIES_NAME,
        style=d["style"],
        seed=d["seed"],
        series_number=d["series_number"],
        series_description=d["series_description"],
        overwrite=True,
    )
    outputs = {
        f"{SAMPLE_DIR}/{REFERENCE_NAME}": {
            "sha256": sha256_bytes(gz),
            "sha256_uncompressed": sha256_bytes(raw),
            "bytes": len(gz),
            "what": "HIGH-resolution reference, 180x216x60, 1x1x2 mm, int16, colin27 x 4, RAS sform/qform code 1",
        }
    }
    for p in paths:
        outputs[f"{SAMPLE_DIR}/{SERIES_NAME}/{p.name}"] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    geometry_info = {
        "reference_affine_ras": [[round(float(v), 10) for v in row] for row in ref_aff],
        "reference_shape": list(reference.shape),
        "lowres_affine_ras": [[round(float(v), 10) for v in row] for row in lr_aff],
        "lowres_shape": list(lowres.shape),
        "lowres_value_range": [int(lowres.min()), int(lowres.max())],
    }
    return {"outputs": outputs, "geometry": geometry_info}


def find_source(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from monai_sr.training.datasets import shared_data_dir

    candidates = [shared_data_dir() / SOURCE["file"]]
    for c in candidates:
        if c.is_file():
            return c
    raise SystemExit(
        f"source {SOURCE['file']} not found (looked in {[str(c) for c in candidates]}); pass --source PATH "
        f"(it is {SOURCE['path_in_package']} of Debian {SOURCE['package']} {SOURCE['version']})"
    )


def check_source(source: Path) -> None:
    expected = SOURCE["sha256"]
    if MANIFEST.is_file():
        listed = json.loads(MANIFEST.read_text())["source"]["sha256"]
        if listed != expected:
            raise SystemExit(f"{MANIFEST}: source sha256 {listed} differs from the script's {expected}")
    got = sha256_file(source)
    if got != expected:
        raise SystemExit(f"{source}: sha256 {got} is not the expected {expected} (wrong or changed source file)")


def _same(path: Path, entry: dict) -> bool:
    data = path.read_bytes()
    if sha256_bytes(data) == entry["sha256"]:
        return True
    if path.name.endswith(".gz") and "sha256_uncompressed" in entry:
        return sha256_bytes(gzip.decompress(data)) == entry["sha256_uncompressed"]
    return False


def compare(root: Path, outputs: dict, label: str) -> list[str]:
    """Mismatches between the files under ``root/data/sample`` and the manifest's ``outputs``."""
    problems = []
    listed = set(outputs)
    present = {p.relative_to(root).as_posix() for p in (root / SAMPLE_DIR).rglob("*") if p.is_file()}
    present.discard(f"{SAMPLE_DIR}/README.md")
    for rel in sorted(listed - present):
        problems.append(f"{label}: missing {rel}")
    for rel in sorted(present - listed):
        problems.append(f"{label}: not in the manifest: {rel}")
    for rel in sorted(listed & present):
        if not _same(root / rel, outputs[rel]):
            problems.append(f"{label}: sha256 differs: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", help="colin27_t1_1mm.nii.gz (default: the data folder, $MONAI_SR_DATA)")
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare with the manifest")
    args = ap.parse_args(argv)
    source = find_source(args.source)
    check_source(source)

    if args.check:
        if not MANIFEST.is_file():
            print(f"{MANIFEST} missing", file=sys.stderr)
            return 1
        manifest = json.loads(MANIFEST.read_text())
        with tempfile.TemporaryDirectory(prefix="monai_sr_sample_") as tmp:
            made = write_outputs(source, Path(tmp))
            problems = compare(Path(tmp), manifest["outputs"], "regenerated")
        if made["geometry"] != manifest.get("geometry"):
            problems.append("regenerated: geometry differs from the manifest")
        problems += compare(REPO, manifest["outputs"], "repository")
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print(f"sample data check FAILED ({len(problems)} problem(s))", file=sys.stderr)
            return 1
        print(f"sample data check OK: {len(manifest['outputs'])} files match {MANIFEST.relative_to(REPO)}")
        return 0

    made = write_outputs(source, REPO)
    manifest = {
        "description": "Sample data for the demo and the tests (data/sample), made by scripts/make_sample_data.py "
        "from one real subject. Outputs are byte-identical on rerun.",
        "source": SOURCE,
        "command": "python scripts/make_sample_data.py --source $MONAI_SR_DATA/colin27_t1_1mm.nii.gz",
        "check_command": "python scripts/make_sample_data.py --check",
        "licence_of_outputs": "BSD-3-Clause (derived from the source)",
        "parameters": PARAMS,
        **made,
    }
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(e["bytes"] for e in made["outputs"].values())
    print(f"wrote {len(made['outputs'])} files ({total / 1e6:.2f} MB) under {SAMPLE_DIR} and {MANIFEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
