"""bundles/mri_denoise_dncnn/scripts/train_dr.py: the real scans it may train on, and how they are cut."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from data_volumes import needs_data
from helpers import REPO

SHOULDER = "pydicomdata_MR2_UNCR_shoulder_T1SE_2D.nii.gz"
S1 = "pycortex_S1_T1.nii.gz"


def _script():
    spec = importlib.util.spec_from_file_location("train_dr", REPO / "bundles/mri_denoise_dncnn/scripts/train_dr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_files_take_fixed_shares():
    args = _script().parse_args(["--real-files", f"{S1}:0.3", f"{SHOULDER}:0.1"])
    assert args.real_shares == {S1: 0.3, SHOULDER: 0.1}
    assert _script().parse_args([]).real_shares == {}


@pytest.mark.parametrize("files, message", [
    (["colin27_t1_1mm.nii.gz:0.1"], "held out"),
    ([S1], "NAME:SHARE"),
    ([f"{S1}:0.7", f"{SHOULDER}:0.4"], "at most 1"),
])
def test_real_files_refuse_the_held_out_volume_and_missing_shares(files, message, capsys):
    with pytest.raises(SystemExit):
        _script().parse_args(["--real-files", *files])
    assert message in capsys.readouterr().err


@needs_data(SHOULDER, S1)
def test_real_parts_keep_the_held_out_slab_out_and_a_slice_whole():
    script = _script()
    (shoulder, no_thick), (thin, thick) = script.real_parts([SHOULDER, S1], None)
    assert len(shoulder) == 1 and shoulder[0].shape == (1024, 1024, 1) and no_thick == []
    assert np.isclose(np.percentile(shoulder[0], 99.5), 1.0, atol=0.05)  # normalised by its robust max
    # the slab [154, 184) of 256 axial slices, a gap of 4 on each side: slices 0..149 and 188..255 train
    assert sorted(p.shape[2] for p in thin) == [68, 150]
    assert sorted(p.shape[2] for p in thick) == [68, 68, 150, 150]  # the 3- and 5-slice copies, same parts
    assert all(p.shape[:2] == (256, 256) for p in thin + thick)
