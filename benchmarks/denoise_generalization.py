"""Denoising bundle vs DIPY nlmeans on held-out scans of other subjects, contrasts, resolutions and vendors.

Every held-out volume of :func:`benchmarks.generalization.held_out` (25 axial 1 mm slices of Colin27 and
pycortex S1, a Philips shoulder slice at 0.195 mm, a Siemens abdomen slice, and synthetic T2-, PD- and
FLAIR-like remaps of Colin27 and S1, named as such), plus thick-slice versions made with the library's
slice-profile transform (:class:`monai_sr.transforms.lowres.SimulateLowResolution`, rect profile: the
mean of ``k`` consecutive 1 mm slices, affine scaled along z): Colin27 T1 at 5 mm, S1 T1 at 4 mm and a
synthetic FLAIR-like Colin27 at 6 mm (24 thick slices each). None of them is used for training or
model selection (``data_specs/shared_data.json``).

Each volume gets Rician noise ``|x + n_re + i n_im|`` with ``sigma = level x bright``, bright = the
clean volume's 99.5th percentile (:func:`monai_sr.transforms.intensity.robust_max`), for each
``--levels`` (default 3%, 5%, 8%), seed fixed per volume and level
(:func:`monai_sr.transforms.artefacts.rician_noise`). The noisy volume is written as NIfTI with its
affine and the bundle runs end to end on it (``configs/inference.json`` through MONAI's ConfigWorkflow,
NIfTI in and out, :func:`benchmarks.denoise_vs_nlmeans.run_bundle`), once per method (``default``: the
bundle as shipped; ``--method NAME='JSON'``: config overrides, e.g. ``'{"plane_axes": [0, 1, 2]}'``;
``'{"noise_sigma": "true"}'`` gives the bundle the true sigma of each case, as the nlmeans baseline is).
Baselines: DIPY ``nlmeans(noisy, sigma, rician=True)`` (its defaults; ``--nlmeans-method classic`` for
the algorithm DIPY's ``nlmeans`` ran before 1.12) with the TRUE sigma (an oracle)
and with DIPY's own ``estimate_sigma(noisy, N=1)``. PSNR inside the foreground of the clean volume
(:func:`monai_sr.validation.metrics.head_mask`, ``planar=True``), ``data_range`` = bright.

Table: per volume and level, PSNR of nlmeans (true sigma) and each method's gain over it; the mean and
the minimum over all cases, and over the real ones. nlmeans results are cached in ``--cache`` (they do
not depend on the bundle).

Run (1 thread)::

    .venv/bin/python -m benchmarks.denoise_generalization --json runs/denoise_gen/default.json
    .venv/bin/python -m benchmarks.denoise_generalization --method three_planes='{"plane_axes": [0, 1, 2]}' --levels 0.05
    .venv/bin/python -m benchmarks.denoise_generalization --merge runs/denoise_gen/a.json runs/denoise_gen/b.json  # same cases, methods side by side
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from benchmarks.denoise_vs_nlmeans import run_bundle
from benchmarks.generalization import REMAPS, _ras, held_out
from monai_sr import geometry
from monai_sr.training.datasets import shared_data_dir, verified_path
from monai_sr.training.synth import ContrastRandomiser
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.lowres import SimulateLowResolution
from monai_sr.validation.metrics import head_mask, psnr

REPO = Path(__file__).resolve().parents[1]
LEVELS = (0.03, 0.05, 0.08)
N_THICK = 24
#: (name, file, slice thickness in mm (1 mm slices averaged), remap or None)
THICK = (
    ("Colin27 T1, 5 mm slices", "colin27_t1_1mm.nii.gz", 5, None),
    ("S1 T1, 4 mm slices", "pycortex_S1_T1.nii.gz", 4, None),
    ("Colin27 FLAIR-like, 6 mm slices", "colin27_t1_1mm.nii.gz", 6, "FLAIR-like"),
)


def thick_slices(vol: np.ndarray, affine: np.ndarray, k: int, n: int = N_THICK) -> tuple[np.ndarray, np.ndarray]:
    """``n`` slices of ``k`` mm (rect profile: the mean of ``k`` consecutive 1 mm slices) around 60 % of
    the height, in-plane sizes cut to even; the affine of the thick grid (scaled along z)."""
    z0 = max(0, int(0.6 * vol.shape[2]) - n * k // 2)
    sub = np.ascontiguousarray(vol[: vol.shape[0] // 2 * 2, : vol.shape[1] // 2 * 2, z0 : z0 + n * k])
    aff = geometry.cropped_affine(affine, (0, 0, z0))
    img = MetaTensor(torch.from_numpy(sub[None]), affine=torch.as_tensor(aff))
    out = SimulateLowResolution((1, 1, k), slice_axis=2, slice_profile="rect")(img)
    return np.ascontiguousarray(out[0].numpy().astype(np.float32)), np.asarray(out.affine, dtype=np.float64)


def volumes(data_dir: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, clean (X, Y, Z), affine)``: :func:`benchmarks.generalization.held_out` and the thick-slice ones."""
    vols = list(held_out(data_dir))
    for name, file, k, remap in THICK:
        vol, aff = _ras(verified_path(file, data_dir))
        if remap is not None:
            vol = ContrastRandomiser.apply_lut(vol, np.asarray(REMAPS[remap])) * 1000.0
        thick, taff = thick_slices(vol, aff, k)
        vols.append((name, "synthetic" if remap else "real", thick, taff))
    return vols


