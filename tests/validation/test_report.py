"""The report folder: CSV and JSON content, PNG sizes as stated, the page rendered by headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from monai_sr import __version__
from monai_sr.errors import OutputError
from monai_sr.validation.report import CSV_COLUMNS, write_report
from monai_sr.validation.validate import validate_volumes


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(colin_crop, tmp_path_factory):
    rng = np.random.default_rng(5)
    pred = colin_crop.clone()
    pred[0] += torch.from_numpy(rng.normal(0.0, 4.0, pred.shape[1:]).astype(np.float32))
    pred[0, :, :, 9] += torch.from_numpy(rng.normal(0.0, 150.0, pred.shape[1:3]).astype(np.float32))
    result = validate_volumes(pred, colin_crop)
    return write_report(result, tmp_path_factory.mktemp("report") / "rep"), result


def test_csv_and_summary(report):
    out, result = report
    with open(out / "slices.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == result.n_slices
    assert [r["slice"] for r in rows] == [str(k) for k in range(result.n_slices)]
    assert [r["flagged"] for r in rows].count("1") == 1 and rows[9]["flagged"] == "1"
    np.testing.assert_allclose([float(r["psnr"]) for r in rows], result.column("psnr"), rtol=1e-5)
    np.testing.assert_allclose([float(r["position_mm"]) for r in rows], result.positions_mm, atol=1e-4)
    s = json.loads((out / "summary.json").read_text())
    assert s["software"]["version"] == __version__
    assert s["worst_slices"][0]["slice"] == 9 and [f["slice"] for f in s["flagged_slices"]] == [9]
    for key in ("axis", "mask", "data_range", "data_range_rule", "resampled", "flag_rule", "nrmse"):
        assert key in s["settings"], key
    assert "inside the mask" in s["settings"]["data_range_rule"]
    assert set(s["means_over_slices"]) == {"psnr", "ssim", "nrmse"}


def test_pngs_are_nonempty_and_of_the_stated_size(report):
    out, result = report
    s = json.loads((out / "summary.json").read_text())
    page = (out / "index.html").read_text()
    for name, size in s["figures"].items():
        assert (out / name).stat().st_size > 10_000, name
        assert png_size(out / name) == (size["width"], size["height"])
        assert f'src="{name}" width="{size["width"]}" height="{size["height"]}"' in page
    assert s["figures"]["worst_slices.png"]["height"] == 300 * len(result.worst)


def test_page_has_no_external_resources(report):
    out, _ = report
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all("://" not in u and not u.startswith("/") for u in links), links
    assert all((out / u).is_file() for u in links)


def test_existing_report_dir_is_refused(report, colin_crop):
    out, result = report
    with pytest.raises(OutputError, match="exists"):
        write_report(result, out)
    write_report(result, out, overwrite=True)
    assert (out / "index.html").is_file() and not list(out.parent.glob(".*.partial"))


def test_page_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    out, _ = report
    shot = tmp_path / "shot.png"
    flags = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", "--virtual-time-budget=5000",
    ]
    url = (out / "index.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-loaded="2/2"' in dom.stdout, re.findall(r'id="image-check"[^>]*>[^<]*', dom.stdout)
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert png_size(shot) == (1200, 1600) and shot.stat().st_size > 20_000
