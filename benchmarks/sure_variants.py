"""Which SURE blend: candidates, search radius and per-band weights, scored against the clean volume.

The denoiser's SURE blend (:class:`monai_sr.inference.SureBlendInferer`) mixes candidates with weights that
Stein's unbiased risk estimate chooses. Which candidates, and how fine the weights, was decided here on the
real held-out cases of :mod:`benchmarks.denoise_generalization` (same volumes, Rician noise, seeds):

1. ``--make``: for each case, the bundle's network (its plane inferer, as shipped), DIPY's blockwise
   nlmeans (its default search radius, 2), classic nlmeans (DIPY's default radius 5, and radius 3), each
   on the normalised noisy volume ``y`` and on the SURE probe ``y + eps sigma b`` (``eps`` 0.01, the
   blend's), with ``sigma`` the blend's own estimate; cached as ``.npz`` in ``--cache-dir`` (with the
   clean volume, the head mask and the scored voxels).
2. ``--score``: the PSNR gain over classic nlmeans given the TRUE sigma (DIPY defaults, the baseline of
   ``denoise_generalization --nlmeans-method classic``) of each variant, all from the cache, the weights
   by :func:`monai_sr.inference.sure.sure_weights` (convex, one weight per candidate for the volume), or,
   for the "bands" variants, one weight per candidate and per band of a Gaussian split (SURE of each band
   from the same Monte Carlo probe; bounded to [0, 1] each); "dim": the same weights, and where the signal is
   dim the network's share goes to classic nlmeans (``g3``), as the blend's ``dim_fallback`` does it
   (:func:`monai_sr.inference.sure.dim_ramp`; 0.5.0).

Variants: ``f`` network, ``gw`` blockwise, ``gc`` classic r5, ``g3`` classic r3; ``+`` a blend of them.

    .venv/bin/python -m benchmarks.sure_variants --make --levels 0.05 --threads 2
    .venv/bin/python -m benchmarks.sure_variants --score --levels 0.05
    .venv/bin/python -m benchmarks.sure_variants --make --score --levels 0.05 0.03 0.08 --variants "f+gw+g3" "f+gw+g3 dim"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, optimize

from monai_sr import geometry
from monai_sr.inference.sure import dim_ramp, nlmeans_denoise, smoothed_signal, sure_mask, sure_weights
from monai_sr.transforms.noise import noise_slice_axis, sigma_smaller_of_two

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = {"gw": ("blockwise", None), "gc": ("classic", 5), "g3": ("classic", 3)}
VARIANTS = ("f", "gw", "g3", "f+gw", "f+gc", "f+g3", "f+gw+gc", "f+gw+g3", "f+gw bands", "f+gw+g3 bands", "f+gw+g3 dim")
BAND_WIDTHS = (1.0,)  # Gaussian sigma (voxels, in-plane) between the bands


def make(cache: Path, levels: list[float], threads: int) -> None:
    """Cache the candidates of every real held-out case at ``levels`` (skips what is cached)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    from benchmarks.denoise_generalization import volumes
    from monai_sr.training.datasets import shared_data_dir
    from monai_sr.transforms.artefacts import rician_noise
    from monai_sr.transforms.intensity import robust_max
    from monai_sr.validation.metrics import head_mask

    torch.set_num_threads(threads)
    bundle = REPO / "bundles" / "mri_denoise_dncnn"
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network")
    parser.get_parsed_content("load_weights")
    net.eval()
    inferer = parser.get_parsed_content("plane_inferer")
    cache.mkdir(parents=True, exist_ok=True)
    for vi, (name, kind, clean, affine) in enumerate(volumes(shared_data_dir())):
        if kind != "real":
            continue
        bright = float(robust_max(clean))
        for level in levels:
            path = cache / f"v{vi}_{round(level * 1000)}.npz"
            if path.exists():
                continue
            t0 = time.perf_counter()
            noisy = rician_noise(clean, level * bright, np.random.default_rng([2026, vi, int(round(level * 1000))]))
            scale = float(robust_max(noisy))
            y = (noisy / scale).astype(np.float32)
            sigma, _ = sigma_smaller_of_two(y, noise_slice_axis(geometry.spacing_from_affine(affine)))
            probe = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
            yb = y + 0.01 * sigma * probe
            run = lambda v: inferer(MetaTensor(torch.from_numpy(v)[None], affine=torch.as_tensor(affine)), net)[0].numpy()  # noqa: E731
            with torch.no_grad():
                arrays = {"f": run(y), "fb": run(yb)}
            for key, (method, radius) in CANDIDATES.items():
                arrays[key] = nlmeans_denoise(y, sigma, method=method, block_radius=radius)
                arrays[key + "b"] = nlmeans_denoise(yb, sigma, method=method, block_radius=radius)
            true = nlmeans_denoise(y, level * bright / scale, method="classic")  # the baseline: DIPY defaults, true sigma
            np.savez_compressed(path, name=name, clean=(clean / scale).astype(np.float32), y=y, probe=probe,
                                head=head_mask(clean.astype(np.float64), planar=True), sure=sure_mask(y, sigma),
                                sigma=sigma, bright=bright / scale, spacing=geometry.spacing_from_affine(affine),
                                baseline=true, **{k: v.astype(np.float32) for k, v in arrays.items()})
            print(f"{name} {level:.0%}: cached in {time.perf_counter() - t0:.0f} s", flush=True)


