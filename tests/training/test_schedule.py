"""The warm-up / cosine learning-rate schedule (monai_sr.training.schedule)."""

from __future__ import annotations

import math

import pytest

from monai_sr.training.schedule import cosine_decay, warmup_cosine, warmup_cosine_lambda


def test_warmup_then_cosine_to_one_percent():
    assert warmup_cosine(0, total=100, warmup=10, peak=2e-3) == pytest.approx(2e-4)
    assert warmup_cosine(9, total=100, warmup=10, peak=2e-3) == pytest.approx(2e-3)
    assert warmup_cosine(10, total=100, warmup=10, peak=2e-3) == pytest.approx(2e-3)
    assert warmup_cosine(55, total=100, warmup=10, peak=1.0) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(100, total=100, warmup=10) == pytest.approx(0.01)
    assert warmup_cosine(500, total=100, warmup=10) == pytest.approx(0.01)  # clipped past the end
    assert cosine_decay(0.0) == 1.0 and cosine_decay(2.0) == pytest.approx(0.01)


def test_lambda_is_the_factor_bit_for_bit():
    f = warmup_cosine_lambda(400, 50)
    for step in range(0, 420, 7):
        expected = (step + 1) / 50 if step < 50 else 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - 50) / 350)))
        assert f(step) == expected
