"""Shared fixtures: small real MR series made from the sample data, strict pydicom."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from helpers import crop_series


@pytest.fixture(autouse=True)
def strict_pydicom():
    """STYLE.md 11: invalid values raise while tests write and read DICOM."""
    settings = pydicom.config.settings
    old = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = pydicom.config.RAISE
    settings.writing_validation_mode = pydicom.config.RAISE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = old


@pytest.fixture(scope="session")
def small_series(tmp_path_factory) -> Path:
    """40 x 48 x 6 Siemens-style series (uint16, no rescale), oblique."""
    return crop_series(tmp_path_factory.mktemp("small") / "series", style="siemens")


@pytest.fixture(scope="session")
def quirky_series(tmp_path_factory) -> Path:
    """Philips-style series (rescale slope/intercept) with the quirks real archives hand over."""
    quirks = ("spacing_tag_lies", "command_set", "zero_window", "private_tags", "shuffled_names", "implicit_vr")
    return crop_series(tmp_path_factory.mktemp("quirky") / "series", style="philips", quirks=quirks, n_slices=8, seed=2)
