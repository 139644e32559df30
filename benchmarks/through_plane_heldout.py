"""Through-plane SR of held-out thick-slice series of any slice spacing: the factor from the spacing
(:func:`monai_sr.training.through_plane.through_plane_factor_from_spacing`, policy ``round``), the
pretrained x4 network rebuilt for it (:func:`~monai_sr.training.through_plane.rescale_through_plane_network`)
and fitted on the input (:class:`monai_sr.training.internal.ThroughPlaneFit`, ``factor="spacing"``), against
cubic B-spline on the same output grid.

Held-out volumes (never trained on, never used for model selection; sha256-checked through
:func:`monai_sr.training.datasets.load_training_volumes`, RAS, robust-max normalised): Colin27 T1 1 mm
and pycortex S1 T1 1 mm (cropped to the head's bounding box + 8 voxels in x and y; the crop is the same for
every method).

A case ``d`` (mm) makes axial slices of Gaussian profile FWHM ``d`` at a step of ``d`` from the 1 mm volume
(no gap): LR slice ``j`` is centred at 1 mm index ``c_j = (j + 0.5) d - 0.5`` (the field-of-view rule with a
real factor; :func:`monai_sr.transforms.lowres.slice_profile_weights` for an integer ``d``), in-plane 1 mm.
The factor ``s`` comes from the spacing ``(1, 1, d)`` (target = in-plane 1 mm): 4 mm -> x4, 5 mm -> x5,
4.5 mm -> 4.5 is not an integer: ``--policy round`` takes x5 (output slice spacing 0.9 mm), ``floor`` x4
(1.125 mm). Output slice ``k`` sits
at LR index ``(k + 0.5) / s - 0.5``, i.e. 1 mm index ``z_k = (k + 0.5) d / s - 0.5``.

* Reference: the 1 mm volume at ``z_k`` (the 1 mm slices themselves when ``d / s`` is 1; else a cubic
  interpolating spline along S, :func:`scipy.interpolate.make_interp_spline`).
* Cubic B-spline: ``scipy.ndimage.zoom(lr, (1, 1, s), order=3, mode="reflect", grid_mode=True)`` (exactly
  that output grid).
* ``start``: the network for ``s`` before any fit (for ``s`` 4 the pretrained network; else the body with a
  head for ``s``: ``pretrained`` (trained for ``s`` on the frozen body, ``scripts/train_through_plane_heads.py``),
  ``phase`` (the x4 head interpolated in sub-pixel offset) or ``zero`` (bicubic start)).
* ``fit``: :class:`~monai_sr.training.internal.ThroughPlaneFit` on the LR input itself (NIfTI-like: no
  SliceThickness, so the profile is the spacing), then the orthogonal-planes inferer (mean of two stacks);
  ``fit + flips`` (``--flips``): the same network averaged over the 4 flips of each plane.

PSNR / SSIM inside the head mask of the reference (:func:`monai_sr.validation.metrics.head_mask`),
data range = max - min of the reference in the mask, pooled over the volume; per-slice minimum of the gain, over
all slices and over the slices whose mask holds at least 1 % of the median slice's (the end slices of the head
mask can hold a single voxel: S1 at x5 has two such slices at -14 and -4 dB).

Examples::

    python benchmarks/through_plane_heldout.py --cases 4 5 4.5 --heads phase zero --fit-seconds 40 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage
from scipy.interpolate import make_interp_spline

from monai_sr.inference import OrthogonalPlanesInferer
from monai_sr.inference.base import SelfEnsemble
from monai_sr.networks import SRUNet
from monai_sr.training.datasets import load_training_volumes, shared_data_dir
from monai_sr.training.internal import ThroughPlaneFit
from monai_sr.training.through_plane import (
    load_heads,
    rescale_through_plane_network,
    through_plane_factor_from_spacing,
)
from monai_sr.transforms.intensity import robust_max
from monai_sr.validation.metrics import head_mask, masked_data_range, slice_metrics

REPO = Path(__file__).resolve().parents[1]
VOLUMES = {"colin27": "colin27_t1_1mm.nii.gz", "S1": "pycortex_S1_T1.nii.gz",
           # a training volume, for choosing settings (never the held-out two): --volumes mni152
           "mni152": "mni152_2009a_t1_1mm.nii.gz"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(REPO / "bundles" / "mri_sr_selfsupervised" / "models" / "model.pt"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--volumes", nargs="+", default=["colin27", "S1"])
    p.add_argument("--cases", type=float, nargs="+", default=[4.0, 5.0, 4.5], help="slice spacing = FWHM (mm)")
    p.add_argument("--heads", nargs="+", default=["pretrained", "phase"], help="head inits tried when s != 4")
    p.add_argument("--heads-file", default=str(REPO / "bundles" / "mri_sr_selfsupervised" / "models" / "heads.pt"),
                   help="heads trained per factor (scripts/train_through_plane_heads.py) for --heads pretrained")
    p.add_argument("--inplane", type=float, default=1.0,
                   help="resample the 1 mm volume in-plane to this pixel size first (cubic B-spline), e.g. 0.86")
    p.add_argument("--flips", action="store_true", help="also score the fitted network with the 4-flip self-ensemble")
    p.add_argument("--policy", default="round", help="RatioPolicy for a non-integer ratio (round: 4.5 -> 5, floor: 4)")
    p.add_argument("--fit-steps", type=int, default=1500)
    p.add_argument("--fit-seconds", type=float, default=40.0)
    p.add_argument("--fit-lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench/through_plane_heldout.json")
    return p.parse_args(argv)


def load_volume(name: str, data_dir, inplane: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The held-out volume (RAS, robust-max normalised) and its affine, cropped to the head + 8 voxels in x, y;
    with ``inplane`` != 1, resampled in x and y to pixels of about that size (cubic B-spline, FOV kept)."""
    vol = load_training_volumes((VOLUMES[name],), data_dir)[0]
    affine = nib.as_closest_canonical(nib.load(str(Path(data_dir or shared_data_dir()) / VOLUMES[name]))).affine
    m = head_mask(vol)
    lo, hi = [], []
    for a in (0, 1):
        idx = np.nonzero(m.any(axis=tuple(b for b in range(3) if b != a)))[0]
        lo.append(max(int(idx[0]) - 8, 0))
        hi.append(min(int(idx[-1]) + 9, vol.shape[a]))
    vol = np.ascontiguousarray(vol[lo[0] : hi[0], lo[1] : hi[1]])
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :2] @ np.asarray(lo, dtype=np.float64)
    if inplane != 1.0:
        shape = [max(int(round(n / inplane)), 1) for n in vol.shape[:2]]
        zoom = [m / n for m, n in zip(shape, vol.shape[:2])]
        vol = ndimage.zoom(vol, (*zoom, 1.0), order=3, mode="reflect", grid_mode=True).astype(np.float32)
        step = np.asarray([1.0 / z for z in zoom])
        affine[:3, 3] += affine[:3, :2] @ ((step - 1.0) / 2.0)  # FOV rule: new voxel 0 at old index (0.5 s - 0.5)
        affine[:3, :2] = affine[:3, :2] * step
    return vol, affine


