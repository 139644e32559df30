"""Install anywhere (issue 15): the package finds its bundles, data specs and demo sample as package data
(importlib.resources), not by walking up to a source checkout; the repository names no machine path.

- fast: a copy of the package outside the checkout (symlinks of monai_sr/_data followed, as a wheel
  holds them) finds everything inside itself, and the shipped bundles count as shipped there;
- slow: a wheel built with ``python -m build --wheel`` and installed with ``pip install --target``
  (no editable install) runs ``enhance`` for every bundle from a folder far from the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

BUNDLE_NAMES = sorted(p.parents[1].name for p in (REPO / "bundles").glob("*/configs/inference.json"))


def _run_outside(site: Path, cwd: Path, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -c code`` with ``site`` first on sys.path (before the editable install's finder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MONAI_SR_BUNDLES")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_package_data_links_point_into_the_repository():
    """In the checkout, monai_sr/_data/* are the repository's folders (one copy of every file)."""
    data = REPO / "monai_sr" / "_data"
    for name, target in (("bundles", "bundles"), ("data_specs", "data_specs"), ("sample", "data/sample")):
        assert (data / name).resolve() == (REPO / target).resolve(), name


def test_copy_of_the_package_finds_its_data(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(REPO / "monai_sr", site / "monai_sr", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = f"""
import json, sys
from pathlib import Path
import monai_sr
from monai_sr.bundles import SCHEMA_DIR, bundle_search_dirs, find_bundle, schema_path
from monai_sr.bundle_trust import SHIPPED_BUNDLES, is_shipped_bundle
from monai_sr.demo import sample_paths
from monai_sr.training.datasets import DATA_SPEC
site = Path({str(site)!r}).resolve()
inside = lambda p: Path(p).resolve().is_relative_to(site)
assert inside(monai_sr.__file__), monai_sr.__file__
assert inside(bundle_search_dirs()[-1]) and inside(SHIPPED_BUNDLES) and inside(SCHEMA_DIR) and inside(DATA_SPEC)
for name in {BUNDLE_NAMES!r}:
    root = find_bundle(name)
    assert inside(root) and is_shipped_bundle(root), root
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert inside(schema_path(meta["schema"])), meta["schema"]
assert all(inside(p) and p.exists() for p in sample_paths())
print("ok")
"""
    result = _run_outside(site, elsewhere, code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


MACHINE_PATH = re.compile(rb"(?<![\w.:/-])/(?:work|home|root|Users|mnt|scratch)/[\w.-]+|\b[A-Za-z]:\\\\?Users\\\\?[\w.-]+")
"""An absolute folder of a user's machine: POSIX home/work/mount folders, a Windows user folder."""


@pytest.mark.parametrize("line, hit", [
    ("data_dir = '@work@shared@data'", True), ("see @home@alice@monai_sr@runs", True),
    ('"C:%Users%bob%data"', True), ('"C:%%Users%%bob"', True), ("cd @root@x && make", True),
    ("https:@@example.org@home@page", False), ("runs@work@x and ~@.local@share@monai_sr@data", False),
    ("$MONAI_SR_DATA@colin27_t1_1mm.nii.gz", False),
])
def test_machine_path_pattern(line, hit):
    """The grep below can fail: it finds machine folders and passes relative paths and URLs (written with
    @ for / and % for a backslash here, so that this file does not hold the paths it looks for)."""
    assert bool(MACHINE_PATH.search(line.replace("@", "/").replace("%", "\\").encode())) is hit


def test_no_machine_paths_in_tracked_files():
    """No absolute folder of the machine the repository was written on, in any tracked text file."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    pattern = MACHINE_PATH
    hits = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_symlink() or not path.is_file() or path.suffix in (".pt", ".ts", ".dcm", ".gz", ".png"):
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{name.decode()}:{number}: {line.decode(errors='replace').strip()[:160]}")
    assert not hits, "absolute machine paths:\n" + "\n".join(hits)


@pytest.mark.slow
def test_wheel_runs_every_bundle_outside_the_checkout(tmp_path):
    pytest.importorskip("build")
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = dist.glob("monai_sr-*.whl")
    assert wheel.stat().st_size < 40e6, f"wheel weighs {wheel.stat().st_size / 1e6:.1f} MB"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert not (site / "monai_sr" / "_data" / "bundles").is_symlink()
    code = f"""
import sys
import nibabel as nib, numpy as np
from monai_sr.cli import main
from monai_sr.demo import sample_paths
ref = nib.load(str(sample_paths()[1]))
a = np.asarray(ref.dataobj)[60:100, 60:100, 40:46].astype(np.float32)
nib.save(nib.Nifti1Image(a, ref.affine), "small.nii.gz")
for name, extra in (("mri_sr_unet", ["--fast"]), ("mri_denoise_dncnn", []), ("mri_sr_selfsupervised", ["--fast"])):
    rc = main(["enhance", "small.nii.gz", name + ".nii.gz", "--bundle", name, "--quiet", *extra])
    assert rc == 0, name
print(json.dumps(sorted(str(p) for p in __import__("pathlib").Path(".").glob("*.nii.gz"))))
""".replace("import sys", "import sys, json")
    result = _run_outside(site, work, code, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == sorted(
        ["small.nii.gz", "mri_sr_unet.nii.gz", "mri_denoise_dncnn.nii.gz", "mri_sr_selfsupervised.nii.gz"]
    )


@pytest.mark.parametrize("name", BUNDLE_NAMES)
@pytest.mark.parametrize("config", ["inference.json", "train.json", "evaluate.json"])
def test_bundle_root_follows_the_config_location(tmp_path, monkeypatch, name, config):
    """``python -m monai.bundle run --config_file <copy>/configs/X.json`` from any folder: bundle_root is
    the folder the config lives in, not the working directory and not the shipped bundle."""
    from monai.bundle import ConfigParser, ConfigWorkflow

    copy = tmp_path / "copy_of_bundle"
    shutil.copytree(REPO / "bundles" / name / "configs", copy / "configs")
    monkeypatch.chdir(tmp_path)
    workflow = ConfigWorkflow(
        config_file=str(copy / "configs" / config), workflow_type=None, run_id="check", check="$@bundle_root"
    )
    workflow.initialize()
    assert workflow.run() == [str(copy.resolve())]
    # relative --config_file, run from inside configs/
    monkeypatch.chdir(copy / "configs")
    workflow = ConfigWorkflow(config_file=config, workflow_type=None, run_id="check", check="$@bundle_root")
    workflow.initialize()
    assert workflow.run() == [str(copy.resolve())]
    # a ConfigParser of one's own: the installed bundle of that name
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / config))
    assert parser.get_parsed_content("bundle_root") == str((REPO / "bundles" / name).resolve())
