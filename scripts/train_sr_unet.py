"""Train the 2D SR-UNet (x2 in-plane) on the shared training volumes.

Training files (``--train-files``, default MNI152 2009a and the pydeface mean head) come from the
shared data folder (``$MONAI_SR_DATA``), each checked against its sha256 in
``data_specs/shared_data.json``. Colin27 is held out (the demo/test volume) and is refused here. From
each training volume an axial slab (``--slab``, fractions of the S axis) is held out for validation;
pairs come from the rest, along all three axes (see :mod:`monai_sr.training.pairs`). A single 2D slice
(a file with one slice) is used whole, in its own plane. ``NAME:SHARE`` gives a file a fixed share of
the draws (otherwise files are drawn in proportion to their crop positions). ``--remaps N`` adds, for
every training file, N copies of it under fixed random intensity remaps
(:meth:`monai_sr.training.synth.ContrastRandomiser.draw_lut`, drawn once from ``--seed``): the file's
real texture under other contrasts (issue 12's lever 4, "the real volumes under random intensity
remaps"); the copies join the file's group, so its share is split evenly between the original and its
copies. Validation stays on the unmapped slabs.

Validation prints the PSNR (normalised units, ``data_range=1``) of the network and of bicubic
interpolation (``F.interpolate(..., mode="bicubic", align_corners=False)``) on the slab's axial slices.

Examples::

    python scripts/train_sr_unet.py --out runs/sr_unet --steps 12000 --export runs/sr_unet/model.pt
    python scripts/train_sr_unet.py --out runs/sr_unet --steps 12000 --resume   # continue after a stop
    python scripts/train_sr_unet.py --train-files mni152_2009a_t1_1mm.nii.gz pydeface_mean_head_t1.nii.gz \
        pycortex_S1_T1.nii.gz:0.3 pydicomdata_MR2_UNCR_shoulder_T1SE_2D.nii.gz:0.1 ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from monai_sr.checks import check_positive_int
from monai_sr.errors import InputError
from monai_sr.inference.consistency import project_acquired_band
from monai_sr.networks import SRUNet, SwinIRLight
from monai_sr.training.datasets import DATA_SPEC, TRAINING_FILES, parse_shares, shared_data_dir, verified_path
from monai_sr.training.losses import AcquiredBandLoss
from monai_sr.training.pairs import DegradedStack, PairSampler, SpectralShaping, normalise_volume, split_volume
from monai_sr.training.schedule import warmup_cosine
from monai_sr.training.synth import LUT_KNOTS, ContrastRandomiser
from monai_sr.training.trainer import save_atomic, train_step
from monai_sr.validation.metrics import psnr

LOG = logging.getLogger("train_sr_unet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/sr_unet", help="folder for checkpoints and train.log")
    p.add_argument("--data-dir", default=str(shared_data_dir()))
    p.add_argument("--train-files", nargs="+", default=list(TRAINING_FILES), metavar="NAME[:SHARE]",
                   help="training files of the shared data folder; NAME:SHARE fixes that file's share of the draws")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=96, help="HR patch size (even); the LR patch is half of it")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay to 1%% of it)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=("srunet", "swinir"), default="srunet",
                   help="srunet: SRUNet(channels=--channels); swinir: SwinIRLight() (issue 12's transformer lever)")
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--slab", type=float, nargs=2, default=[0.60, 0.72], help="held-out axial slab, fractions of S")
    p.add_argument("--noise-prob", type=float, default=0.2)
    p.add_argument("--noise-sigma", type=float, default=0.02, help="largest Rician sigma on the LR (normalised units)")
    p.add_argument("--shaping", type=float, default=0.0, metavar="PROB",
                   help="probability of a random k-space attenuation of each training slice (SpectralShaping)")
    p.add_argument("--shaping-sigma", type=float, default=0.8, help="largest Gaussian blur of the shaping, HR pixels")
    p.add_argument("--remaps", type=int, default=0, metavar="N",
                   help="add N fixed random intensity remaps of every training file, in its group (domain randomisation)")
    p.add_argument("--init", default=None, help="start from these weights (a plain state_dict): fine-tuning")
    p.add_argument("--dc-loss", type=float, default=None, metavar="BAND_WEIGHT",
                   help="train behind the data-consistency projection (AcquiredBandLoss with this weight on the "
                        "unprojected L1); validation then scores the projected output, as inference runs it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget of the training steps: stop (checkpoint, export) when it is spent")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--export", default=None, help="write the final weights here as a plain state_dict")
    args = p.parse_args(argv)
    try:
        args.shares = parse_shares(args.train_files)
        check_positive_int("--remaps", args.remaps, minimum=0)
    except ValueError as exc:
        p.error(str(exc))
    if args.patch < 2 or args.patch % 2:
        p.error(f"--patch must be an even size >= 2, got {args.patch}")
    return args


def verified_paths(data_dir: Path, names: list[str]) -> list[Path]:
    """The training files, each checked against its sha256 in data_specs/shared_data.json."""
    try:
        return [verified_path(name, data_dir, spec=DATA_SPEC) for name in names]
    except InputError as exc:
        raise SystemExit(str(exc)) from exc


def remapped(vol: np.ndarray, randomiser: ContrastRandomiser, n: int, name: str) -> list[np.ndarray]:
    """``vol`` (normalised) and ``n`` copies under random intensity remaps, each normalised again."""
    out = [vol]
    for _ in range(n):
        lut = randomiser.draw_lut()
        out.append(normalise_volume(ContrastRandomiser.apply_lut(vol, lut)))
        LOG.info("%s: remap at knots %s -> %s", name, LUT_KNOTS.tolist(), np.round(lut, 3).tolist())
    return out


def load_data(
    paths: list[Path], slab: tuple[float, float], lr_size: int, *, remaps: int = 0, seed: int = 0
) -> tuple[list[DegradedStack], list[str], list[DegradedStack]]:
    """Training stacks (three axes of each training part; a single 2D slice whole, in its plane; each
    also under ``remaps`` random intensity remaps), the file name of each training stack, and validation
    stacks (axial slab slices of the 3D volumes, not remapped)."""
    train, groups, val = [], [], []
    randomiser = ContrastRandomiser(seed=seed + 1000)
    for path in paths:
        img = nib.as_closest_canonical(nib.load(str(path)))  # RAS: axis 2 is inferior -> superior
        vol = normalise_volume(np.asarray(img.dataobj, dtype=np.float32))
        if vol.ndim == 2:
            vol = vol[..., None]
        n = vol.shape[2]
        if n == 1:  # one 2D slice: all of it trains, in its own plane (k-space truncated in-plane)
            crop = vol[: vol.shape[0] // 2 * 2, : vol.shape[1] // 2 * 2]
            for version in remapped(crop, randomiser, remaps, path.name):
                train.append(DegradedStack.from_volume(version, 2))
                groups.append(path.name)
            LOG.info("%s: one %dx%d slice, all of it for training", path.name, *crop.shape[:2])
            continue
        start, stop = int(round(slab[0] * n)), int(round(slab[1] * n))
        parts, held = split_volume(vol, axis=2, start=start, stop=stop)
        for part in parts:
            for version in remapped(part, randomiser, remaps, path.name):
                for axis in range(3):
                    others = [version.shape[a] for a in range(3) if a != axis]
                    if min(others) >= 2 * lr_size:
                        train.append(DegradedStack.from_volume(version, axis))
                        groups.append(path.name)
        val_stack = DegradedStack.from_volume(held, axis=2)
        val.append(DegradedStack(hr=val_stack.hr[::2], lr=val_stack.lr[::2], factor=2))
        LOG.info("%s: shape %s, held-out axial slab [%d, %d), train parts %s", path.name, vol.shape, start, stop,
                 [p.shape for p in parts])
    return train, groups, val


def validate(net: torch.nn.Module, stacks: list[DegradedStack], *, consistent: bool = False) -> tuple[float, float]:
    """Mean PSNR (data_range 1) of the network (its output projected on the input's band when
    ``consistent``) and of bicubic over all validation slices."""
    net.eval()
    sr_vals, bic_vals = [], []
    with torch.inference_mode():
        for s in stacks:
            for k in range(s.lr.shape[0]):
                lr = torch.from_numpy(s.lr[k][None, None])
                sr = net(lr)
                sr = (project_acquired_band(sr, lr) if consistent else sr)[0, 0].numpy()
                bic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)[0, 0].numpy()
                sr_vals.append(psnr(sr, s.hr[k], data_range=1.0))
                bic_vals.append(psnr(bic, s.hr[k], data_range=1.0))
    net.train()
    return float(np.mean(sr_vals)), float(np.mean(bic_vals))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.FileHandler(out / "train.log"), logging.StreamHandler(sys.stdout)],
    )
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    LOG.info("args: %s", json.dumps(vars(args)))

    paths = verified_paths(Path(args.data_dir), list(args.shares))
    lr_size = args.patch // 2
    t0 = time.time()
    train_stacks, groups, val_stacks = load_data(paths, tuple(args.slab), lr_size, remaps=args.remaps, seed=args.seed)
    sampler = PairSampler(train_stacks, lr_size=lr_size, seed=args.seed, noise_prob=args.noise_prob,
                          noise_sigma=args.noise_sigma,
                          shaping=SpectralShaping(prob=args.shaping, max_sigma=args.shaping_sigma) if args.shaping > 0 else None,
                          groups=groups, shares={k: v for k, v in args.shares.items() if v is not None})
    for name in args.shares:
        LOG.info("draw share of %s: %.3f", name, sum(w for w, g in zip(sampler.weights, sampler.groups) if g == name))
    LOG.info("%d training stacks (%d slices), %d validation slices, prepared in %.1f s", len(sampler.stacks),
             sum(s.lr.shape[0] for s in sampler.stacks), sum(s.lr.shape[0] for s in val_stacks), time.time() - t0)

    if args.arch == "swinir":
        net, described = SwinIRLight(2, 1, 1, scale=2), "SwinIRLight(2, 1, 1, scale=2)"
    else:
        net = SRUNet(2, 1, 1, scale=2, channels=tuple(args.channels))
        described = f"SRUNet(2, 1, 1, scale=2, channels={tuple(args.channels)})"
    LOG.info("%s: %d parameters", described, sum(p.numel() for p in net.parameters()))
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
        LOG.info("initial weights: %s", args.init)
    consistent = args.dc_loss is not None
    band_loss = AcquiredBandLoss(args.dc_loss) if consistent else None
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, best = 0, -math.inf
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt["best_psnr"])
        torch.set_rng_state(ckpt["torch_rng"])
        sampler.rng.bit_generator.state = ckpt["numpy_rng"]
        LOG.info("resumed from %s at step %d (best validation PSNR %.3f dB)", ckpt_path, step, best)

    def checkpoint() -> None:
        save_atomic(
            {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "best_psnr": best,
             "torch_rng": torch.get_rng_state(), "numpy_rng": sampler.rng.bit_generator.state, "args": vars(args)},
            ckpt_path,
        )

    if step == 0:
        sr, bic = validate(net, val_stacks, consistent=consistent)
        LOG.info("val step 0: SR %.3f dB, bicubic %.3f dB, gain %+.3f dB", sr, bic, sr - bic)
    def validate_and_keep_best() -> None:
        nonlocal best
        t_val = time.time()
        sr, bic = validate(net, val_stacks, consistent=consistent)
        if sr > best:
            best = sr
            save_atomic(net.state_dict(), out / "best.pt")
        LOG.info("val step %d: SR %.3f dB, bicubic %.3f dB, gain %+.3f dB (best SR %.3f dB) [%.1f s]", step, sr,
                 bic, sr - bic, best, time.time() - t_val)

    net.train()
    t_start, n_done, loss_sum = time.time(), 0, 0.0
    t_train = time.time()
    deadline = math.inf if args.minutes is None else t_train + 60 * args.minutes
    while step < args.steps:
        if time.time() > deadline:
            LOG.info("--minutes %.1f spent at step %d of %d", args.minutes, step, args.steps)
            validate_and_keep_best()
            checkpoint()
            break
        lr_np, hr_np = sampler.batch(args.batch_size)
        lr_t, hr_t = torch.from_numpy(lr_np), torch.from_numpy(hr_np)
        loss = train_step(net, opt, lr_t, hr_t, lr=warmup_cosine(step, total=args.steps, warmup=args.warmup, peak=args.lr),
                          loss_fn=(lambda sr, hr: band_loss(sr, lr_t, hr)) if consistent else F.l1_loss)
        step += 1
        n_done += 1
        loss_sum += loss.item()
        if step % args.log_every == 0:
            rate = n_done / (time.time() - t_start)
            LOG.info("step %d/%d  L1 %.5f  lr %.2e  %.2f steps/s", step, args.steps, loss_sum / n_done,
                     opt.param_groups[0]["lr"], rate)
            t_start, n_done, loss_sum = time.time(), 0, 0.0
        if step % args.val_every == 0 or step == args.steps:
            validate_and_keep_best()
            t_start, n_done, loss_sum = time.time(), 0, 0.0  # keep validation out of steps/s
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint()
    LOG.info("training done: %d steps, %.1f min this run", step, (time.time() - t_train) / 60)
    final = out / "final.pt"
    save_atomic(net.state_dict(), final)
    if args.export:
        export = Path(args.export)
        export.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(net.state_dict(), export)
        torch.load(export, weights_only=True)  # the plain state_dict must load this way
        LOG.info("exported final weights to %s (%d bytes)", export, export.stat().st_size)


if __name__ == "__main__":
    main()
