"""In-plane x2 SR on held-out scans of other subjects, contrasts, anatomy and vendors, through the CLI.

Each volume (from the shared data folder, ``$MONAI_SR_DATA``) is made low-resolution the way a scanner with
half the matrix over the same field of view measures it: k-space truncated x2 in-plane with the
field-of-view rule (:class:`monai_sr.transforms.kspace.KSpaceTruncation`), written as NIfTI. Then
``monai-sr enhance LR.nii.gz SR.nii.gz`` runs as a whole process once per method (default, ``--fast``,
and any ``--method NAME='ARGS'``), its output is checked to lie on the reference grid, and every result
is scored against the reference inside the foreground (:func:`monai_sr.validation.metrics.head_mask`,
``planar=True``), data range = reference max - min, next to bicubic and zero-filled k-space
interpolation of the same input (the free physics baseline). Gains are over zero-filled; "min slice" is
the smallest per-slice gain of that volume.

Volumes (25 slices of each 3D scan; the 2D scans are single slices). Since mri_sr_unet 0.5.0 the bundle
trains on S1, the shoulder and the abdomen (:data:`TRAINED_ON`; ``data_specs/shared_data.json``): their
rows, and those of S1's remaps, say how well it fits its training scans and are marked "trained on";
the held-out estimate for them is each one's cross-validation fold (``--fold NAME=WEIGHTS``: those
rows run with a network trained without that scan, ``benchmarks/cv_weights/``, see
``bundles/mri_sr_unet/docs/training.md``). Colin27 and its remaps are never trained on; the summary's
"held out" rows average the rows not marked "trained on" (fold rows included).

* real: Colin27 T1 (Debian ``mricron-data``), pycortex S1 T1 (another subject and scanner), a Philips
  shoulder T1 spin-echo slice at 0.195 mm and a Siemens abdomen T1 VIBE slice (``pydicom-data``);
* synthetic (named as such): Colin27 and S1 under fixed T2-, PD- and FLAIR-like intensity remaps
  (:meth:`monai_sr.training.synth.ContrastRandomiser.apply_lut`).

A timing row runs a 256 x 256 x 25 input (S1's own slices, not scored) through each method.

Examples::

    python benchmarks/generalization.py                                   # default and --fast
    python benchmarks/generalization.py --method plain='--set data_consistency=false --set self_ensemble=none --fast'
    python benchmarks/generalization.py --json out/generalization.json --keep out/generalization
    python benchmarks/generalization.py --fold S1=benchmarks/cv_weights/mri_sr_unet_without_S1.pt \
        --fold shoulder=benchmarks/cv_weights/mri_sr_unet_without_shoulder.pt \
        --fold abdomen=benchmarks/cv_weights/mri_sr_unet_without_abdomen.pt   # cross-validated
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from monai_sr import geometry
from monai_sr.inference.baselines import bicubic, zero_filled
from monai_sr.training.datasets import shared_data_dir, verified_path
from monai_sr.training.synth import ContrastRandomiser
from monai_sr.transforms.kspace import KSpaceTruncation
from monai_sr.validation.metrics import head_mask, psnr

#: Fixed remaps at :data:`monai_sr.training.synth.LUT_KNOTS` (T1 / its 99th percentile): air, CSF, GM, WM, fat.
REMAPS = {
    "T2-like": [0.0, 0.3, 0.95, 0.9, 0.7, 0.6, 0.45, 0.4, 0.5],
    "PD-like": [0.0, 0.3, 0.7, 0.8, 0.85, 0.8, 0.7, 0.65, 0.7],
    "FLAIR-like": [0.0, 0.1, 0.15, 0.3, 0.7, 0.8, 0.6, 0.5, 0.55],
}
N_SLICES = 25
#: First word of the volume names (:func:`held_out`; S1's remaps included) whose scans the shipped
#: mri_sr_unet weights were trained on since 0.5.0.
TRAINED_ON = ("S1", "shoulder", "abdomen")


def trained_on(name: str) -> bool:
    """Whether the volume ``name`` (a row of :func:`held_out`) or the scan it was remapped from is in
    the shipped mri_sr_unet's training data."""
    return name.split()[0] in TRAINED_ON


