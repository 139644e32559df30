"""Does CBAM help DnCNN on MRI noise? Train DnCNN with and without CBAM, same steps, data and seeds.

Training: random patches of axial slices of the MNI152 2009a T1 (``$MONAI_SR_DATA``); each step draws
fresh Rician noise ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)``, with ``sigma`` 5% of the
bright signal (the volume is scaled so that its 99.5th percentile, "bright signal", is 1, so
``sigma = 0.05``). Test: held-out axial slices of a different head (pydeface's mean head T1), scaled the
same way, with fixed noise; PSNR with an explicit ``data_range=1`` (the bright signal), over the whole
slice and inside the head mask. Both models see the same patch positions and noise (one data
generator per run, same seed) and start from the same seed.

Run (1 thread)::

    .venv/bin/python benchmarks/cbam_dncnn.py --steps 600 --seeds 0 1

Prints a line per run, then per seed and on average: PSNR without / with CBAM, the difference, and
the wall times (the ratio of the CBAM run's time to the plain run's).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from monai_sr.networks import DnCNN, count_flops, count_parameters
from monai_sr.training.datasets import shared_data_dir
from monai_sr.validation.metrics import head_mask, psnr

DATA = shared_data_dir()
TRAIN = DATA / "mni152_2009a_t1_1mm.nii.gz"
TEST = DATA / "pydeface_mean_head_t1.nii.gz"


def load_slices(path: Path, *, min_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices (RAS axis 2) whose head covers at least ``min_fraction`` of the slice, scaled so
    the volume's 99.5th percentile (the bright signal) is 1, and their head masks (computed on the
    whole volume). Returns ``(K, X, Y)`` float32 and bool arrays."""
    img = nib.as_closest_canonical(nib.load(str(path)))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    vol = np.clip(vol, 0, None) / np.percentile(vol, 99.5)
    mask = head_mask(vol)
    keep = [k for k in range(vol.shape[2]) if mask[:, :, k].mean() >= min_fraction]
    return np.ascontiguousarray(np.moveaxis(vol[:, :, keep], 2, 0)), np.moveaxis(mask[:, :, keep], 2, 0)


def rician(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    n1 = torch.randn(x.shape, generator=gen) * sigma
    n2 = torch.randn(x.shape, generator=gen) * sigma
    return torch.sqrt((x + n1) ** 2 + n2**2)


def train_and_eval(args, slices: torch.Tensor, test: torch.Tensor, test_noisy: torch.Tensor, mask: np.ndarray, *, cbam: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    net = DnCNN(
        2, depth=args.depth, features=args.features, cbam_every=args.cbam_every if cbam else None, cbam_reduction=args.reduction
    )
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(1000 + seed)  # same patches and noise for both models
    k, h, w = slices.shape
    p = args.patch
    t0 = time.perf_counter()
    net.train()
    for _ in range(args.steps):
        idx = torch.randint(k, (args.batch,), generator=gen)
        ys = torch.randint(h - p + 1, (args.batch,), generator=gen)
        xs = torch.randint(w - p + 1, (args.batch,), generator=gen)
        clean = torch.stack([slices[i, y : y + p, x : x + p] for i, y, x in zip(idx, ys, xs)]).unsqueeze(1)
        noisy = rician(clean, args.sigma, gen)
        loss = F.mse_loss(net(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        den = torch.cat([net(test_noisy[i : i + 8]) for i in range(0, len(test_noisy), 8)])[:, 0].numpy()
    ref = test[:, 0].numpy()
    return {
        "psnr": psnr(den, ref, data_range=1.0),
        "psnr_head": psnr(den, ref, data_range=1.0, mask=mask),
        "train_s": train_s,
        "params": count_parameters(net),
        "flops": count_flops(net, (1, 1, p, p)),
        "loss": loss.item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--cbam-every", type=int, default=3)
    ap.add_argument("--reduction", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--sigma", type=float, default=0.05, help="noise sigma as a fraction of the bright signal")
    ap.add_argument("--test-slices", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    slices = torch.from_numpy(load_slices(TRAIN)[0])
    test_all, mask_all = load_slices(TEST)
    pick = np.linspace(0, len(test_all) - 1, args.test_slices).round().astype(int)
    test_np = test_all[pick]
    test = torch.from_numpy(test_np).unsqueeze(1)
    test_noisy = rician(test, args.sigma, torch.Generator().manual_seed(12345))
    mask = mask_all[pick]
    noisy_psnr = psnr(test_noisy[:, 0].numpy(), test_np, data_range=1.0)
    noisy_head = psnr(test_noisy[:, 0].numpy(), test_np, data_range=1.0, mask=mask)
    print(f"train: {TRAIN.name} {len(slices)} axial slices {tuple(slices.shape[1:])}; test: {TEST.name} {len(test)} slices {tuple(test.shape[2:])}")
    print(f"Rician sigma {args.sigma} of bright signal; DnCNN depth {args.depth}, {args.features} features; "
          f"CBAM every {args.cbam_every} layers (reduction {args.reduction}); {args.steps} steps x batch {args.batch} x {args.patch}^2; "
          f"{torch.get_num_threads()} thread(s)")
    print(f"noisy input PSNR: {noisy_psnr:.2f} dB (head {noisy_head:.2f} dB), data_range=1")
    rows = []
    for seed in args.seeds:
        res = {}
        for cbam in (False, True):
            r = train_and_eval(args, slices, test, test_noisy, mask, cbam=cbam, seed=seed)
            name = "cbam " if cbam else "plain"
            print(f"seed {seed} {name}: PSNR {r['psnr']:.2f} dB (head {r['psnr_head']:.2f} dB), final train loss {r['loss']:.2e}, "
                  f"{r['params']} params, {r['flops'] / 1e6:.1f} MFLOP per {args.patch}^2 patch, train {r['train_s']:.1f} s", flush=True)
            res[cbam] = r
        rows.append(res)
        d, dh = res[True]["psnr"] - res[False]["psnr"], res[True]["psnr_head"] - res[False]["psnr_head"]
        print(f"seed {seed}: CBAM - plain = {d:+.2f} dB (head {dh:+.2f} dB); time ratio {res[True]['train_s'] / res[False]['train_s']:.2f}")
    mean = lambda cb, key: float(np.mean([r[cb][key] for r in rows]))  # noqa: E731
    print(
        f"mean over seeds {args.seeds}: plain {mean(False, 'psnr'):.2f} dB, cbam {mean(True, 'psnr'):.2f} dB, "
        f"difference {mean(True, 'psnr') - mean(False, 'psnr'):+.2f} dB (head: {mean(False, 'psnr_head'):.2f} vs {mean(True, 'psnr_head'):.2f}, "
        f"{mean(True, 'psnr_head') - mean(False, 'psnr_head'):+.2f} dB); wall: plain {mean(False, 'train_s'):.1f} s, cbam {mean(True, 'train_s'):.1f} s per run"
    )


if __name__ == "__main__":
    main()
