"""Domain-randomised volumes: tissue means follow the drawn values, remaps follow their knots."""

from __future__ import annotations

import numpy as np
import pytest

from monai_sr.training.synth import LUT_KNOTS, ContrastRandomiser
from monai_sr.transforms.intensity import robust_max


def _phantom():
    """Grey matter, white matter and 'rest' (CSF-like dark T1) in blocks, with partial-volume edges."""
    gm = np.zeros((24, 20, 16), np.float32)
    wm = np.zeros_like(gm)
    gm[2:10] = 1.0
    wm[12:20] = 1.0
    gm[10:12], wm[10:12] = 0.5, 0.5  # a partial-volume band
    t1 = np.where(wm > 0, 1.0, np.where(gm > 0, 0.6, 0.25)).astype(np.float32) * 200
    return gm, wm, t1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tissue_means_follow_the_drawn_values(seed):
    gm, wm, t1 = _phantom()
    vol, draw = ContrastRandomiser(seed=seed).from_tissue_maps(gm, wm, t1, finish=False)
    np.testing.assert_allclose(vol[gm == 1].mean(), draw.mu_gm, rtol=1e-6)
    np.testing.assert_allclose(vol[wm == 1].mean(), draw.mu_wm, rtol=1e-6)
    np.testing.assert_allclose(vol[10:12].mean(), 0.5 * (draw.mu_gm + draw.mu_wm), rtol=1e-6)
    rest = (gm == 0) & (wm == 0)
    expected = np.interp(t1[rest] / np.percentile(t1, 99), LUT_KNOTS, draw.lut)
    np.testing.assert_allclose(vol[rest], expected, rtol=1e-5)


def test_draws_differ_and_finished_volumes_are_normalised():
    gm, wm, t1 = _phantom()
    rnd = ContrastRandomiser(seed=0)
    (a, da), (b, db) = rnd.from_tissue_maps(gm, wm, t1), rnd.from_tissue_maps(gm, wm, t1)
    assert (da.mu_gm, da.mu_wm) != (db.mu_gm, db.mu_wm)
    for v in (a, b):
        assert v.dtype == np.float32 and v.min() >= 0
        assert robust_max(v) == pytest.approx(1.0, rel=1e-5)
    # the contrast ordering is random: over a few draws both GM > WM and WM > GM occur
    orders = {d.mu_gm > d.mu_wm for d in (rnd.from_tissue_maps(gm, wm, t1, finish=False)[1] for _ in range(20))}
    assert orders == {True, False}


def test_remap_keeps_or_remaps():
    _, _, t1 = _phantom()
    rnd = ContrastRandomiser(seed=3, texture=0.0, bias=0.0, keep_prob=0.5)
    kept = remapped = 0
    for _ in range(20):
        vol, draw = rnd.remap(t1)
        if draw.lut:
            remapped += 1
        else:
            kept += 1
            np.testing.assert_allclose(vol, t1 / robust_max(t1), rtol=1e-6)
    assert kept and remapped


def test_bad_arguments():
    with pytest.raises(ValueError, match="keep_prob"):
        ContrastRandomiser(keep_prob=2.0)
    gm, wm, t1 = _phantom()
    with pytest.raises(ValueError, match="one grid"):
        ContrastRandomiser().from_tissue_maps(gm[:-1], wm, t1)
    with pytest.raises(ValueError, match="no positive"):
        ContrastRandomiser.apply_lut(np.zeros((4, 4)), np.ones(LUT_KNOTS.size))


def test_draw_mixes_tissue_maps_and_remapped_t1s():
    from monai_sr.training.synth import REAL_FILES, SynthSources

    gm, wm, t1 = _phantom()
    sources = SynthSources(real={REAL_FILES[0]: t1, REAL_FILES[1]: t1[::-1].copy()}, gm=gm, wm=wm)
    rnd = ContrastRandomiser(seed=0)
    kinds = [rnd.draw(sources)[1] for _ in range(40)]
    assert {"tissue maps", f"remap {REAL_FILES[0]}", f"remap {REAL_FILES[1]}"} == set(kinds)
    assert 10 <= kinds.count("tissue maps") <= 30