def _ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def _axial(vol: np.ndarray, affine: np.ndarray, n: int = N_SLICES) -> tuple[np.ndarray, np.ndarray]:
    """``n`` contiguous axial slices around 60 % of the height, in-plane sizes cut to even (affine kept)."""
    z0 = max(0, int(0.6 * vol.shape[2]) - n // 2)
    out = vol[: vol.shape[0] // 2 * 2, : vol.shape[1] // 2 * 2, z0 : z0 + n]
    aff = geometry.cropped_affine(affine, (0, 0, z0))
    return np.ascontiguousarray(out), aff


def held_out(data_dir: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, kind, hr (X, Y, Z), affine)`` for every held-out volume (kind: real or synthetic)."""
    vols = []
    for name, file in (("Colin27 T1", "colin27_t1_1mm.nii.gz"), ("S1 T1", "pycortex_S1_T1.nii.gz")):
        hr, aff = _axial(*_ras(verified_path(file, data_dir)))
        vols.append((name, "real", hr, aff))
    for name, file in (("shoulder T1 SE (Philips, 2D)", "pydicomdata_MR2_UNCR_shoulder_T1SE_2D.nii.gz"),
                       ("abdomen T1 VIBE (Siemens, 2D)", "pydicomdata_MR-SIEMENS_abdomen_T1vibe_2D.nii.gz")):
        img = nib.load(str(verified_path(file, data_dir)))
        hr = np.asarray(img.dataobj, dtype=np.float32)
        vols.append((name, "real", np.ascontiguousarray(hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]), img.affine))
    for base in ("Colin27 T1", "S1 T1"):
        _, _, hr, aff = next(v for v in vols if v[0] == base)
        for contrast, lut in REMAPS.items():
            if base == "S1 T1" and contrast == "PD-like":
                continue
            remapped = ContrastRandomiser.apply_lut(hr, np.asarray(lut)) * 1000.0
            vols.append((f"{base.split()[0]} {contrast}", "synthetic", remapped, aff))
    return vols


def _save(vol: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), str(path))


def run_cli(args: list[str]) -> tuple[float, list[str]]:
    """Run ``python -m monai_sr enhance ...`` as a whole process; its wall time in seconds and its notes."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "monai_sr", "enhance", *args, "--quiet"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"monai-sr enhance {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return seconds, [line.split(None, 1)[1] for line in proc.stdout.splitlines() if line.startswith("note")]


def slice_psnrs(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float) -> np.ndarray:
    return np.array([psnr(pred[..., k], ref[..., k], data_range=data_range, mask=mask[..., k])
                     for k in range(ref.shape[2]) if mask[..., k].any()])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="shared data folder (default $MONAI_SR_DATA)")
    p.add_argument("--method", action="append", default=[], metavar="NAME='ARGS'",
                   help="another method: a name and the monai-sr enhance options it adds")
    p.add_argument("--only", nargs="*", default=None, help="names of the methods to run (default: all)")
    p.add_argument("--volumes", nargs="*", default=None, metavar="TEXT",
                   help="score only the volumes whose name contains one of these (case-insensitive; default: all)")
    p.add_argument("--fold", action="append", default=[], metavar="NAME=WEIGHTS",
                   help="cross-validation: for the volumes whose name starts with NAME (S1, shoulder, abdomen), every "
                        "method runs with --set ckpt_path=WEIGHTS, a network trained without that scan")
    p.add_argument("--no-timing", action="store_true", help="skip the 256 x 256 x 25 timing row")
    p.add_argument("--keep", default=None, help="keep the LR inputs and SR outputs in this folder")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    methods = {"default": [], "fast": ["--fast"]}
    for spec in args.method:
        name, _, opts = spec.partition("=")
        methods[name] = shlex.split(opts)
    if args.only:
        methods = {k: v for k, v in methods.items() if k in args.only}
    folds: dict[str, Path] = {}  # first word of a volume name -> the weights of its fold
    for spec in args.fold:
        name, sep, weights = spec.partition("=")
        if not sep or name not in TRAINED_ON or not Path(weights).is_file():
            p.error(f"--fold {spec!r}: expected NAME=WEIGHTS with NAME one of {TRAINED_ON} and WEIGHTS an existing file")
        folds[name] = Path(weights).resolve()
    data_dir = Path(args.data_dir) if args.data_dir else shared_data_dir()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="generalization_"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the in-process baselines; the CLI runs use the machine as a user's would

    rows = []
    for i, (name, kind, hr, affine) in enumerate(held_out(data_dir)):
        if args.volumes and not any(t.lower() in name.lower() for t in args.volumes):
            continue
        lr_img = KSpaceTruncation(factors=(2, 2), axes=(0, 1))(MetaTensor(torch.from_numpy(hr[None]), affine=torch.as_tensor(affine)))
        lr = lr_img[0].numpy()
        lr_path = work / f"case{i}_lr.nii.gz"
        _save(lr, np.asarray(lr_img.affine), lr_path)
        ref = hr.astype(np.float64)
        mask = head_mask(ref, planar=True)
        data_range = float(ref.max() - ref.min())
        preds = {"zero-filled": zero_filled(lr, 2), "bicubic": bicubic(lr, 2)}
        seconds, notes = {}, {}
        fold = folds.get(name.split()[0])
        fold_opts = ["--set", f"ckpt_path={fold}"] if fold else []
        for method, opts in methods.items():
            out = work / f"case{i}_{method}.nii.gz"
            seconds[method], notes[method] = run_cli([str(lr_path), str(out), "--overwrite", *opts, *fold_opts])
            img = nib.load(str(out))
            if img.shape[:3] != ref.shape or not np.allclose(img.affine, affine, atol=1e-3):
                raise SystemExit(f"{out}: not on the reference grid ({img.shape} vs {ref.shape})")
            preds[method] = np.asarray(img.dataobj, dtype=np.float64).reshape(ref.shape)
        scores = {m: psnr(v, ref, data_range=data_range, mask=mask) for m, v in preds.items()}
        zf_slices = slice_psnrs(preds["zero-filled"], ref, mask, data_range)
        row = {"volume": name, "kind": kind, "trained_on": trained_on(name) and fold is None,
               "fold_weights": str(fold) if fold else None, "shape": list(ref.shape), "psnr_zero_filled": round(scores["zero-filled"], 3),
               "gain_db": {m: round(scores[m] - scores["zero-filled"], 3) for m in preds if m != "zero-filled"},
               "min_slice_gain_db": {m: round(float(np.min(slice_psnrs(preds[m], ref, mask, data_range) - zf_slices)), 3) for m in methods},
               "seconds": {m: round(s, 1) for m, s in seconds.items()}, "notes": notes}
        rows.append(row)
        print(json.dumps(row), flush=True)

    timing = {}
    if not args.no_timing:
        s1 = next(v for v in held_out(data_dir) if v[0] == "S1 T1")
        timing_in = work / "timing_256x256x25.nii.gz"
        _save(s1[2][:256, :256], s1[3], timing_in)
        timing = {m: round(run_cli([str(timing_in), str(work / f"timing_{m}.nii.gz"), "--overwrite", *o])[0], 1)
                  for m, o in methods.items()}

    names = ["bicubic", *methods]
    lines = ["| volume | kind | zero-filled dB | " + " | ".join(f"{m} dB vs zero-filled" for m in names)
             + " | " + " | ".join(f"{m} min slice" for m in methods) + " | " + " | ".join(f"{m} s" for m in methods) + " |",
             "|" + "---|" * (3 + len(names) + 2 * len(methods))]
    for r in rows:
        status = ", trained on" if r["trained_on"] else ", its fold" if r["fold_weights"] else ""
        lines.append(f"| {r['volume']} | {r['kind']}{status} | {r['psnr_zero_filled']:.2f} | "
                     + " | ".join(f"{r['gain_db'][m]:+.2f}" for m in names) + " | "
                     + " | ".join(f"{r['min_slice_gain_db'][m]:+.2f}" for m in methods) + " | "
                     + " | ".join(f"{r['seconds'][m]:.1f}" for m in methods) + " |")
    summary = {}
    for kind in ("real", "synthetic", "all", "held out"):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind or (kind == "held out" and not r["trained_on"])]
        if not sel:
            continue
        summary[kind] = {m: {"mean": round(float(np.mean([r["gain_db"][m] for r in sel])), 3),
                             "min": round(float(np.min([r["gain_db"][m] for r in sel])), 3)} for m in names}
        lines.append(f"| **mean ({kind})** | | | " + " | ".join(f"{summary[kind][m]['mean']:+.2f}" for m in names)
                     + " |" * (2 * len(methods) + 1))
        lines.append(f"| **min volume ({kind})** | | | " + " | ".join(f"{summary[kind][m]['min']:+.2f}" for m in names)
                     + " |" * (2 * len(methods) + 1))
    if timing:
        lines.append("")
        lines.append("Whole command on a 256 x 256 x 25 input (x2 -> 512 x 512 x 25): "
                     + ", ".join(f"{m} {s:.1f} s" for m, s in timing.items()))
    print("\n".join(lines))
    result = {"rows": rows, "summary": summary, "timing_256x256x25_s": timing, "methods": methods,
              "folds": {k: str(v) for k, v in folds.items()}}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
