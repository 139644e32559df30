"""How well an uncertainty map ranks the real error: the numbers the validation report shows beside it.

* :func:`rank_agreement` over a set of voxels: the Spearman rank correlation between the map and the
  absolute error (0: no ranking, 1: the same order), and the share of the voxels with the 10 % largest
  errors that lie in the map's top decile (10 %: chance) — the two figures of ``benchmarks/uncertainty.py``.
* :func:`slice_spearman`: the Spearman correlation per slice inside a mask.

Arrays are on one grid (the prediction's), ``(X, Y, Z)`` in index order; the map and the error are in the
image's units (the correlation does not depend on them).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

__all__ = ["rank_agreement", "slice_spearman", "find_beside", "MIN_VOXELS"]

#: Fewer voxels than this in a slice's mask: no correlation for that slice (nan).
MIN_VOXELS = 50


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < MIN_VOXELS or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def rank_agreement(uncertainty: np.ndarray, abs_error: np.ndarray) -> dict[str, float]:
    """``{"spearman", "top_decile_share"}`` between two same-length 1-D arrays of voxel values (see the
    module docstring); nan where undefined (too few voxels, a constant map or error)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.asarray(abs_error, dtype=np.float64).ravel()
    if u.shape != e.shape:
        raise ValueError(f"map and error differ in size: {u.size} vs {e.size}")
    rho = _spearman(u, e)
    if np.isnan(rho):
        return {"spearman": rho, "top_decile_share": float("nan")}
    top_err = e >= np.quantile(e, 0.9)
    share = float(np.mean((u >= np.quantile(u, 0.9))[top_err]))
    return {"spearman": rho, "top_decile_share": share}


def slice_spearman(uncertainty: np.ndarray, abs_error: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Spearman correlation between ``uncertainty`` and ``abs_error`` inside ``mask``, one value per slice
    along ``axis`` (nan for a slice with fewer than :data:`MIN_VOXELS` mask voxels or a constant map)."""
    if not (uncertainty.shape == abs_error.shape == mask.shape):
        raise ValueError(f"shapes differ: map {uncertainty.shape}, error {abs_error.shape}, mask {mask.shape}")
    out = np.full(uncertainty.shape[axis], np.nan)
    for k in range(out.size):
        m = np.take(mask, k, axis=axis)
        out[k] = _spearman(np.take(uncertainty, k, axis=axis)[m], np.take(abs_error, k, axis=axis)[m])
    return out


def find_beside(prediction: object) -> str | None:
    """The uncertainty map written beside a prediction path by ``monai-sr enhance --uncertainty``
    (:func:`monai_sr.inference.uncertainty.uncertainty_path`) when it exists; None otherwise (also for
    an in-memory prediction)."""
    import os

    if not isinstance(prediction, (str, os.PathLike)):
        return None
    from monai_sr.inference.uncertainty import uncertainty_path

    path = uncertainty_path(prediction)
    return str(path) if path.exists() else None