def _psnr(x: np.ndarray, ref: np.ndarray, data_range: float, mask: np.ndarray) -> float:
    return float(10 * np.log10(data_range**2 / np.mean((x[mask].astype(np.float64) - ref[mask]) ** 2)))


def _bands(v: np.ndarray, spacing: np.ndarray) -> list[np.ndarray]:
    """``v`` split into ``len(BAND_WIDTHS) + 1`` bands (finest first) that sum to ``v``: differences of
    Gaussian blurs (in-plane only across thick slices)."""
    out, prev = [], v
    for w in BAND_WIDTHS:
        low = ndimage.gaussian_filter(v, [w * min(spacing) / s if s <= 1.5 * min(spacing) else 0.0 for s in spacing])
        out.append(prev - low)
        prev = low
    return [*out, prev]


def blend(c: dict, names: list[str], bands: bool, dim: bool = False) -> np.ndarray:
    """The SURE-chosen mixture of the candidates ``names`` of one cached case (``dim``: with the blend's dim
    fallback, the network ``f``'s share to classic nlmeans ``g3`` where the signal is dim)."""
    y, m = c["y"], c["sure"]
    sigma, n = float(c["sigma"]), int(c["sure"].sum())
    eps, pb = 0.01 * sigma, c["probe"][m].astype(np.float64)
    yb = y + eps * c["probe"]
    split = (lambda v: _bands(v, c["spacing"])) if bands else (lambda v: [v])  # noqa: E731
    us, ubs = [], []
    for k in names:
        us += split(c[k] - y)
        ubs += split(c[k + "b"] - yb)
    u = np.stack([a[m] for a in us]).astype(np.float64)
    gram = u @ u.T
    div = np.array([pb @ (b[m] - a[m]).astype(np.float64) / eps for a, b in zip(us, ubs)]) + n  # div of y + u
    if bands:  # one weight per band and candidate in [0, 1]: a bounded least-squares form of SURE
        chol = np.linalg.cholesky(gram + 1e-12 * np.trace(gram) * np.eye(len(gram)))
        w = optimize.lsq_linear(chol.T, -np.linalg.solve(chol, sigma**2 * (div - n)), bounds=(0.0, 1.0)).x
    else:
        w = sure_weights(gram, div, n, sigma)
    out = y + sum(wk * a for wk, a in zip(w, us))
    if dim and not bands:
        out += w[names.index("f")] * (1.0 - dim_ramp(smoothed_signal(y), sigma)) * (c["g3"] - c["f"])
    return out


def score(cache: Path, levels: list[float], variants: tuple[str, ...] = VARIANTS) -> None:
    """Print the gain of each of ``variants`` over classic nlmeans (true sigma), per case, mean and minimum."""
    rows = {}
    for level in levels:
        for path in sorted(cache.glob(f"v*_{round(level * 1000)}.npz")):
            c = dict(np.load(path))
            ref, head, rng = c["clean"], c["head"], float(c["bright"])
            base = _psnr(c["baseline"], ref, rng, head)
            row = {}
            for v in variants:
                bands, dim = v.endswith(" bands"), v.endswith(" dim")
                names = v.removesuffix(" bands").removesuffix(" dim").split("+")
                out = c[names[0]] if len(names) == 1 else blend(c, names, bands, dim)
                row[v] = _psnr(out, ref, rng, head) - base
            rows[f"{c['name']} {level:.0%}"] = (base, row)
    print("| case | classic nlmeans, true sigma (dB) | " + " | ".join(variants) + " |")
    print("|---|---:|" + "---:|" * len(variants))
    for case, (base, row) in rows.items():
        print(f"| {case} | {base:.2f} | " + " | ".join(f"{row[v]:+.2f}" for v in variants) + " |")
    for stat, fn in (("mean", np.mean), ("min", np.min)):
        print(f"| **{stat}** | | " + " | ".join(f"{fn([r[v] for _, r in rows.values()]):+.2f}" for v in variants) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--make", action="store_true", help="cache the candidates (slow: classic nlmeans)")
    p.add_argument("--score", action="store_true", help="print the table from the cache")
    p.add_argument("--levels", type=float, nargs="+", default=[0.05])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, metavar="VARIANT",
                   help=f"which to score (default all: {', '.join(VARIANTS)})")
    p.add_argument("--cache-dir", default=str(REPO / "runs" / "sure_variants"))
    args = p.parse_args(argv)
    if args.make:
        make(Path(args.cache_dir), args.levels, args.threads)
    if args.score:
        score(Path(args.cache_dir), args.levels, tuple(args.variants))


if __name__ == "__main__":
    main()
