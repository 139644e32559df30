"""scripts/train_sr_unet.py: which files it trains on and how often each is drawn."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script


def _script():
    return load_script("train_sr_unet")


def test_train_files_take_optional_shares():
    args = _script().parse_args(["--train-files", "a.nii.gz", "b.nii.gz:0.25"])
    assert args.shares == {"a.nii.gz": None, "b.nii.gz": 0.25}


@pytest.mark.parametrize("files, message", [
    (["colin27_t1_1mm.nii.gz"], "held out"),
    (["a.nii.gz", "a.nii.gz:0.1"], "twice"),
    (["a.nii.gz:lots"], "must be a number"),
])
def test_train_files_refuse_the_held_out_volume_and_bad_specs(files, message, capsys):
    with pytest.raises(SystemExit):
        _script().parse_args(["--train-files", *files])
    assert message in capsys.readouterr().err


def test_a_single_2d_slice_trains_whole_in_its_plane(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((101, 64, 1)).astype(np.float32), np.diag([0.2, 0.2, 6.0, 1.0])),
             str(tmp_path / "slice.nii.gz"))
    train, groups, val = _script().load_data([tmp_path / "slice.nii.gz"], (0.6, 0.72), 16)
    assert groups == ["slice.nii.gz"] and val == []
    assert len(train) == 1 and train[0].hr.shape == (1, 100, 64) and train[0].lr.shape == (1, 50, 32)