def nlmeans_scores(noisy, clean, mask, bright, sigma, threads, method: str = "blockwise") -> dict[str, float]:
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    est = float(np.mean(estimate_sigma(noisy, N=1)))
    out = {"sigma_dipy_pct": 100 * est / bright}
    for key, s in (("nlmeans_true", sigma), ("nlmeans_dipy", est)):
        t0 = time.perf_counter()
        den = np.asarray(nlmeans(noisy, sigma=s, rician=True, num_threads=threads, method=method), dtype=np.float64)
        out[key] = psnr(den, clean, data_range=bright, mask=mask)
        out[key + "_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="shared data folder (default $MONAI_SR_DATA)")
    p.add_argument("--levels", type=float, nargs="+", default=list(LEVELS), help="sigma as fractions of the bright signal")
    p.add_argument("--method", action="append", default=[], metavar="NAME='JSON'", help="bundle config overrides as JSON")
    p.add_argument("--no-default", action="store_true", help="skip the bundle as shipped")
    p.add_argument("--volumes", nargs="*", default=None, help="substrings of the volume names to run (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nlmeans-method", choices=("blockwise", "classic"), default="blockwise",
                   help="DIPY's nlmeans algorithm for the baselines (blockwise: DIPY 1.12's default; classic: "
                        "DIPY's nlmeans before 1.12, about 30x slower and 1-2 dB stronger on brain volumes)")
    p.add_argument("--cache", default=str(REPO / "runs/denoise_gen/nlmeans_cache.json"), help="nlmeans scores cache")
    p.add_argument("--json", default=None)
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="only print the table of these results together")
    args = p.parse_args(argv)
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        by_case: dict[tuple, dict] = {}  # the same case in two runs (other methods): one row with both
        for r in (r for run in runs for r in run["rows"]):
            row = by_case.setdefault((r["volume"], r["level"]), {**r, "psnr": {}, "gain_db": {}, "seconds": {}})
            for key in ("psnr", "gain_db", "seconds"):
                row[key].update(r[key])
        rows = sorted(by_case.values(), key=lambda r: (r["kind"] != "real", r["volume"], r["level"]))
        methods = list(dict.fromkeys(m for run in runs for m in run["methods"]))
        names = [m for m in methods if all(m in r["gain_db"] for r in rows)]  # those every case has
        lines, summary = table(rows, names)
        print("\n".join(lines))
        return {"rows": rows, "summary": summary}
    torch.set_num_threads(args.threads)
    methods: dict[str, dict] = {} if args.no_default else {"default": {}}
    for spec in args.method:
        name, _, opts = spec.partition("=")
        methods[name] = json.loads(opts) if opts else {}
    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vi, (name, kind, clean, affine) in enumerate(volumes(data_dir)):
            if args.volumes and not any(s.lower() in name.lower() for s in args.volumes):
                continue
            bright = float(robust_max(clean))
            mask = head_mask(clean.astype(np.float64), planar=True)
            spacing = geometry.spacing_from_affine(affine)
            for level in args.levels:
                sigma = level * bright
                seed = [2026, vi, int(round(level * 1000))]
                noisy = rician_noise(clean, sigma, np.random.default_rng(seed)).astype(np.float32)
                key = f"{name}|{level:.4f}|{clean.shape}" + ("" if args.nlmeans_method == "blockwise" else f"|{args.nlmeans_method}")
                if key not in cache:
                    cache[key] = nlmeans_scores(noisy, clean, mask, bright, sigma, args.threads, args.nlmeans_method)
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    cache_path.write_text(json.dumps(cache, indent=1))
                base = cache[key]
                case = Path(tmp) / f"in{vi}_{level}" / "case.nii.gz"
                case.parent.mkdir(parents=True, exist_ok=True)
                nib.save(nib.Nifti1Image(noisy, affine), str(case))
                row = {"volume": name, "kind": kind, "shape": list(clean.shape), "spacing": [round(float(s), 3) for s in spacing],
                       "level": level, "psnr_noisy": psnr(noisy, clean, data_range=bright, mask=mask), **base,
                       "psnr": {}, "gain_db": {}, "seconds": {}, "report": {}}
                for m, overrides in methods.items():
                    out_dir = Path(tmp) / f"out{vi}_{level}_{m}"
                    given = {k: (sigma if (k, v) == ("noise_sigma", "true") else v) for k, v in overrides.items()}
                    vol, report, seconds = run_bundle(case, out_dir, **given)
                    score = psnr(vol.reshape(clean.shape).astype(np.float64), clean, data_range=bright, mask=mask)
                    row["psnr"][m] = score
                    row["gain_db"][m] = score - base["nlmeans_true"]
                    row["seconds"][m] = seconds
                    row["report"][m] = report.split(": ", 1)[-1]
                rows.append(row)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "report"}), flush=True)

    lines, summary = table(rows, list(methods))
    print("\n".join(lines))
    result = {"rows": rows, "summary": summary, "methods": methods, "levels": args.levels,
              "nlmeans_method": args.nlmeans_method}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(rows: list[dict], names: list[str]) -> tuple[list[str], dict]:
    """Markdown table (one row per volume and level, then mean and minimum per kind) and the summary."""
    lines = ["| volume | kind | voxel (mm) | level | noisy dB | nlmeans true-sigma dB | nlmeans DIPY-sigma vs true | "
             + " | ".join(f"{m} vs nlmeans true" for m in names) + " | " + " | ".join(f"{m} s" for m in names) + " |",
             "|" + "---|" * (7 + 2 * len(names))]
    for r in rows:
        lines.append(f"| {r['volume']} | {r['kind']} | {' x '.join(f'{s:g}' for s in r['spacing'])} | {100 * r['level']:g}% | "
                     f"{r['psnr_noisy']:.2f} | {r['nlmeans_true']:.2f} | {r['nlmeans_dipy'] - r['nlmeans_true']:+.2f} | "
                     + " | ".join(f"{r['gain_db'][m]:+.2f}" for m in names) + " | "
                     + " | ".join(f"{r['seconds'][m]:.1f}" for m in names) + " |")
    summary = {}
    for kind in ("real", "synthetic", "all"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not sel:
            continue
        summary[kind] = {m: {"mean": float(np.mean([r["gain_db"][m] for r in sel])), "min": float(np.min([r["gain_db"][m] for r in sel]))}
                         for m in names}
        summary[kind]["nlmeans_dipy"] = {"mean": float(np.mean([r["nlmeans_dipy"] - r["nlmeans_true"] for r in sel])),
                                         "min": float(np.min([r["nlmeans_dipy"] - r["nlmeans_true"] for r in sel]))}
        for stat in ("mean", "min"):
            lines.append(f"| **{stat} ({kind}, {len(sel)} cases)** | | | | | | {summary[kind]['nlmeans_dipy'][stat]:+.2f} | "
                         + " | ".join(f"{summary[kind][m][stat]:+.2f}" for m in names) + " |" + " |" * len(names))
    return lines, summary


if __name__ == "__main__":
    main()
