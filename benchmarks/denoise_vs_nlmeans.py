"""Denoising bundle vs DIPY's non-local means on the held-out Colin27 with Rician noise at 5%.

Setup (the issue's "denoising at Rician 5% of the bright signal vs DIPY nlmeans(rician=True)"):

- clean: Colin27 T1 (``$MONAI_SR_DATA/colin27_t1_1mm.nii.gz``, never used for training), RAS, float32;
- bright signal: its 99.5th percentile (:func:`monai_sr.transforms.intensity.robust_max`, the pipeline's
  normalisation); noise ``sigma = 0.05 x bright``, Rician ``|x + n_re + i n_im|`` with a fixed seed
  (:func:`monai_sr.transforms.artefacts.rician_noise`, ``numpy.random.default_rng(seed)``);
- bundle: ``bundles/mri_denoise_dncnn`` run end to end as a user runs it (``configs/inference.json``
  through MONAI's ConfigWorkflow: NIfTI in, NIfTI out, with the noise-level report), on the noisy volume
  written as NIfTI (float32, Colin27's affine); also with ``plane_axes=[2]`` (axial slices only, instead
  of the mean over the three slice orientations);
- DIPY: ``dipy.denoise.nlmeans.nlmeans(noisy, sigma, rician=True)`` (its defaults: patch radius 1,
  block radius 5, blockwise), with ``sigma`` from ``dipy.denoise.noise_estimate.estimate_sigma(noisy, N=1)``
  (the mean over slices; N=1 is DIPY's documented setting for a single-coil / SENSE magnitude image),
  and with the true sigma;
- metrics: PSNR, SSIM, NRMSE of each slice along ``--axis`` (:func:`monai_sr.validation.metrics.slice_metrics`)
  inside the head mask of the clean volume (:func:`monai_sr.validation.metrics.head_mask`), with
  ``data_range`` = the bright signal (so PSNR reads against the level the noise is quoted in); pooled
  over the whole masked volume for the summary.

Run (1 thread; ~10 min on the 2-core machine, nlmeans dominates)::

    .venv/bin/python benchmarks/denoise_vs_nlmeans.py --threads 1 --table runs/denoise/per_slice.csv

Prints the noise estimates (true, bundle's report, DIPY's), a summary per method, the differences of the
bundle against each nlmeans run, and a per-slice table (every ``--every``-th slice; all in ``--table``).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_sr.training.datasets import shared_data_dir
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.noise import sigma_from_background, sigma_from_wavelet
from monai_sr.validation.metrics import head_mask, slice_metrics

REPO = Path(__file__).resolve().parents[1]
COLIN = shared_data_dir() / "colin27_t1_1mm.nii.gz"
BUNDLE = REPO / "bundles" / "mri_denoise_dncnn"


def run_bundle(
    noisy_path: Path, out_dir: Path, *, bundle: Path = BUNDLE, ckpt: str | None = None, **extra: object
) -> tuple[np.ndarray, str, float]:
    """Run the bundle's inference.json on one NIfTI case (``extra``: more config overrides); returns the
    output volume, the noise report and the seconds taken."""
    from monai.bundle import ConfigWorkflow

    overrides = {"bundle_root": str(bundle), "input_path": str(noisy_path.parent), "output_path": str(out_dir), "output_format": "nifti", **extra}
    if ckpt:
        overrides["ckpt_path"] = ckpt
    t0 = time.perf_counter()
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"), workflow_type="infer", **overrides)
    wf.initialize()
    wf.run()
    seconds = time.perf_counter() - t0
    report = wf.parser.get_parsed_content("noise_report").summary()
    wf.finalize()
    out = next(out_dir.glob("*.nii*"))
    vol = np.asarray(nib.as_closest_canonical(nib.load(str(out))).dataobj, dtype=np.float32)
    return vol, report, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--level", type=float, default=0.05, help="noise sigma as a fraction of the bright signal")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--axis", type=int, default=2, help="slice axis of the per-slice table (RAS: 2 = axial)")
    ap.add_argument("--every", type=int, default=10, help="print every n-th slice of the table")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt", default=None, help="weights to use instead of the bundle's models/model.pt")
    ap.add_argument("--slices", type=int, nargs=2, default=None, help="only this axial range [a, b) (quick runs)")
    ap.add_argument("--no-axial", action="store_true", help="skip the axial-only run of the bundle")
    ap.add_argument("--table", default=None, help="write the per-slice table (all slices) as CSV here")
    ap.add_argument("--json", default=None, help="write the summary as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    img = nib.as_closest_canonical(nib.load(str(COLIN)))
    clean = np.asarray(img.dataobj, dtype=np.float32)
    bright = robust_max(clean)  # of the whole volume, also for a quick run on a slab
    if args.slices:
        clean = clean[:, :, args.slices[0] : args.slices[1]]
    sigma = args.level * bright
    noisy = rician_noise(clean, sigma, np.random.default_rng(args.seed))
    mask = head_mask(clean)
    print(f"Colin27 {clean.shape}, bright signal (99.5th percentile) {bright:.1f}; Rician sigma {sigma:.3f} "
          f"({100 * args.level:.1f}%), seed {args.seed}; head mask {mask.mean():.1%} of voxels; {torch.get_num_threads()} thread(s)")

    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    est_dipy = float(np.mean(estimate_sigma(noisy, N=1)))
    est_bg, est_wav = sigma_from_background(noisy), sigma_from_wavelet(noisy)
    results: dict[str, np.ndarray] = {"noisy input": noisy}
    seconds: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "in" / "colin27_noisy.nii.gz"
        case.parent.mkdir()
        nib.save(nib.Nifti1Image(noisy, img.affine), str(case))
        results["bundle (DnCNN)"], report, seconds["bundle (DnCNN)"] = run_bundle(case, Path(tmp) / "out", ckpt=args.ckpt)
        if not args.no_axial:  # the same network on axial slices only (the 3-plane mean's contribution)
            name = "bundle, axial slices only"
            results[name], _, seconds[name] = run_bundle(case, Path(tmp) / "out_axial", ckpt=args.ckpt, plane_axes=[2])
    print(f"noise sigma, % of the bright signal: true {100 * args.level:.2f}; bundle report: {report.split(': ', 1)[-1]}; "
          f"monai_sr background {100 * est_bg / bright:.2f}, wavelet {100 * est_wav / bright:.2f}; DIPY estimate_sigma(N=1) {100 * est_dipy / bright:.2f}")

    for name, s in ((f"nlmeans, DIPY sigma ({100 * est_dipy / bright:.2f}%)", est_dipy), (f"nlmeans, true sigma ({100 * args.level:.2f}%)", sigma)):
        t0 = time.perf_counter()
        results[name] = np.asarray(nlmeans(noisy, sigma=s, rician=True, num_threads=args.threads), dtype=np.float32)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {seconds[name]:.1f} s", flush=True)

    metrics = {k: slice_metrics(v, clean, data_range=bright, mask=mask, axis=args.axis) for k, v in results.items()}
    pooled = {k: m.pooled() for k, m in metrics.items()}
    print(f"\nPooled over the head mask (data_range = bright signal {bright:.1f}):")
    print(f"| method | PSNR (dB) | SSIM | NRMSE | seconds |\n| --- | --- | --- | --- | --- |")
    for k, p in pooled.items():
        print(f"| {k} | {p['psnr']:.2f} | {p['ssim']:.4f} | {p['nrmse']:.4f} | {seconds.get(k, float('nan')):.1f} |")
    ours = pooled["bundle (DnCNN)"]
    print()
    for k, p in pooled.items():
        if k != "bundle (DnCNN)":
            print(f"bundle - {k}: PSNR {ours['psnr'] - p['psnr']:+.2f} dB, SSIM {ours['ssim'] - p['ssim']:+.4f}, "
                  f"NRMSE ratio {ours['nrmse'] / p['nrmse']:.3f}")
    names = list(results)
    nl_names = [k for k in names if k.startswith("nlmeans")]
    valid = np.where(metrics[names[0]].mask_voxels > 0)[0]
    wins = {k: int(np.sum(metrics["bundle (DnCNN)"].psnr[valid] > metrics[k].psnr[valid])) for k in nl_names}
    print(f"bundle PSNR per slice minus nlmeans (true sigma): median {np.median(metrics['bundle (DnCNN)'].psnr[valid] - metrics[nl_names[-1]].psnr[valid]):+.2f} dB")
    print("slices where the bundle's PSNR is higher: " + ", ".join(f"{w}/{len(valid)} vs {k}" for k, w in wins.items()))

    print(f"\nPer-slice PSNR (dB) / SSIM along axis {args.axis}, every {args.every}th slice with head voxels:")
    print("| slice | " + " | ".join(names) + " |\n|" + " --- |" * (len(names) + 1))
    for k in valid[:: args.every]:
        print(f"| {k} | " + " | ".join(f"{metrics[n].psnr[k]:.2f} / {metrics[n].ssim[k]:.3f}" for n in names) + " |")
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        with open(args.table, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["slice", "head_voxels"] + [f"{n} {m}" for n in names for m in ("psnr", "ssim", "nrmse")])
            for k in valid:
                w.writerow([k, int(metrics[names[0]].mask_voxels[k])] + [f"{getattr(metrics[n], m)[k]:.4f}" for n in names for m in ("psnr", "ssim", "nrmse")])
        print(f"per-slice table: {args.table}")
    if args.json:
        Path(args.json).write_text(json.dumps({"pooled": pooled, "seconds": seconds, "sigma": sigma, "bright": bright,
                                               "estimates": {"dipy_N1": est_dipy, "background": est_bg, "wavelet": est_wav},
                                               "report": report}, indent=2))


if __name__ == "__main__":
    main()
