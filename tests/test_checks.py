"""The shared argument checks (monai_sr.checks): one signature, messages that name the argument and value."""

from __future__ import annotations

import numpy as np
import pytest

from monai_sr.checks import check_axis, check_positive_int, check_range, check_scale, check_spatial_dims


def test_accepted_values_come_back_canonical():
    assert check_positive_int("n", 3) == 3 and check_positive_int("n", np.int64(2)) == 2
    assert check_positive_int("order", 0, minimum=0) == 0
    assert check_scale(2, 3) == (2, 2, 2) and check_scale((2.0, 1), 2) == (2, 1) and check_scale(4) == (4,)
    assert check_range("r", (0.1, 0.5), low=0.0, high=1.0) == (0.1, 0.5)
    assert check_spatial_dims(3) == 3 and check_axis("axis", 2) == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: check_positive_int("features", 0), "features must be a positive integer, got 0"),
        (lambda: check_positive_int("depth", 1, minimum=2), "depth must be an integer >= 2, got 1"),
        (lambda: check_positive_int("n", 2.0), "n must be a positive integer, got 2.0"),
        (lambda: check_positive_int("n", True), "got True"),
        (lambda: check_scale((2, 2), 3), r"scale \(2, 2\) must have 3 factors"),
        (lambda: check_scale((2, -1)), r"got -1 in \(2, -1\)"),
        (lambda: check_scale(1.5, 2), "got 1.5"),
        (lambda: check_scale((2, 0), name="factors"), "factors of factors must be positive integers, got 0"),
        (lambda: check_range("snr_range", (30, 10), low=0.0, open_low=True), r"snr_range .* \(0\.0, inf\], got \(30, 10\)"),
        (lambda: check_range("keep_range", (0.0, 0.5), low=0.0, open_low=True), "keep_range"),
        (lambda: check_range("r", (0.0, float("inf"))), "r must be"),
        (lambda: check_range("r", (1.0,)), r"got \(1\.0,\)"),
        (lambda: check_spatial_dims(1), "spatial_dims must be 2 or 3, got 1"),
        (lambda: check_axis("lr_axis", 3), "lr_axis must be 0, 1 or 2, got 3"),
    ],
)
def test_bad_values_raise_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
