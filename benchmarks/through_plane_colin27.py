"""Through-plane x4 on the held-out Colin27: cubic B-spline vs the pretrained 2D net vs pretrained + the
self-supervised per-volume fit (SMORE-style), and the time of the fit on a 256 x 256 x 40 volume.

Quality (``--quality``):

1. Colin27 T1 (1 mm, ``$MONAI_SR_DATA/colin27_t1_1mm.nii.gz``, sha256-checked, RAS), the S axis cut to
   a multiple of 4 (180 slices), divided by its robust max (99.5th percentile).
2. Degraded to 4 mm axial slices: Gaussian slice profile of FWHM 4 mm, decimated x4
   (:class:`monai_sr.transforms.lowres.SimulateLowResolution` ``((1, 1, 4), slice_axis=2)``): slice
   ``j`` centred at 1 mm index ``4 j + 1.5``, the field-of-view rule of DESIGN.md. 181 x 217 x 45.
3. Back to 1 mm, the same FOV rule for every method (output slice ``j`` at input index
   ``(j + 0.5) / 4 - 0.5``):

   * cubic B-spline: ``scipy.ndimage.zoom(lr, (1, 1, 4), order=3, mode="reflect", grid_mode=True)``
     (``grid_mode=True`` is exactly this FOV rule; ``reflect`` mirrors about the volume's outer edge);
   * pretrained: the bundle's 2D SR-UNet ``(1, 4)`` on the two orthogonal plane stacks, mean fusion
     (:class:`monai_sr.inference.OrthogonalPlanesInferer`), input normalised by its own robust max as
     :func:`monai_sr.pipeline.enhance` does;
   * pretrained + fit: :class:`monai_sr.training.internal.ThroughPlaneFit` on the 4 mm input itself
     (its in-plane slices degraded along one in-plane axis; Colin27 1 mm is never seen), then the same.

4. PSNR and SSIM inside the head mask (:func:`monai_sr.validation.metrics.head_mask` of the 1 mm truth;
   ``data_range`` = max - min of the truth inside the mask), pooled over the volume and per axial slice
   (:func:`monai_sr.validation.metrics.slice_metrics`); the per-slice table goes to ``--out``.

Timing (``--timing``): a 256 x 256 x 40 NIfTI at 1 x 1 x 4 mm (Colin27 padded to 256 x 256 in-plane, 160
slices degraded as above) through :func:`monai_sr.pipeline.enhance` with ``adapt=ThroughPlaneFit`` (the
bundle's inference path: read, normalise, fit, infer, write), wall time of each part.

Examples::

    python benchmarks/through_plane_colin27.py --quality --timing --fit-steps 1500 --fit-seconds 200 --threads 2
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
from scipy import ndimage

from monai_sr.inference import OrthogonalPlanesInferer
from monai_sr.networks import SRUNet
from monai_sr.pipeline import enhance
from monai_sr.training.datasets import load_training_volumes, shared_data_dir
from monai_sr.training.internal import ThroughPlaneFit
from monai_sr.transforms.intensity import robust_max
from monai_sr.transforms.lowres import SimulateLowResolution
from monai_sr.validation.metrics import head_mask, masked_data_range, slice_metrics

REPO = Path(__file__).resolve().parents[1]

COLIN = "colin27_t1_1mm.nii.gz"
FACTOR = 4


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(REPO / "bundles" / "mri_sr_selfsupervised" / "models" / "model.pt"))
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--data-dir", default=str(shared_data_dir()))
    p.add_argument("--quality", action="store_true")
    p.add_argument("--timing", action="store_true")
    p.add_argument("--fit-steps", type=int, default=1500)
    p.add_argument("--fit-seconds", type=float, default=200.0)
    p.add_argument("--fit-lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/through_plane_colin27.json")
    args = p.parse_args(argv)
    if not (args.quality or args.timing):
        args.quality = args.timing = True
    return args


def load_net(args) -> SRUNet:
    net = SRUNet(2, scale=(1, FACTOR), channels=tuple(args.channels))
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    return net.eval()


def colin27(data_dir: str) -> MetaTensor:
    """The held-out Colin27, sha256-checked, RAS, robust-max normalised, S axis a multiple of 4."""
    vol = load_training_volumes((COLIN,), data_dir)[0]  # the loader checks sha256; Colin27 by name only
    affine = nib.as_closest_canonical(nib.load(str(Path(data_dir) / COLIN))).affine
    vol = vol[:, :, : (vol.shape[2] // FACTOR) * FACTOR]
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(vol)[None]), affine=torch.as_tensor(affine))


def degrade(hr: MetaTensor) -> MetaTensor:
    return SimulateLowResolution((1, 1, FACTOR), slice_axis=2, slice_profile="gaussian", slice_thickness=4.0)(hr)


def bspline(lr: np.ndarray) -> np.ndarray:
    return ndimage.zoom(lr, (1, 1, FACTOR), order=3, mode="reflect", grid_mode=True)


def run_net(lr: MetaTensor, net: torch.nn.Module, threads: int) -> np.ndarray:
    """The pipeline's normalisation around the orthogonal-planes inferer; result in the input's units."""
    scale = robust_max(lr)
    x = MetaTensor(lr.as_tensor() / scale, meta=lr.meta)
    with torch.inference_mode():
        out = OrthogonalPlanesInferer(lr_axis=2, threads=threads)(x, net)
    return out[0].numpy() * scale


def quality(args, net) -> dict:
    hr = colin27(args.data_dir)
    lr = degrade(hr)
    truth = hr[0].numpy()
    mask = head_mask(truth)
    dr = masked_data_range(truth, mask)
    preds = {"bspline": bspline(lr[0].numpy()), "pretrained": run_net(lr, net, args.threads)}
    fit = ThroughPlaneFit(steps=args.fit_steps, seconds=args.fit_seconds, lr=args.fit_lr, threads=args.threads)
    scale = robust_max(lr)
    t0 = time.perf_counter()
    fitted = fit(MetaTensor(lr.as_tensor() / scale, meta=lr.meta), net)
    fit_wall = time.perf_counter() - t0
    preds["pretrained+fit"] = run_net(lr, fitted, args.threads)
    rows, per_slice = {}, {}
    for name, pred in preds.items():
        m = slice_metrics(pred.astype(np.float32), truth, data_range=dr, mask=mask, axis=2)
        rows[name] = m.pooled()
        per_slice[name] = {"psnr": np.round(m.psnr, 3).tolist(), "ssim": np.round(m.ssim, 4).tolist()}
    rec = fit.last_record.as_dict()
    rec["wall_seconds"] = fit_wall
    return {"shape_hr": list(truth.shape), "shape_lr": list(lr.shape[1:]), "data_range": dr, "mask_voxels": int(mask.sum()),
            "pooled": rows, "per_slice": per_slice, "fit": rec}


def timing(args, net) -> dict:
    hr = colin27(args.data_dir)[0].numpy()
    pad = np.zeros((256, 256, 160), np.float32)
    x0, y0 = (256 - hr.shape[0]) // 2, (256 - hr.shape[1]) // 2
    z0 = (hr.shape[2] - 160) // 2
    pad[x0 : x0 + hr.shape[0], y0 : y0 + hr.shape[1]] = hr[:, :, z0 : z0 + 160]
    lr = degrade(MetaTensor(torch.from_numpy(pad[None]), affine=torch.eye(4, dtype=torch.float64)))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "case_4mm.nii.gz"
        nib.save(nib.Nifti1Image((lr[0].numpy() * 1000).astype(np.int16), np.asarray(lr.affine)), src)
        fit = ThroughPlaneFit(steps=args.fit_steps, seconds=args.fit_seconds, lr=args.fit_lr, threads=args.threads)
        t0 = time.perf_counter()
        res = enhance(src, Path(tmp) / "case_1mm.nii.gz", network=net,
                      inferer=OrthogonalPlanesInferer(lr_axis=2, threads=args.threads), adapt=fit)
        total = time.perf_counter() - t0
        out_shape = list(nib.load(Path(tmp) / "case_1mm.nii.gz").shape)
    rec = fit.last_record.as_dict()
    return {"input_shape": list(lr.shape[1:]), "output_shape": out_shape, "total_seconds": total, "fit": rec,
            "rest_seconds": total - rec["seconds"] - rec["setup_seconds"]}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    net = load_net(args)
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "torch_threads": args.threads}
    if args.quality:
        q = quality(args, net)
        result["quality"] = q
        base = q["pooled"]["bspline"]["psnr"]
        print(f"Colin27 through-plane x4 ({q['shape_lr']} -> {q['shape_hr']}), head mask, data_range {q['data_range']:.3f}")
        print("| method | PSNR (dB) | vs B-spline | SSIM |")
        print("| --- | --- | --- | --- |")
        for name, r in q["pooled"].items():
            print(f"| {name} | {r['psnr']:.2f} | {r['psnr'] - base:+.2f} | {r['ssim']:.4f} |")
        f = q["fit"]
        print(f"fit: {f['steps']} steps, {f['seconds']:.1f} s (+ {f['setup_seconds']:.1f} s pairs), stopped by "
              f"{f['stopped_by']}, L1 {f['loss_first']:.5f} -> {f['loss_last']:.5f}")
    if args.timing:
        t = timing(args, net)
        result["timing"] = t
        f = t["fit"]
        print(f"256x256x40 enhance with per-volume fit: {t['input_shape']} -> {t['output_shape']}: total {t['total_seconds']:.1f} s "
              f"(fit {f['seconds']:.1f} s / {f['steps']} steps, pairs {f['setup_seconds']:.1f} s, read+infer+write "
              f"{t['rest_seconds']:.1f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
