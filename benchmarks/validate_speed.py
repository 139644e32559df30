"""How fast is slice-by-slice validation? ``validate_volumes`` on a 400-slice 512 x 512 pair, against
per-slice baselines run beside it in the same process.

The pair is synthetic (no 400-slice scan ships with the repository): a smooth head-like volume (an
ellipsoid with a soft edge, darker "ventricles" and a slow sinusoidal texture, values 0..~1000) as the
reference, and reference + Gaussian noise (sigma 1% of the range) as the prediction, on a
0.5 x 0.5 x 2 mm grid. Both share one grid, so no resampling is timed.

Timed:

* ``validate_volumes(pred, ref)``: everything the command computes (head mask, data range, per-slice
  PSNR/SSIM/NRMSE, QA-free reference mode, montage slices), not the report writing;
* baseline ``skimage``: the same three metrics per slice with scikit-image
  (``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, its map
  cropped to the valid window and averaged in the mask; PSNR and NRMSE in numpy), given the mask that
  ``validate_volumes`` computed (the mask is not timed for the baseline);
* baseline ``monai-dense``: SSIM with MONAI's ``compute_ssim_and_cs`` (dense 11 x 11 grouped
  convolution) on slabs of 16 slices, mask given; PSNR and NRMSE in torch.

Prints seconds, ratios, and the largest per-slice difference of the baselines' values from ours.

    .venv/bin/python benchmarks/validate_speed.py                   # 400 slices, both baselines
    .venv/bin/python benchmarks/validate_speed.py --slices 40 --baseline skimage
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def make_pair(n_slices: int, size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference, prediction (float32, (size, size, n_slices)) and their affine (0.5 x 0.5 x 2 mm)."""
    x = np.linspace(-1.2, 1.2, size, dtype=np.float32)[:, None, None]
    y = np.linspace(-1.2, 1.2, size, dtype=np.float32)[None, :, None]
    z = np.linspace(-0.9, 0.9, n_slices, dtype=np.float32)[None, None, :]
    r = np.sqrt(x**2 / 0.8 + y**2 + z**2 / 0.9)
    head = 1.0 / (1.0 + np.exp((r - 1.0) * 40.0))  # soft-edged ellipsoid
    vent = np.exp(-((x / 0.15) ** 2 + (y / 0.3) ** 2 + (z / 0.4) ** 2))
    texture = 1.0 + 0.15 * np.sin(9 * x) * np.cos(7 * y) * np.cos(5 * z)
    ref = (800.0 * head * texture * (1.0 - 0.6 * vent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    pred = ref + rng.normal(0.0, 10.0, ref.shape).astype(np.float32)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    return ref, pred, affine


def baseline_skimage(pred, ref, mask, data_range):
    from skimage.metrics import structural_similarity

    n = ref.shape[2]
    out = np.zeros((3, n))
    for k in range(n):
        p, r, m = pred[:, :, k].astype(np.float64), ref[:, :, k].astype(np.float64), mask[:, :, k]
        _, smap = structural_similarity(r, p, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        mc = m[5:-5, 5:-5]
        err = (p - r)[m]
        out[0, k] = 10 * np.log10(data_range**2 / np.mean(err**2))
        out[1, k] = smap[5:-5, 5:-5][mc].mean()
        out[2, k] = np.sqrt(np.sum(err**2)) / np.sqrt(np.sum(r[m] ** 2))
    return out


def baseline_monai_dense(pred, ref, mask, data_range):
    from monai.metrics.regression import compute_ssim_and_cs

    n = ref.shape[2]
    out = np.zeros((3, n))
    for k0 in range(0, n, 16):
        k1 = min(n, k0 + 16)
        p = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pred[:, :, k0:k1], 2, 0)))[:, None]
        r = torch.from_numpy(np.ascontiguousarray(np.moveaxis(ref[:, :, k0:k1], 2, 0)))[:, None]
        m = torch.from_numpy(np.ascontiguousarray(np.moveaxis(mask[:, :, k0:k1], 2, 0)))[:, None]
        smap, _ = compute_ssim_and_cs(p, r, spatial_dims=2, kernel_size=[11, 11], kernel_sigma=[1.5, 1.5], data_range=data_range)
        mc = m[..., 5:-5, 5:-5]
        err2 = ((p.double() - r.double()) ** 2 * m).sum(dim=(1, 2, 3))
        cnt = m.sum(dim=(1, 2, 3)).double()
        out[0, k0:k1] = (10 * torch.log10(data_range**2 / (err2 / cnt))).numpy()
        out[1, k0:k1] = ((smap.double() * mc).sum(dim=(1, 2, 3)) / mc.sum(dim=(1, 2, 3))).numpy()
        out[2, k0:k1] = (err2.sqrt() / (r.double() ** 2 * m).sum(dim=(1, 2, 3)).sqrt()).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--baseline", choices=("skimage", "monai-dense", "both", "none"), default="both")
    args = parser.parse_args()

    from monai.data import MetaTensor

    from monai_sr.validation.validate import validate_volumes

    t0 = time.perf_counter()
    ref, pred, affine = make_pair(args.slices, args.size)
    print(f"pair: {args.size} x {args.size} x {args.slices} float32 (made in {time.perf_counter() - t0:.1f} s)")
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    ref_t = MetaTensor(torch.from_numpy(ref)[None], affine=affine)
    pred_t = MetaTensor(torch.from_numpy(pred)[None], affine=affine)

    t0 = time.perf_counter()
    result = validate_volumes(pred_t, ref_t)
    ours_s = time.perf_counter() - t0
    ours = np.stack([result.column("psnr"), result.column("ssim"), result.column("nrmse")])
    print(f"validate_volumes: {ours_s:.1f} s ({ours_s / args.slices * 1000:.1f} ms/slice; mean PSNR "
          f"{np.mean(ours[0]):.2f} dB, SSIM {np.mean(ours[1]):.4f}, NRMSE {np.mean(ours[2]):.4f}; "
          f"{int(result.flagged.sum())} flagged)")

    from monai_sr.validation.metrics import head_mask

    t0 = time.perf_counter()
    mask = head_mask(ref)
    print(f"  of which head_mask alone: {time.perf_counter() - t0:.1f} s (timed again here)")
    data_range = result.settings["data_range"]
    baselines = {"skimage": baseline_skimage, "monai-dense": baseline_monai_dense}
    chosen = list(baselines) if args.baseline == "both" else [] if args.baseline == "none" else [args.baseline]
    for name in chosen:
        t0 = time.perf_counter()
        vals = baselines[name](pred, ref, mask, data_range)
        s = time.perf_counter() - t0
        diff = np.abs(vals - ours).max(axis=1)
        print(f"baseline {name}: {s:.1f} s (mask given, not timed) -> validate_volumes is {s / ours_s:.2f}x its speed; "
              f"largest per-slice difference PSNR {diff[0]:.2e} dB, SSIM {diff[1]:.2e}, NRMSE {diff[2]:.2e}")


if __name__ == "__main__":
    main()
