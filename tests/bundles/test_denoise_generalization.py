"""benchmarks/denoise_generalization.py: the thick-slice volumes are slice-profile means on a scaled grid,
and the table's mean / minimum rows read the gains they are given."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("benchmarks.denoise_generalization")
from benchmarks.denoise_generalization import table, thick_slices  # noqa: E402


def test_thick_slices_are_means_of_consecutive_slices_with_the_affine_scaled_along_z():
    rng = np.random.default_rng(0)
    vol = rng.random((10, 8, 60)).astype(np.float32)
    affine = np.diag([0.9, 0.9, 1.0, 1.0])
    affine[:3, 3] = [5.0, -3.0, 2.0]
    thick, taff = thick_slices(vol, affine, 5, n=4)
    z0 = int(0.6 * 60) - 4 * 5 // 2  # 26
    expected = vol[:, :, z0 : z0 + 20].reshape(10, 8, 4, 5).mean(axis=3)
    np.testing.assert_allclose(thick, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(taff[:3, :3], axis=0), [0.9, 0.9, 5.0])
    # thick slice 0 is centred on 1 mm slices z0 .. z0 + 4, i.e. at z0 + 2 of the input grid
    np.testing.assert_allclose(taff @ [0, 0, 0, 1], affine @ [0, 0, z0 + 2, 1], atol=1e-6)


def test_table_mean_and_minimum_rows():
    rows = [{"volume": v, "kind": k, "spacing": [1, 1, 1], "level": 0.05, "psnr_noisy": 26.0, "nlmeans_true": 30.0,
             "nlmeans_dipy": 29.0, "gain_db": {"default": g}, "seconds": {"default": 1.0}}
            for v, k, g in (("a", "real", 1.0), ("b", "real", -0.5), ("c", "synthetic", 3.0))]
    lines, summary = table(rows, ["default"])
    assert summary["all"]["default"]["mean"] == pytest.approx(3.5 / 3)
    assert summary["all"]["default"]["min"] == -0.5
    assert summary["real"]["default"]["mean"] == pytest.approx(0.25)
    assert any(line.startswith("| **min (all, 3 cases)**") and "-0.50" in line for line in lines)


def test_merge_joins_runs_of_other_methods_on_the_same_cases(tmp_path):
    import json

    from benchmarks.denoise_generalization import main

    def run(method, gains):
        rows = [{"volume": v, "kind": "real", "spacing": [1, 1, 1], "level": 0.05, "psnr_noisy": 26.0, "nlmeans_true": 30.0,
                 "nlmeans_dipy": 29.0, "psnr": {method: 30.0 + g}, "gain_db": {method: g}, "seconds": {method: 1.0}}
                for v, g in zip("ab", gains)]
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps({"rows": rows, "methods": {method: {}}}))
        return str(path)

    out = main(["--merge", run("default", [1.0, -0.5]), run("true_sigma", [1.0, 0.25])])
    assert len(out["rows"]) == 2  # one row per case, both methods in it
    assert out["summary"]["real"]["default"]["min"] == -0.5 and out["summary"]["real"]["true_sigma"]["min"] == 0.25
