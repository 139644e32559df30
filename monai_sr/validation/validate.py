"""Slice-by-slice validation of a predicted MRI volume: :func:`validate_volumes` -> :class:`ValidationResult`.

Three modes, chosen by what is given:

``reference``
    PREDICTION against REFERENCE: PSNR, SSIM and NRMSE per slice (:mod:`monai_sr.validation.metrics`).
    When the grids differ, the reference is resampled onto the prediction's grid (trilinear, index map
    prediction index -> mm -> reference index from the two affines, :mod:`monai_sr.validation.resample`);
    prediction voxels outside the reference's field of view leave the mask. Grids that do not overlap are
    refused with a :class:`~monai_sr.errors.GeometryError` naming both files.
``consistency``
    No reference, a low-resolution INPUT: the prediction is degraded back with the model it was trained
    to invert (k-space truncation, :func:`monai_sr.transforms.kspace.fourier_resample`) onto the
    input's grid, which must be the prediction's grid coarsened by an integer factor per axis
    (:func:`monai_sr.geometry.coarsened_affine`), and compared with the input slice by slice. The input
    also gets the checks of ``qa``.
``qa``
    Neither: the checks of :mod:`monai_sr.validation.qa` on the prediction.

Settings that shape the numbers:

* Slice axis (``axis=None``): index axis 2 for a DICOM series (the slice axis of the acquisition); for
  NIfTI the axis with the largest spacing, ties going to axis 2 when it is one of them, else to the
  highest tied axis. Taken from the volume whose grid the metrics use (the prediction, or the input in
  ``consistency`` mode).
* Mask: ``"auto"`` = :func:`~monai_sr.validation.metrics.head_mask` of the reference (of the input in
  ``consistency`` mode), ``"none"`` = every voxel, or a file / volume (nonzero = inside; resampled with
  nearest neighbour when its grid differs).
* Data range: reference ``max - min`` inside the mask (input in ``consistency`` mode).
* NaN/Inf voxels in the prediction, the reference, the input or a mask: refused (an
  :class:`~monai_sr.errors.InputError` naming the file, the count and the slices), all-NaN or partly: no
  metric is defined on them, and a score over the rest would report a broken volume as merely worse.
* Flagged slice: robust z-score of its PSNR (``0.6745 (PSNR - median) / MAD`` over the slices with
  foreground, the scale ``MAD / 0.6745`` at least 0.25 dB) below -3.5; slices whose mask holds fewer than
  1% of the voxels of the fullest slice are not scored. In ``consistency`` and ``qa`` modes a slice with a
  QA finding is flagged too.
* Uncertainty map (``uncertainty``; ``"auto"`` takes the ``*_uncertainty`` file ``monai-sr enhance
  --uncertainty`` wrote beside a prediction path): on the prediction's grid; drawn next to the difference
  in the montage; in ``reference`` mode the Spearman correlation between the map and |prediction -
  reference| inside the mask, per slice and over the volume, with the share of the top-decile errors in
  the map's top decile (:mod:`monai_sr.validation.uncertainty`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from monai.data import MetaTensor

from monai_sr import __version__, geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.validation import metrics as M
from monai_sr.validation.qa import Finding, run_qa, slice_statistics
from monai_sr.validation.resample import overlap_fraction, resample_to_grid, same_grid

__all__ = ["ValidationResult", "validate_volumes", "default_slice_axis", "FLAG_Z", "FLAG_MIN_SCALE_DB"]

FLAG_Z = -3.5
FLAG_MIN_SCALE_DB = 0.25
MIN_FOREGROUND = 0.01
FLAG_RULE = (
    "robust z-score of the slice PSNR, 0.6745 * (PSNR - median) / MAD over slices with foreground, "
    f"scale MAD/0.6745 at least {FLAG_MIN_SCALE_DB} dB, below {FLAG_Z}; slices whose mask holds fewer than "
    f"{MIN_FOREGROUND:.0%} of the voxels of the fullest slice are not scored"
)
Progress = Callable[[str, int, int], None]
VolumeLike = MetaTensor | str | os.PathLike


@dataclass
class _Volume:
    array: np.ndarray  # (X, Y, Z) float32
    affine: np.ndarray  # RAS 4x4
    meta: dict
    name: str

    @property
    def is_dicom(self) -> bool:
        from monai_sr.meta import HEADERS_KEY

        return bool(self.meta.get(HEADERS_KEY))


NON_FINITE_RULE = ("refused: no metric is defined on them, and a score over the other voxels would hide a broken "
                   "volume")


def _non_finite(arr: np.ndarray) -> str | None:
    """``"<n> NaN/Inf voxel(s) in <m> of <Z> slice(s) along index axis 2 (first at voxel (i, j, k))"``, or None."""
    finite = np.isfinite(arr)
    if finite.all():
        return None
    bad = np.argwhere(~finite)
    n_slices = len(np.unique(bad[:, 2]))
    return (f"{len(bad)} NaN/Inf voxel(s) in {n_slices} of {arr.shape[2]} slice(s) along index axis 2 "
            f"(first at voxel {tuple(int(v) for v in bad[0])})")


def _volume(x: VolumeLike, role: str) -> _Volume:
    if isinstance(x, (str, os.PathLike)):
        from monai_sr.io.nifti import NonFiniteError
        from monai_sr.pipeline import load_volume

        name = str(x)
        try:
            x = load_volume(x)
        except NonFiniteError as exc:  # the reader stops at the first block that holds any
            raise InputError(f"the {role} holds {exc.where}; {NON_FINITE_RULE}", path=name) from None
    elif isinstance(x, MetaTensor):
        name = str(x.meta.get("filename_or_obj") or role)
    else:
        raise TypeError(f"{role} must be a MetaTensor (channel-first, with an affine) or a path, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"{role} must be one channel-first 3D volume (1, X, Y, Z), got shape {tuple(x.shape)}", path=name)
    arr = np.asarray(x[0].detach().cpu().numpy(), dtype=np.float32)
    where = _non_finite(arr)
    if where is not None:
        raise InputError(f"the {role} holds {where}; {NON_FINITE_RULE}", path=name)
    return _Volume(arr, geometry.check_affine(np.asarray(x.affine, dtype=np.float64), orthogonal=False), dict(x.meta), name)


def default_slice_axis(volume: VolumeLike) -> tuple[int, str]:
    """The slice axis of the acquisition and the rule that chose it (see the module docstring)."""
    v = volume if isinstance(volume, _Volume) else _volume(volume, "volume")
    if v.is_dicom:
        return 2, "DICOM series: index axis 2 (across the slices)"
    sp = geometry.spacing_from_affine(v.affine)
    tied = [a for a in range(3) if sp[a] >= sp.max() * (1 - 1e-3)]
    axis = 2 if 2 in tied else max(tied)
    spacing = " x ".join(f"{s:.4g}" for s in sp)
    return axis, f"NIfTI: the axis with the largest spacing ({spacing} mm), ties to axis 2"


@dataclass
class ValidationResult:
    """What :func:`validate_volumes` measured; :func:`monai_sr.validation.report.write_report` writes it.

    Per-slice arrays have one value per slice along ``axis`` of the metric grid; ``metrics`` is None in
    ``qa`` mode. ``panels`` holds the montage images: name -> ``(len(worst), U, V)`` slices.
    """

    mode: str
    axis: int
    positions_mm: np.ndarray
    metrics: M.SliceMetrics | None
    flagged: np.ndarray
    reasons: list[str]
    stats: dict[str, np.ndarray]
    findings: list[Finding]
    files: dict[str, str | None]
    settings: dict
    worst: list[int]
    panels: dict[str, np.ndarray]
    display_range: tuple[float, float]
    pixel_spacing: tuple[float, float]
    notes: list[str] = field(default_factory=list)
    #: with an uncertainty map: ``file``, ``spearman`` (per slice, nan where undefined or no reference),
    #: ``whole_volume`` (:func:`~monai_sr.validation.uncertainty.rank_agreement`, reference mode) and ``rule``
    uncertainty: dict | None = None

    @property
    def n_slices(self) -> int:
        return int(self.positions_mm.size)

    def column(self, name: str) -> np.ndarray:
        """``psnr``, ``ssim``, ``nrmse`` (nan in ``qa`` mode) or ``mask_voxels``, one value per slice."""
        if self.metrics is None:
            return np.full(self.n_slices, np.nan)
        return np.asarray(getattr(self.metrics, name), dtype=np.float64)

    def rows(self) -> list[dict]:
        """One dict per slice: the columns of slices.csv."""
        cols = {k: self.column(k) for k in ("psnr", "ssim", "nrmse", "mask_voxels")}
        out = []
        for k in range(self.n_slices):
            row = {"slice": k, "position_mm": float(self.positions_mm[k])}
            row.update({c: float(cols[c][k]) for c in ("psnr", "ssim", "nrmse")})
            row["flagged"] = int(self.flagged[k])
            row["reason"] = self.reasons[k]
            row["mask_voxels"] = float(cols["mask_voxels"][k])
            row.update({s: float(self.stats[s][k]) for s in ("mean", "std", "min", "max")})
            if self.uncertainty is not None:
                row["uncertainty_spearman"] = float(self.uncertainty["spearman"][k])
            out.append(row)
        return out

    def means(self) -> dict[str, float]:
        """Mean of the per-slice values over the slices with foreground."""
        if self.metrics is None:
            return {}
        return {k: float(np.nanmean(self.column(k))) for k in ("psnr", "ssim", "nrmse")}

    def summary(self) -> dict:
        """The content of summary.json (non-finite numbers become null)."""
        def brief(k: int) -> dict:
            d = {"slice": int(k), "position_mm": float(self.positions_mm[k])}
            if self.metrics is not None:
                d.update({c: float(self.column(c)[k]) for c in ("psnr", "ssim", "nrmse")})
            if self.reasons[k]:
                d["reason"] = self.reasons[k]
            return d

        return {
            "software": {"name": "monai_sr", "version": __version__},
            "mode": self.mode,
            "files": dict(self.files),
            "n_slices": self.n_slices,
            "settings": dict(self.settings),
            "means_over_slices": self.means(),
            "whole_volume": self.metrics.pooled() if self.metrics is not None else {},
            "worst_slices": [brief(k) for k in self.worst],
            "flagged_slices": [brief(k) for k in np.flatnonzero(self.flagged)],
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),
            **({"uncertainty": self.uncertainty_summary()} if self.uncertainty is not None else {}),
        }

    def uncertainty_summary(self) -> dict:
        """The uncertainty part of summary.json: file, rule, mean / min of the per-slice Spearman (over the
        slices where it is defined) and the whole-volume figures."""
        u = self.uncertainty
        rho = np.asarray(u["spearman"], dtype=np.float64)
        ok = rho[np.isfinite(rho)]
        return {"file": u["file"], "rule": u["rule"], "slices_with_spearman": int(ok.size),
                "spearman_mean_over_slices": float(ok.mean()) if ok.size else None,
                "spearman_min_over_slices": float(ok.min()) if ok.size else None,
                "whole_volume": dict(u.get("whole_volume") or {})}

    def text(self) -> str:
        """A few lines for a terminal."""
        s = self.settings
        lines = [f"mode      {self.mode} ({self.n_slices} slices along axis {self.axis})"]
        if self.metrics is not None:
            m = self.means()
            lines.append(f"mean      PSNR {m['psnr']:.2f} dB   SSIM {m['ssim']:.4f}   NRMSE {m['nrmse']:.4f}   (over slices)")
            lines.append(f"range     {s['data_range']:.6g} ({s['data_range_rule']}); mask {s['mask']}")
            if s.get("resampled"):
                lines.append("resampled " + s["resampling"])
        flagged = np.flatnonzero(self.flagged)
        lines.append(f"flagged   {len(flagged)} slice(s)" + (f": {', '.join(map(str, flagged[:20]))}" if len(flagged) else ""))
        lines += [f"finding   slice {f.slice}: {f.message}" for f in self.findings[:20]]
        if self.uncertainty is not None:
            u, w = self.uncertainty_summary(), self.uncertainty.get("whole_volume") or {}
            text = f"map {u['file']}"
            if u["spearman_mean_over_slices"] is not None:
                text += (f"; Spearman with |error| per slice: mean {u['spearman_mean_over_slices']:.3f}, min "
                         f"{u['spearman_min_over_slices']:.3f}; whole volume {w['spearman']:.3f}, top-decile errors in its "
                         f"top decile {100 * w['top_decile_share']:.0f} % (chance 10 %)")
            lines.append(f"uncertain {text}")
        lines += [f"note      {n}" for n in self.notes]
        return "\n".join(lines)


def _mask(mask, target: _Volume | None, grid_shape, grid_affine, valid, source_name: str) -> tuple[np.ndarray, str]:
    if isinstance(mask, str) and mask in ("auto", "none"):
        if mask == "none":
            return valid.copy(), "none (every voxel" + (" inside the reference's field of view)" if not valid.all() else ")")
        m = M.head_mask(target.array) & valid
        return m, f"auto: head_mask of the {source_name} (above 10% of its 99th percentile, closed, holes filled, dilated 2 voxels)"
    mv = _volume(mask, "mask")
    if same_grid(mv.array.shape, mv.affine, grid_shape, grid_affine):
        m = mv.array > 0.5
    else:
        if overlap_fraction(mv.array.shape, mv.affine, grid_shape, grid_affine) == 0:
            raise GeometryError("the mask does not overlap the grid it is meant for", path=mv.name)
        m = resample_to_grid(mv.array, mv.affine, grid_shape, grid_affine, order=0, cval=0.0) > 0.5
    return m & valid, f"file {mv.name} (nonzero = inside)"


def _coarsening(pred: _Volume, low: _Volume) -> tuple[int, int, int]:
    ps, ls = np.asarray(pred.array.shape), np.asarray(low.array.shape)
    factors = ps / ls
    pair = f"input {low.name} ({' x '.join(map(str, ls))}) and prediction {pred.name} ({' x '.join(map(str, ps))})"
    if np.any(factors < 1) or np.any(np.abs(factors - np.round(factors)) > 1e-9):
        raise GeometryError(f"{pair}: the prediction grid must be the input grid refined by an integer factor per axis")
    s = tuple(int(round(f)) for f in factors)
    expected = geometry.coarsened_affine(pred.affine, s)
    off = float(np.abs(expected - low.affine).max())
    if off > 1e-2:
        raise GeometryError(f"{pair}: the input grid is not the prediction grid coarsened by {s} (affines differ by up to {off:.3g} mm)")
    return s


def _flags(res_metrics: M.SliceMetrics | None, findings: list[Finding], n: int) -> tuple[np.ndarray, list[str]]:
    flagged = np.zeros(n, dtype=bool)
    reasons = [[] for _ in range(n)]
    if res_metrics is not None:
        psnr = np.asarray(res_metrics.psnr, dtype=np.float64)
        scored = res_metrics.mask_voxels >= MIN_FOREGROUND * max(float(res_metrics.mask_voxels.max()), 1.0)
        z = M.robust_z(np.where(scored, psnr, np.nan), min_scale=FLAG_MIN_SCALE_DB)
        for k in np.flatnonzero(np.nan_to_num(z, nan=0.0) < FLAG_Z):
            flagged[k] = True
            reasons[k].append(f"PSNR {psnr[k]:.2f} dB, robust z {z[k]:.1f}")
    for f in findings:
        if f.slice is not None and 0 <= f.slice < n:
            flagged[f.slice] = True
            reasons[f.slice].append(f.message)
    return flagged, ["; ".join(r) for r in reasons]


def _take(vol: np.ndarray, axis: int, ks: list[int]) -> np.ndarray:
    return np.stack([np.take(vol, k, axis=axis) for k in ks]) if ks else np.zeros((0, 1, 1), np.float32)


def validate_volumes(
    prediction: VolumeLike,
    reference: VolumeLike | None = None,
    *,
    lowres: VolumeLike | None = None,
    axis: int | None = None,
    mask: str | VolumeLike = "auto",
    n_worst: int = 4,
    progress: Progress | None = None,
    uncertainty: str | VolumeLike | None = "auto",
) -> ValidationResult:
    """Validate ``prediction`` slice by slice (see the module docstring for the modes and rules).

    Args:
        prediction: the volume to judge: a channel-first MetaTensor with an affine, or a DICOM folder /
            NIfTI path.
        reference: the truth on any grid that overlaps the prediction's, or None.
        lowres: the low-resolution input the prediction was made from; with a reference it only joins the
            montage, without one the prediction is checked for consistency with it.
        axis: slice axis (0, 1, 2) of the metric grid; None picks the acquisition's slice axis.
        mask: ``"auto"``, ``"none"``, or a mask volume / path.
        n_worst: how many of the worst slices the montage shows.
        progress: ``progress(stage, done, total)``.
        uncertainty: an uncertainty map on the prediction's grid (MetaTensor or path), ``"auto"`` (the one
            beside a prediction path, if any) or None (see the module docstring).
    """
    if axis is not None and axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    pred = _volume(prediction, "prediction")
    ref = _volume(reference, "reference") if reference is not None else None
    low = _volume(lowres, "input") if lowres is not None else None
    notes: list[str] = []
    if isinstance(uncertainty, str) and uncertainty in ("auto", "none"):
        from monai_sr.validation.uncertainty import find_beside

        uncertainty = find_beside(prediction) if uncertainty == "auto" else None
        if uncertainty is not None:
            notes.append(f"uncertainty map found beside the prediction: {uncertainty}")
    unc = _volume(uncertainty, "uncertainty map") if uncertainty is not None else None
    if unc is not None and not same_grid(unc.array.shape, unc.affine, pred.array.shape, pred.affine):
        raise GeometryError(f"the uncertainty map is not on the prediction's grid ({pred.name}, "
                            f"{' x '.join(map(str, pred.array.shape))} voxels)", path=unc.name)
    files = {"prediction": pred.name, "reference": ref.name if ref else None, "input": low.name if low else None}
    settings: dict = {}
    findings: list[Finding] = []
    metrics = None
    panels: dict[str, np.ndarray] = {}

    if ref is not None:
        mode, grid = "reference", pred
    elif low is not None:
        mode, grid = "consistency", low
    else:
        mode, grid = "qa", pred
    shape, affine = grid.array.shape, grid.affine
    if axis is None:
        axis, rule = default_slice_axis(grid)
    else:
        rule = "given"
    settings.update(axis=axis, axis_rule=rule, grid=f"{'prediction' if grid is pred else 'input'} ({' x '.join(map(str, shape))} voxels)")

    if mode == "reference":
        resampled = not same_grid(ref.array.shape, ref.affine, shape, affine)
        if resampled:
            frac = overlap_fraction(ref.array.shape, ref.affine, shape, affine)
            if frac == 0:
                raise GeometryError(
                    f"does not overlap the prediction {pred.name}: no voxel of the prediction's grid lies in the "
                    "reference's field of view (both affines in RAS mm); nothing to compare",
                    path=ref.name,
                )
            truth = resample_to_grid(ref.array, ref.affine, shape, affine, order=1, progress=progress, stage="resample reference")
            valid = np.isfinite(truth)
            if not valid.any():
                raise GeometryError(f"does not overlap the prediction {pred.name}; nothing to compare", path=ref.name)
            truth[~valid] = 0.0
            outside = int((~valid).sum())
            if outside:
                notes.append(f"{outside} prediction voxels lie outside the reference's field of view and are left out")
            settings["resampling"] = (
                "the reference was resampled onto the prediction's grid, trilinear (scipy.ndimage.affine_transform, "
                "order 1); the index map prediction index -> mm -> reference index comes from the two affines"
            )
        else:
            truth, valid = ref.array, np.ones(shape, dtype=bool)
            settings["resampling"] = "none: the prediction and the reference share one grid"
        settings["resampled"] = resampled
        compared = pred.array
        m, mask_text = _mask(mask, _Volume(truth, affine, {}, ref.name), shape, affine, valid, "reference")
        range_rule = "reference max - min inside the mask"
    elif mode == "consistency":
        from monai_sr.transforms.kspace import fourier_resample

        s = _coarsening(pred, low)
        axes = [a for a in range(3) if s[a] > 1]
        degraded = fourier_resample(pred.array, [shape[a] for a in axes], axes).astype(np.float32) if axes else pred.array
        truth, compared = low.array, degraded
        valid = np.ones(shape, dtype=bool)
        settings.update(resampled=False, factors=list(s), resampling=(
            f"none for the input; the prediction was degraded back onto the input's grid by k-space truncation "
            f"(fourier_resample, factors {s}, grid from geometry.coarsened_affine)"))
        m, mask_text = _mask(mask, low, shape, affine, valid, "input")
        range_rule = "input max - min inside the mask"
    else:
        truth = compared = None
        m, mask_text = np.ones(shape, dtype=bool), "none (QA uses whole slices)"
        settings.update(resampled=False, resampling="none")

    settings["mask"] = mask_text
    settings["mask_voxels"] = int(m.sum())
    if truth is not None:
        if not m.any():
            raise InputError("the mask is empty: nothing to compare", path=grid.name)
        try:
            data_range = M.masked_data_range(truth, m)
        except ValueError as exc:
            raise InputError(str(exc), path=ref.name if ref is not None else low.name) from exc
        settings.update(data_range=data_range, data_range_rule=range_rule)
        metrics = M.slice_metrics(compared, truth, data_range=data_range, mask=m, axis=axis, progress=progress)
        settings.update(
            psnr="10 log10(data_range^2 / MSE), MSE over the mask voxels of the slice",
            ssim="MONAI's SSIM (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03) with the data range above, map averaged over the mask",
            nrmse="sqrt(sum (prediction - reference)^2) / sqrt(sum reference^2) over the mask voxels of the slice",
        )
    settings["flag_rule"] = FLAG_RULE if metrics is not None else "slices with a QA finding"

    if mode == "reference":
        stats = slice_statistics(pred.array, axis)
    else:
        qa_vol = low if mode == "consistency" else pred
        stats, findings = run_qa(qa_vol.array, axis, meta=qa_vol.meta)
        settings["qa"] = f"on the {'input' if qa_vol is low else 'prediction'}: see monai_sr.validation.qa (outliers |robust z| > 3.5 after a 5-slice running median)"
    positions = geometry.slice_positions(affine, shape, axis)
    flagged, reasons = _flags(metrics, findings, shape[axis])

    if metrics is not None:
        psnr = np.asarray(metrics.psnr)
        order = [int(k) for k in np.argsort(np.where(np.isnan(psnr), np.inf, psnr), kind="stable") if np.isfinite(psnr[k])]
        worst = order[:n_worst]
    else:
        z = np.fmax(np.abs(stats["z_mean"]), np.abs(stats["z_std"]))
        order = np.lexsort((-np.nan_to_num(z), ~flagged))
        worst = [int(k) for k in order[:n_worst]]

    # Montage images (only the worst slices): input, prediction, reference, difference.
    display_src = truth if truth is not None else grid.array
    inside = display_src[m] if m.any() else display_src.ravel()
    lo, hi = (float(v) for v in np.percentile(inside, [1, 99.5]))
    if mode == "reference":
        if low is not None:
            panels["input"] = _take(resample_to_grid(low.array, low.affine, shape, affine, axis=axis, slices=worst, cval=0.0), axis, list(range(len(worst))))
        panels["prediction"] = _take(pred.array, axis, worst)
        panels["reference"] = _take(truth, axis, worst)
        panels["difference"] = panels["prediction"] - panels["reference"]
    elif mode == "consistency":
        panels["input"] = _take(low.array, axis, worst)
        panels["prediction on input grid"] = _take(resample_to_grid(pred.array, pred.affine, shape, affine, axis=axis, slices=worst, cval=0.0), axis, list(range(len(worst))))
        panels["prediction degraded"] = _take(compared, axis, worst)
        panels["difference"] = panels["prediction degraded"] - panels["input"]
    else:
        panels["prediction"] = _take(pred.array, axis, worst)
    unc_info = None
    if unc is not None:
        from monai_sr.validation.uncertainty import rank_agreement, slice_spearman

        if grid is pred:
            panels["uncertainty"] = _take(unc.array, axis, worst)
        else:  # consistency mode: drawn on the input's grid, as the prediction is
            panels["uncertainty"] = _take(resample_to_grid(unc.array, unc.affine, shape, affine, axis=axis, slices=worst, cval=0.0), axis, list(range(len(worst))))
        rho = np.full(shape[axis], np.nan)
        whole = {}
        if mode == "reference":
            err = np.abs(pred.array.astype(np.float64) - truth)
            rho = slice_spearman(unc.array, err, m, axis)
            whole = rank_agreement(unc.array[m], err[m])
            rule = ("Spearman rank correlation between the map and |prediction - reference| over the mask voxels of each "
                    "slice (nan with fewer than 50 voxels); whole volume: the same over all mask voxels, and the share of the "
                    "10 % largest errors lying in the map's top decile (chance: 10 %)")
        else:
            rule = "no reference: the map is drawn, no correlation with the error is defined"
            notes.append("uncertainty map: no reference, so its agreement with the error is not measured")
        unc_info = {"file": unc.name, "spearman": rho, "whole_volume": whole, "rule": rule}
        files["uncertainty"] = unc.name
    sp = geometry.spacing_from_affine(affine)
    inplane = tuple(float(sp[a]) for a in range(3) if a != axis)

    return ValidationResult(
        mode=mode, axis=axis, positions_mm=positions, metrics=metrics, flagged=flagged, reasons=reasons,
        stats=stats, findings=findings, files=files, settings=settings, worst=worst, panels=panels,
        display_range=(lo, hi if hi > lo else lo + 1.0), pixel_spacing=inplane, notes=notes, uncertainty=unc_info,
    )

