"""Write a :class:`~monai_sr.validation.validate.ValidationResult` as a report folder, atomically.

``REPORT_DIR/``

* ``slices.csv`` one row per slice: ``slice, position_mm, psnr, ssim, nrmse, flagged, reason,
  mask_voxels, mean, std, min, max`` (empty cell = not defined, e.g. no foreground; ``mean`` .. ``max``
  are whole-slice intensity statistics of the prediction, or of the QA'd volume without a reference),
  and ``uncertainty_spearman`` when an uncertainty map was given (its Spearman correlation with the
  absolute error in the slice);
* ``summary.json`` means, whole-volume values, worst and flagged slices, findings, every setting
  (axis, mask, data range, resampled or not, the rules), the figure sizes and the monai_sr version;
* ``metrics.png`` the per-slice curves, flagged slices marked;
* ``worst_slices.png`` the worst slices side by side (input, prediction, reference, difference, and the
  uncertainty map when one was given, on its own 0 .. 99.5th percentile scale);
* ``index.html`` all of it on one page, relative links only, no external resources.

Matplotlib draws with its Agg backend through :class:`matplotlib.figure.Figure` (no pyplot state), at
a fixed size in pixels, stated in summary.json and in the page.
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from pathlib import Path

import numpy as np

from monai_sr.io.atomic import atomic_output
from monai_sr.validation.validate import FLAG_Z, ValidationResult

__all__ = ["write_report", "CSV_COLUMNS", "DPI"]

CSV_COLUMNS = ("slice", "position_mm", "psnr", "ssim", "nrmse", "flagged", "reason", "mask_voxels", "mean", "std", "min", "max")
DPI = 100
CURVE_SIZE = (1200, 900)  # pixels
CELL = 300  # pixels per montage image


def _cell(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.6g}"
    return str(v)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def _figure(size_px: tuple[int, int]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _curves(result: ValidationResult, path: Path) -> tuple[int, int]:
    fig = _figure(CURVE_SIZE)
    k = np.arange(result.n_slices)
    flagged = np.flatnonzero(result.flagged)
    if result.metrics is not None:
        series = [("PSNR (dB)", result.column("psnr")), ("SSIM", result.column("ssim")), ("NRMSE", result.column("nrmse"))]
    else:
        series = [("slice mean", result.stats["mean"]), ("slice std", result.stats["std"])]
    if result.uncertainty is not None and np.isfinite(result.uncertainty["spearman"]).any():
        series.append(("Spearman(map, |error|)", result.uncertainty["spearman"]))
    axes = fig.subplots(len(series), 1, sharex=True)
    for ax, (label, y) in zip(axes, series):
        ax.plot(k, y, "-", color="tab:blue", lw=1.2, marker="." if result.n_slices <= 120 else None)
        if flagged.size:
            ax.plot(flagged, np.asarray(y)[flagged], "o", color="tab:red", ms=6, label="flagged")
            for f in flagged:
                ax.axvline(f, color="tab:red", alpha=0.15, lw=2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if result.metrics is not None:
        psnr = result.column("psnr")
        finite = psnr[np.isfinite(psnr)]
        if finite.size:
            axes[0].axhline(float(np.median(finite)), color="grey", lw=1, ls="--", label="median")
    if flagged.size or result.metrics is not None:
        axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel(f"slice index along axis {result.axis}")
    title = {"reference": "prediction vs reference", "consistency": "degraded prediction vs input", "qa": "slice statistics"}[result.mode]
    axes[0].set_title(f"{title}: {len(flagged)} flagged slice(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return CURVE_SIZE


def _montage(result: ValidationResult, path: Path) -> tuple[int, int]:
    names = list(result.panels)
    rows = max(1, len(result.worst))
    size = (CELL * len(names), CELL * rows)
    fig = _figure(size)
    lo, hi = result.display_range
    su, sv = result.pixel_spacing
    for r in range(rows):
        for c, name in enumerate(names):
            ax = fig.add_axes((c / len(names), 1 - (r + 1) / rows, 1 / len(names), 1 / rows))
            ax.set_axis_off()
            if not result.worst:
                ax.text(0.5, 0.5, "no slice to show", ha="center", va="center")
                continue
            img = result.panels[name][r].T
            if name == "difference":  # each row its own symmetric scale, written on the image
                dmax = max(float(np.percentile(np.abs(img), 99.5)), 1e-6 * (hi - lo))
                ax.imshow(img, cmap="RdBu_r", vmin=-dmax, vmax=dmax, origin="lower", aspect=sv / su, interpolation="nearest")
            elif name == "uncertainty":  # each row its own scale from 0, written on the image
                dmax = max(float(np.percentile(img, 99.5)), 1e-6 * (hi - lo))
                ax.imshow(img, cmap="magma", vmin=0.0, vmax=dmax, origin="lower", aspect=sv / su, interpolation="nearest")
            else:
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=sv / su, interpolation="nearest")
            k = result.worst[r]
            label = f"{name}, slice {k}"
            if result.metrics is not None and c == 0:
                label += f"\nPSNR {result.column('psnr')[k]:.2f} dB, SSIM {result.column('ssim')[k]:.3f}"
            if name == "difference":
                label += f"\n(+/- {dmax:.3g})"
            elif name == "uncertainty":
                label += f"\n(0 .. {dmax:.3g})"
                rho = result.uncertainty["spearman"][k]
                if np.isfinite(rho):
                    label += f", Spearman {rho:.2f}"
            ax.text(0.02, 0.98, label, transform=ax.transAxes, va="top", ha="left", fontsize=8, color="yellow",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 2, "lw": 0})
    fig.savefig(path, dpi=DPI, facecolor="black")
    return size


def _html(result: ValidationResult, summary: dict, figures: dict[str, list[int]]) -> str:
    e = html.escape
    s = summary["settings"]
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>" for k, v in s.items())
    files = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary["files"].items() if v)
    means = summary["means_over_slices"]
    head = (
        f"<p class=big>mean over slices: PSNR <b>{means['psnr']:.2f} dB</b>, SSIM <b>{means['ssim']:.4f}</b>, "
        f"NRMSE <b>{means['nrmse']:.4f}</b></p>" if means else ""
    )
    flagged = summary["flagged_slices"]
    flag_items = "".join(
        f"<li>slice {f['slice']} ({f['position_mm']:.1f} mm): {e(f.get('reason', ''))}</li>" for f in flagged
    ) or "<li>none</li>"
    notes = "".join(f"<li>{e(n)}</li>" for n in summary["notes"])
    unc = ""
    if "uncertainty" in summary:
        u = summary["uncertainty"]
        w = u["whole_volume"]
        unc = f"<h2>Uncertainty map</h2><p>{e(str(u['file']))}: drawn next to the difference in the montage.</p>"
        if u["spearman_mean_over_slices"] is not None:
            unc += (f"<p class=big>Spearman correlation with |error|: mean over slices <b>{u['spearman_mean_over_slices']:.3f}</b> "
                    f"(lowest {u['spearman_min_over_slices']:.3f}); whole volume <b>{w['spearman']:.3f}</b>; "
                    f"{100 * w['top_decile_share']:.0f} % of the top-decile errors lie in its top decile (chance: 10 %).</p>")
        unc += f"<p>{e(u['rule'])}.</p>"
    imgs = "".join(
        f'<figure><img src="{name}" width="{w}" height="{h}" alt="{name}"><figcaption>{name} ({w} x {h} px)</figcaption></figure>'
        for name, (w, h) in figures.items()
    )
    # The check at the bottom writes how many images decoded into the page (read by the tests).
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>monai_sr validation: {e(result.files['prediction'] or '')}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; max-width: 1250px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ text-align: left; padding: 2px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }}
img {{ max-width: 100%; height: auto; border: 1px solid #ccc; }} .big {{ font-size: 1.2em; }} .flag {{ color: #b00; }}
</style></head><body>
<h1>Slice-by-slice validation ({e(result.mode)})</h1>
<p>monai_sr {e(summary['software']['version'])}, {result.n_slices} slices along axis {result.axis}.
Flag rule (<span class=flag>red</span> in the plots): {e(s['flag_rule'])}.</p>
{head}
<h2>Flagged slices ({len(flagged)})</h2><ul class=flag>{flag_items}</ul>
{imgs}
{unc}
<h2>Files</h2><table>{files}</table>
<h2>Settings</h2><table>{rows}</table>
{'<h2>Notes</h2><ul>' + notes + '</ul>' if notes else ''}
<p>Per-slice numbers: <a href="slices.csv">slices.csv</a>; everything above: <a href="summary.json">summary.json</a>.</p>
<p id="image-check" data-loaded="pending">checking images</p>
<script>
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  var p = document.getElementById("image-check");
  p.dataset.loaded = ok + "/" + imgs.length;
  p.textContent = ok + " of " + imgs.length + " images loaded";
}});
</script>
</body></html>
"""


def write_report(result: ValidationResult, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write slices.csv, summary.json, metrics.png, worst_slices.png and index.html into a new folder
    ``out_dir`` (atomically: nothing is left there on error; an existing folder only with ``overwrite``)."""
    out_dir = Path(out_dir)
    with atomic_output(out_dir, is_dir=True, overwrite=overwrite) as tmp:
        columns = CSV_COLUMNS + (("uncertainty_spearman",) if result.uncertainty is not None else ())
        with open(tmp / "slices.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for row in result.rows():
                w.writerow([_cell(row[c]) for c in columns])
        figures = {
            "metrics.png": list(_curves(result, tmp / "metrics.png")),
            "worst_slices.png": list(_montage(result, tmp / "worst_slices.png")),
        }
        summary = result.summary()
        summary["figures"] = {k: {"width": v[0], "height": v[1]} for k, v in figures.items()}
        summary["settings"]["flag_threshold_z"] = FLAG_Z
        (tmp / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
        (tmp / "index.html").write_text(_html(result, summary, figures))
    return out_dir
