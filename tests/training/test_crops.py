"""The one crop draw and the one augmentation (monai_sr.training.crops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_sr.training.crops import augment_pair, crop_weights, draw_crop, share_weights, volume_planes


def test_draw_crop_stays_inside_and_prefers_foreground():
    vol = np.zeros((20, 30, 24), np.float32)
    vol[:, 20:, 16:] = 1.0  # foreground only in one corner of every plane along axis 0
    planes = [volume_planes(vol, 0, 1, 2)]
    for seed in range(20):
        c = draw_crop(np.random.default_rng(seed), planes, (4, 3), (2, 2), min_foreground=0.5, max_tries=200)
        assert c.source == 0 and 0 <= c.k < 20
        assert 0 <= 2 * c.i and 2 * (c.i + 4) <= 30 and 0 <= 2 * c.j and 2 * (c.j + 3) <= 24
        assert vol[c.k, 2 * c.i : 2 * (c.i + 4), 2 * c.j : 2 * (c.j + 3)].mean() >= 0.5


def test_draw_crop_calls_rng_in_the_documented_order():
    planes = [np.ones((5, 12, 13), np.float32), np.ones((6, 12, 9), np.float32)]
    w = crop_weights(planes, (3, 2), (1, 4))
    assert w == pytest.approx(np.array([5 * 10 * 2, 6 * 10 * 1]) / 160)
    c = draw_crop(np.random.default_rng(1), planes, (3, 2), (1, 4), weights=w, vary_phase=True)
    rng = np.random.default_rng(1)
    n = int(rng.choice(2, p=w))
    k = int(rng.integers(planes[n].shape[0]))
    start = int(rng.integers(planes[n].shape[2] % 4 + 1))
    i, j = int(rng.integers(12 - 3 + 1)), int(rng.integers((planes[n].shape[2] - start) // 4 - 2 + 1))
    assert (c.source, c.k, c.start, c.i, c.j) == (n, k, start, i, j)


def test_augment_pair_same_on_numpy_and_torch_and_keeps_alignment():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    y = np.kron(x, np.ones((2, 2), np.float32))  # the x2 "HR" twin of x
    for seed in range(8):
        a, b = augment_pair(np.random.default_rng(seed), x, y, jitter=0.2)
        ta, tb = augment_pair(np.random.default_rng(seed), torch.from_numpy(x), torch.from_numpy(y), jitter=0.2)
        np.testing.assert_allclose(ta.numpy(), a, rtol=1e-6)
        np.testing.assert_allclose(tb.numpy(), b, rtol=1e-6)
        np.testing.assert_allclose(np.kron(a, np.ones((2, 2), np.float32)), b, rtol=1e-6)
        assert a.dtype == np.float32
    # no transpose of non-square pairs, no gain draw without jitter
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    a, _ = augment_pair(r1, np.zeros((2, 3)), np.zeros((2, 6)), transpose=True)
    assert a.shape == (2, 3) and r1.random() == [r2.random() for _ in range(4)][-1]


def test_share_weights_gives_named_groups_their_share_and_splits_the_rest_by_weight():
    w = np.array([0.5, 0.3, 0.15, 0.05])  # e.g. crop positions: two volumes' stacks and one small slice
    out = share_weights(w, ["a", "a", "b", "slice"], {"slice": 0.25})
    assert out.sum() == pytest.approx(1.0)
    assert out[3] == pytest.approx(0.25)  # the 2D slice gets its share however few crops it has
    assert out[:3] == pytest.approx(0.75 * w[:3] / w[:3].sum())  # the rest keep their proportions
    two = share_weights(w, ["a", "a", "b", "slice"], {"a": 0.5, "slice": 0.1})
    assert two[:2].sum() == pytest.approx(0.5) and two[0] / two[1] == pytest.approx(0.5 / 0.3)
    assert two[2] == pytest.approx(0.4)


@pytest.mark.parametrize("shares, match", [
    ({"nope": 0.1}, "no source"),
    ({"a": 0.7, "b": 0.5}, "at most 1"),
    ({"a": -0.1}, ">= 0"),
    ({"a": 0.3, "b": 0.3}, "every group is named"),
])
def test_share_weights_refuses_impossible_shares(shares, match):
    with pytest.raises(ValueError, match=match):
        share_weights(np.array([0.5, 0.5]), ["a", "b"], shares)
