"""The training and evaluation volumes for tests: found in the data folder (``$MONAI_SR_DATA``, else the
user data folder where ``make data`` / ``monai-sr data fetch`` puts them); a test that needs one skips,
with a reason that says how to get it, when the file is not there.

Only presence is checked here: a file that is there with the wrong bytes is an error the loader
(:func:`monai_sr.training.datasets.verified_path`) reports, not a reason to skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monai_sr.training.datasets import DATA_ENV, TRAINING_FILES, shared_data_dir

COLIN27 = "colin27_t1_1mm.nii.gz"
"""The held-out evaluation volume of every bundle's ``evaluate.json``."""


def missing_reason(*names: str) -> str | None:
    """Why a test that reads ``names`` from the data folder cannot run, or ``None`` when all are there."""
    folder = shared_data_dir()
    missing = [n for n in names if not (folder / n).is_file()]
    if not missing:
        return None
    where = f"${DATA_ENV}={folder}" if os.environ.get(DATA_ENV) else f"{folder} (${DATA_ENV} is not set)"
    return f"data volume(s) {', '.join(missing)} not in {where}: run `make data` (monai-sr data fetch) or set ${DATA_ENV}"


def needs_data(*names: str) -> pytest.MarkDecorator:
    """``skipif`` mark for a test (or ``pytestmark`` of a module) that reads ``names`` from the data folder."""
    reason = missing_reason(*names)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


needs_training_data = needs_data(*TRAINING_FILES)
needs_colin27 = needs_data(COLIN27)


def require_data(*names: str) -> Path:
    """The data folder, for a fixture or test that reads ``names`` from it; skips the calling test when
    one of them is not there."""
    reason = missing_reason(*names)
    if reason:
        pytest.skip(reason)
    return shared_data_dir()


def data_file(name: str) -> Path:
    """Path of ``name`` in the data folder; skips the calling test when it is not there."""
    return require_data(name) / name
