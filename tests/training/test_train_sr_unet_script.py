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


def test_remaps_add_copies_of_the_same_image_under_other_contrasts(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    levels = np.array([0.0, 0.3, 0.6, 1.0], np.float32)
    labels = rng.integers(0, 4, (64, 64))
    nib.save(nib.Nifti1Image(levels[labels][..., None], np.diag([0.7, 0.7, 4.0, 1.0])), str(tmp_path / "slice.nii.gz"))
    train, groups, _ = _script().load_data([tmp_path / "slice.nii.gz"], (0.6, 0.72), 16, remaps=2, seed=3)
    assert groups == ["slice.nii.gz"] * 3  # the copies join the file's group (its share)
    original, *copies = (s.hr[0] for s in train)
    for copy in copies:
        # a remap is a function of the intensity: each tissue level maps to one value, not the original's
        values = [np.unique(copy[labels == k]) for k in range(4)]
        assert all(v.size == 1 for v in values)
        assert not np.allclose([v[0] for v in values], [np.unique(original[labels == k])[0] for k in range(4)])
    again, _, _ = _script().load_data([tmp_path / "slice.nii.gz"], (0.6, 0.72), 16, remaps=2, seed=3)
    assert all(np.array_equal(a.hr, b.hr) for a, b in zip(train, again))  # fixed by --seed


def test_a_negative_remap_count_is_refused(capsys):
    with pytest.raises(SystemExit):
        _script().parse_args(["--remaps", "-1"])
    assert "--remaps must be an integer >= 0, got -1" in capsys.readouterr().err
