"""dicom3tools' ``dcsort -check`` over the derived series: one series, one frame of reference, equal
slice intervals along the positions, and no error that the source series did not already have.

The outputs are those of test_external_tools.py made cheaply, without the network: the demo's source (the
Colin27 sample) and the quirky vendor-style series, 2x in-plane on the finer grid, written the two ways
the package writes them (the whole-volume call and, as ``enhance`` does, streamed with per-slice
rescale), and as an Enhanced MR object.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from helpers import SAMPLE_SERIES, require_tool

from monai_sr import geometry
from monai_sr.io.dicom.derived import estimate_window
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import DerivedSeriesWriter, write_derived_series

SCALE = (2, 2, 1)
CLASSIC_CHECKS = ("-check", "-checkFoR", "-interval", "-sortby", "ImagePositionPatient")


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file())


def _dcsort_errors(files, *options) -> set[str]:
    """dcsort's error messages without the file names and values (which differ between series)."""
    run = subprocess.run([require_tool("dcsort"), *options, *map(str, files)], capture_output=True, text=True)
    lines = (run.stdout + run.stderr).splitlines()
    return {re.sub(r"<[^>]*>", "<>", line.split(": ", 1)[-1]).strip() for line in lines if "Error" in line}


@pytest.fixture(scope="module", params=["demo", "quirky"])
def outputs(request, tmp_path_factory):
    source = SAMPLE_SERIES if request.param == "demo" else request.getfixturevalue("quirky_series")
    src = load_dicom_series(source)
    vol = np.kron(src[0].numpy().astype(np.float64), np.ones(SCALE))
    affine = geometry.scaled_affine(src.affine.numpy(), SCALE)
    headers = source_headers(src.meta)
    root = tmp_path_factory.mktemp(f"dcsort_{request.param}")
    whole = write_derived_series(vol, affine, root / "whole", source_headers=headers, derivation="2x (dcsort test)")
    with DerivedSeriesWriter(root / "streamed", affine=affine, shape=vol.shape, source_headers=headers,
                             derivation="2x (dcsort test)", window=estimate_window(src[0].numpy())) as writer:
        for k in reversed(range(vol.shape[2])):
            writer.write_slice(k, vol[:, :, k])
    (enhanced,) = write_derived_series(vol, affine, root / "enhanced", source_headers=headers,
                                       derivation="2x (dcsort test)", dicom_format="enhanced")
    return _files(source), {"whole": whole, "streamed": writer.files}, enhanced


@pytest.mark.parametrize("way", ["whole", "streamed"])
def test_dcsort_finds_no_new_errors(outputs, way):
    source, classic, _ = outputs
    written = classic[way]
    assert len(written) == len(source)
    new = _dcsort_errors(written, *CLASSIC_CHECKS) - _dcsort_errors(source, *CLASSIC_CHECKS)
    assert not new, sorted(new)


def test_dcsort_checks_the_enhanced_object(outputs):
    # dcsort reads no functional groups, so only the series / frame of reference checks apply
    assert not _dcsort_errors([outputs[2]], "-check", "-checkFoR", "-sortby", "InstanceNumber")


def test_dcsort_would_see_two_series(outputs):
    """The check is live: two of our series mixed are reported."""
    source, classic, _ = outputs
    mixed = classic["whole"][:2] + classic["streamed"][2:]
    assert any("Different Series Instance UID" in e for e in _dcsort_errors(mixed, *CLASSIC_CHECKS))