def thick_slices(hr: np.ndarray, affine: np.ndarray, d: float) -> tuple[MetaTensor, np.ndarray]:
    """Gaussian slices of FWHM ``d`` at a step of ``d`` (1 mm units) along axis 2; ``(LR, centres)``."""
    n = hr.shape[2]
    m = int(np.floor(n / d + 1e-9))
    centres = (np.arange(m) + 0.5) * d - 0.5
    off = np.arange(n)[None, :] - centres[:, None]
    w = np.exp(-4.0 * np.log(2.0) * (off / d) ** 2)
    w[np.abs(off) > 3.0 * d] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    lr = np.tensordot(hr, w.T, axes=([2], [0])).astype(np.float32)  # (X, Y, m)
    a = affine.copy()
    a[:3, 2] = affine[:3, 2] * d
    a[:3, 3] = affine[:3, 3] + affine[:3, 2] * centres[0]
    return MetaTensor(torch.from_numpy(lr[None]), affine=torch.as_tensor(a)), centres


def reference(hr: np.ndarray, d: float, s: int, m: int) -> np.ndarray:
    z = (np.arange(m * s) + 0.5) * d / s - 0.5
    if np.allclose(z, np.round(z)):
        return np.ascontiguousarray(hr[:, :, np.round(z).astype(int)])
    return make_interp_spline(np.arange(hr.shape[2]), hr, k=3, axis=2)(z).astype(np.float32)


def run_net(lr: MetaTensor, net: torch.nn.Module, threads: int, self_ensemble: str = "none") -> np.ndarray:
    """The pipeline's normalisation around the orthogonal-planes inferer; result in the input's units."""
    scale = robust_max(lr)
    x = MetaTensor(lr.as_tensor() / scale, meta=lr.meta)
    inferer = OrthogonalPlanesInferer(lr_axis=2, threads=threads)
    inferer.self_ensemble = SelfEnsemble(self_ensemble)  # the base inferer's option (4 flips of each plane)
    with torch.inference_mode():
        out = inferer(x, net.eval())
    return out[0].numpy() * scale


