"""Quality checks of one volume, slice by slice, without a reference.

* Per-slice intensity statistics (mean, standard deviation, minimum, maximum over the whole slice).
* Outlier slices: a slice's mean or standard deviation minus the running median of its 5 neighbours
  (slice itself included), turned into a robust z-score (median and MAD of those residuals,
  :func:`monai_sr.validation.metrics.robust_z`); ``|z| > 3.5`` is an outlier. The running median takes
  out the smooth change of anatomy from slice to slice, so a head's first and last slices are not
  outliers just for holding less tissue. The scale is at least 2% of the median statistic, so a series
  of nearly identical slices does not turn tiny differences into findings.
* Duplicated slices: two neighbouring slices with identical voxels.
* Slice positions: from the DICOM headers the volume was read from (ImagePositionPatient along the
  normal of ImageOrientationPatient): duplicated positions, missing slices (a step of about a whole
  multiple of the median step) and unequal steps, every one listed with its slice. The DICOM reader
  refuses a series whose positions are off by more than its tolerance, so on a readable series these
  findings list the smaller irregularities it tolerated; a volume without DICOM headers has its positions
  from the affine, equally spaced by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from monai_sr import geometry
from monai_sr.validation.metrics import robust_z

__all__ = ["Finding", "slice_statistics", "outlier_findings", "duplicate_findings", "position_findings", "dicom_positions", "run_qa"]

OUTLIER_Z = 3.5
RUNNING_MEDIAN = 5


@dataclass
class Finding:
    """One thing QA found: the slice it is about (None for the whole volume), a kind and a sentence."""

    slice: int | None
    kind: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def slice_statistics(volume: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    """Mean, standard deviation, minimum and maximum of every slice along ``axis`` (whole slice)."""
    v = np.moveaxis(np.asarray(volume), axis, 0)
    flat = v.reshape(v.shape[0], -1)
    return {
        "mean": flat.mean(axis=1, dtype=np.float64),
        "std": flat.std(axis=1, dtype=np.float64),
        "min": flat.min(axis=1).astype(np.float64),
        "max": flat.max(axis=1).astype(np.float64),
    }


def outlier_findings(stats: dict[str, np.ndarray], *, threshold: float = OUTLIER_Z) -> tuple[list[Finding], dict[str, np.ndarray]]:
    """Outlier slices by the detrended robust z-score of the slice mean and standard deviation.

    Returns the findings and the z-scores (``{"mean": z, "std": z}``).
    """
    findings, scores = [], {}
    for name in ("mean", "std"):
        x = np.asarray(stats[name], dtype=np.float64)
        if x.size < 3:
            scores[name] = np.zeros_like(x)
            continue
        residual = x - ndimage.median_filter(x, size=RUNNING_MEDIAN, mode="nearest")
        z = robust_z(residual, min_scale=0.02 * float(np.median(np.abs(x))))
        scores[name] = z
        for k in np.flatnonzero(np.abs(z) > threshold):
            findings.append(Finding(int(k), "outlier", f"slice {name} {x[k]:.4g} is {z[k]:+.1f} robust z from its neighbours"))
    findings.sort(key=lambda f: f.slice)
    return findings, scores


def duplicate_findings(volume: np.ndarray, axis: int) -> list[Finding]:
    """Neighbouring slices with identical voxels (a slice stored twice), constant slices excepted."""
    v = np.moveaxis(np.asarray(volume), axis, 0)
    out = []
    for k in range(1, v.shape[0]):
        if np.array_equal(v[k], v[k - 1]) and v[k].min() != v[k].max():
            out.append(Finding(k, "duplicated slice", f"slice {k} has the same voxels as slice {k - 1}"))
    return out


def position_findings(positions: np.ndarray, *, rel_tol: float = 0.05, abs_tol: float = 0.1) -> list[Finding]:
    """Every irregular step between sorted slice positions (mm), with the tolerances of
    :func:`monai_sr.geometry.check_slice_positions`, listed instead of raised."""
    p = np.asarray(positions, dtype=np.float64)
    if p.size < 3:
        return []
    d = np.diff(p)
    step = float(np.median(d))
    tol = max(abs_tol, rel_tol * abs(step))
    out = []
    for k, dk in enumerate(d):
        if abs(dk) < abs_tol * 0.5:
            out.append(Finding(k + 1, "duplicated position", f"slice {k + 1} has the position of slice {k} ({p[k]:.3f} mm)"))
        elif abs(dk - step) > tol:
            ratio = dk / step
            if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
                msg = f"about {round(ratio) - 1} slice(s) missing between slices {k} and {k + 1} (step {dk:.3f} mm, median {step:.3f} mm)"
                out.append(Finding(k + 1, "missing slices", msg))
            else:
                out.append(Finding(k + 1, "unequal step", f"step {dk:.3f} mm from slice {k} to {k + 1}, median {step:.3f} mm"))
    return out


def dicom_positions(meta: dict) -> np.ndarray | None:
    """Positions (mm) along the slice normal of the DICOM slices a volume was read from, in slice order;
    None when the volume did not come from DICOM headers."""
    from monai_sr.io.dicom.headers import source_headers
    from monai_sr.meta import HEADERS_KEY

    if not meta.get(HEADERS_KEY):
        return None
    headers = source_headers(meta)
    normal = geometry.slice_normal([float(v) for v in headers[0].ImageOrientationPatient])
    return np.asarray([float(np.asarray([float(v) for v in h.ImagePositionPatient]) @ normal) for h in headers])


def run_qa(volume: np.ndarray, axis: int, *, meta: dict | None = None) -> tuple[dict[str, np.ndarray], list[Finding]]:
    """All the checks of this module on one volume; returns per-slice statistics (with the outlier
    z-scores as ``z_mean`` / ``z_std``) and the findings sorted by slice."""
    stats = slice_statistics(volume, axis)
    findings, z = outlier_findings(stats)
    stats["z_mean"], stats["z_std"] = z["mean"], z["std"]
    findings += duplicate_findings(volume, axis)
    positions = dicom_positions(meta or {}) if axis == 2 else None
    if positions is not None:
        findings += position_findings(positions)
    findings.sort(key=lambda f: (-1 if f.slice is None else f.slice))
    return stats, findings