def score(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, dr: float):
    m = slice_metrics(pred.astype(np.float32), truth, data_range=dr, mask=mask, axis=2)
    return m.pooled(), np.asarray(m.psnr, dtype=np.float64)


def run_case(args, net, name, hr, affine, d) -> dict:
    lr, _ = thick_slices(hr, affine, d)
    p = [float(v) for v in np.linalg.norm(affine[:3, :2], axis=0)]
    choice = through_plane_factor_from_spacing((p[0], p[1], d), 2, policy=args.policy)
    s = choice.factor
    truth = reference(hr, d, s, lr.shape[3])
    mask = head_mask(truth)
    dr = masked_data_range(truth, mask)
    res = {"volume": name, "slice_mm": d, "inplane_mm": p, "factor": s, "note": choice.note(), "lr_shape": list(lr.shape[1:]),
           "out_shape": list(truth.shape), "output_spacing": choice.output_spacing, "methods": {}, "fits": {}}
    t0 = time.perf_counter()
    preds = {"bspline": ndimage.zoom(lr[0].numpy(), (1, 1, s), order=3, mode="reflect", grid_mode=True)}
    res["bspline_seconds"] = time.perf_counter() - t0
    heads = ["phase"] if s == 4 else list(args.heads)
    norm = robust_max(lr)
    for head in heads:
        tag = "" if s == 4 else f" ({head} head)"
        trained = load_heads(args.heads_file) if head == "pretrained" else None
        init = "phase" if head == "pretrained" and s not in trained else head
        start = rescale_through_plane_network(net, s, head_init=init, heads=trained)
        t0 = time.perf_counter()
        preds["start" + tag] = run_net(lr, start, args.threads)
        infer_s = time.perf_counter() - t0
        fit = ThroughPlaneFit(steps=args.fit_steps, seconds=args.fit_seconds, lr=args.fit_lr, threads=args.threads,
                              factor="spacing", ratio_policy=args.policy, head_init=head,
                              heads=args.heads_file if head == "pretrained" else None)
        x = MetaTensor(lr.as_tensor() / norm, meta=lr.meta)
        x.meta["monai_sr_notes"] = []
        t0 = time.perf_counter()
        fitted = fit(x, net)
        wall = time.perf_counter() - t0
        preds["fit" + tag] = run_net(lr, fitted, args.threads)
        if args.flips:
            t0 = time.perf_counter()
            preds["fit + flips" + tag] = run_net(lr, fitted, args.threads, "flips")
            flips_s = time.perf_counter() - t0
        rec = fit.last_record.as_dict()
        rec.update(wall_seconds=wall, infer_seconds=infer_s, notes=list(x.meta["monai_sr_notes"]))
        if args.flips:
            rec["infer_flips_seconds"] = flips_s
        res["fits"]["fit" + tag] = rec
    base_pooled, base_slices = score(preds["bspline"], truth, mask, dr)
    for key, pred in preds.items():
        pooled, per = score(pred, truth, mask, dr)
        ok = np.isfinite(per) & np.isfinite(base_slices)
        gain = per[ok] - base_slices[ok]
        area = mask.sum(axis=(0, 1))
        big = ok & (area >= 0.01 * np.median(area[area > 0]))  # slices whose mask holds >= 1 % of the median's
        res["methods"][key] = {**pooled, "gain_db": pooled["psnr"] - base_pooled["psnr"],
                               "slice_gain_min": float(gain.min()) if gain.size else None,
                               "slice_gain_min_1pct": float((per[big] - base_slices[big]).min()) if big.any() else None,
                               "slice_gain_median": float(np.median(gain)) if gain.size else None}
    return res


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    net = SRUNet(2, scale=(1, 4), channels=(32, 64, 128))
    net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    net.eval()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cases": []}
    print("| volume | slices | x s (out mm) | method | PSNR (dB) | vs B-spline | min slice gain | SSIM | fit s / steps |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.volumes:
        hr, affine = load_volume(name, args.data_dir, args.inplane)
        for d in args.cases:
            r = run_case(args, net, name, hr, affine, d)
            result["cases"].append(r)
            for key, m in r["methods"].items():
                f = r["fits"].get(key)
                fit_txt = f"{f['seconds']:.0f} / {f['steps']}" if f else ""
                sg = "" if key == "bspline" or m["slice_gain_min"] is None else f"{m['slice_gain_min']:+.2f}"
                gain = "" if key == "bspline" else f"{m['gain_db']:+.2f}"
                print(f"| {name} | {r['inplane_mm'][0]:.3g} x {d:g} mm | x{r['factor']} ({r['output_spacing']:.4g}) | {key} | {m['psnr']:.2f} | "
                      f"{gain} | {sg} | {m['ssim']:.4f} | {fit_txt} |", flush=True)
            out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
