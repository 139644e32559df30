"""Fine-tune the bundle's DnCNN on domain-randomised contrasts and slice thicknesses (blind Rician noise).

Starts from a checkpoint (default: the shipped ``models/model.pt``) and trains on a pool of volumes drawn
by :class:`monai_sr.training.synth.ContrastRandomiser`: random contrasts from nilearn's MNI152 2009a
grey/white-matter probability maps, and the two real training T1s (MNI152 2009a, pydeface mean head)
under random intensity remaps. With probability ``--thick-prob`` a drawn volume is also averaged over
``2..--thick-max`` consecutive slices along a random axis (a rect slice profile on the same grid), so the
network sees in-plane slices of thick-slice scans (partial volume across the slice). One volume of the
pool is replaced every ``--refresh`` steps. Pairs: :class:`monai_sr.training.denoise.RicianDenoisePairs`
(Rician sigma uniform in ``--sigma`` as fractions of the bright signal, gain augmentation, and with
probability 0.5 a zoom in ``--zoom``: out for finer anatomy per pixel, in for scans interpolated on the scanner)
on the training parts of each volume; an axial slab ``[0.60, 0.72)`` of each source is held out.

Real scans (0.5.0): ``--real-files NAME:SHARE ...`` adds files of the shared data folder (sha256-checked,
never the held-out Colin27) drawn with that fixed share of the batch items, as they are (their own noise
stays in the target: the network learns to keep what a real scan's reference holds), under the same gain
and zoom augmentation. A 3D scan trains outside its held-out axial slab, along all three axes, and with
probability ``--thick-prob`` from a copy averaged over 3 or 5 slices along its slice axis; a single 2D slice
trains whole, in its plane. ``--export`` writes the final weights (batch norm re-estimated as for ``best.pt``):
a run with real scans is taken at its last step, since the validation slab has no real scan.

Validation (Colin27 and every other held-out scan are never read): whole axial slices of the MNI slab
under four fixed-seed random contrasts and its own T1 contrast, each also 4-slice thick, with Rician 5%;
PSNR with data range 1 (= the bright signal); the batch-norm statistics are first re-estimated over
``--bn-recal`` batches of training pairs (plain average instead of the momentum average of the last few
batches; training goes on with its own); the best mean is ``best.pt`` (with the re-estimated statistics).

Data: ``--data-dir`` (default :func:`monai_sr.training.datasets.shared_data_dir`); ``--tissue-maps``
holds nilearn 0.14.1's ``mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` (sha256 in
``data_specs/tissue_maps.json``). Checkpoints (model, optimiser, step, RNG states) every ``--ckpt-every``
steps, written atomically; ``--resume`` continues. Example::

    python bundles/mri_denoise_dncnn/scripts/train_dr.py --out runs/denoise_dr --steps 4000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from monai_sr.networks import DnCNN
from monai_sr.training.datasets import load_training_volumes, parse_shares, split_held_out
from monai_sr.training.denoise import RicianDenoisePairs
from monai_sr.training.schedule import warmup_cosine
from monai_sr.training.synth import ContrastRandomiser, load_sources
from monai_sr.training.trainer import load_training_state, save_atomic, save_training_state
from monai_sr.transforms.artefacts import rician_noise
from monai_sr.transforms.intensity import robust_max
from monai_sr.validation.metrics import psnr

BUNDLE = Path(__file__).resolve().parents[1]
NETWORK = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "depth": 12, "features": 48, "cbam_every": 3, "cbam_reduction": 4}
LOG = logging.getLogger("train_dr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/denoise_dr")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--tissue-maps", default="runs/data/nilearn-0.14.1")
    p.add_argument("--init", default=str(BUNDLE / "models/model.pt"))
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--sigma", type=float, nargs=2, default=(0.01, 0.12))
    p.add_argument("--zoom", type=float, nargs=2, default=(0.5, 2.0), help="zoom range (< 1 out, > 1 in), drawn with p 0.5")
    p.add_argument("--thick-prob", type=float, default=0.4)
    p.add_argument("--thick-max", type=int, default=6)
    p.add_argument("--refresh", type=int, default=100)
    p.add_argument("--pool", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--bn-recal", type=int, default=64, help="batches of training pairs that re-estimate the batch-norm "
                   "statistics (cumulative average) before each validation and the saved weights; 0: off")
    p.add_argument("--real-files", nargs="*", default=[], metavar="NAME:SHARE",
                   help="real scans of the shared data folder, each with its fixed share of the batch items")
    p.add_argument("--export", default=None, help="also write the final weights here (plain state_dict)")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    try:
        args.real_shares = parse_shares(args.real_files)
    except ValueError as exc:
        p.error(str(exc))
    if any(v is None for v in args.real_shares.values()) or sum(args.real_shares.values()) > 1:
        p.error("--real-files: every file needs NAME:SHARE, shares summing to at most 1")
    return args


def real_parts(names: list[str], data_dir: str | None, thick: tuple[int, ...] = (3, 5)) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per named real scan (:func:`~monai_sr.training.datasets.load_training_volumes`: sha256-checked, RAS,
    normalised by the robust max): ``(thin, thick)`` training parts, ``(X, Y, Z)`` arrays. A 3D scan's thin
    parts lie outside its held-out axial slab; its thick ones are the same parts of copies averaged over each
    of ``thick`` slices along axis 2 (drawn by :func:`main` with ``--thick-prob``). A 2D slice gives itself,
    ``(X, Y, 1)``, and no thick part."""
    out = []
    for name, vol in zip(names, load_training_volumes(names, data_dir)):
        vol = vol[..., None] if vol.ndim == 2 else vol
        if vol.shape[2] == 1:
            out.append(([vol], []))
            continue
        thick_parts = [p for k in thick for p in split_held_out([thicken(vol, 2, k)], axis=2)[0]]
        out.append((split_held_out([vol], axis=2)[0], thick_parts))
        LOG.info("%s: %s, %d + %d thick training parts", name, vol.shape, len(out[-1][0]), len(thick_parts))
    return out


def thicken(vol: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Mean of ``k`` consecutive slices along ``axis`` on the same grid (a rect slice profile of ``k`` slices)."""
    return ndimage.uniform_filter1d(vol, size=k, axis=axis, mode="nearest")


def validation_set(gm, wm, t1) -> list[tuple[np.ndarray, np.ndarray]]:
    """(noisy, clean) whole axial slices of the MNI held-out slab: 4 random contrasts + T1, thin and 4-thick."""
    rnd = ContrastRandomiser(seed=10_000)
    vols = [rnd.from_tissue_maps(gm, wm, t1)[0] for _ in range(4)] + [t1 / robust_max(t1)]
    rng = np.random.default_rng(10_001)
    out = []
    for vol in vols:
        for k in (1, 4):
            v = thicken(vol, 2, k) if k > 1 else vol
            slab = split_held_out([v], axis=2)[1][0]
            slab = slab / np.float32(robust_max(v))
            for z in range(0, slab.shape[2], 6):
                clean = np.ascontiguousarray(slab[:, :, z])
                out.append((rician_noise(clean, 0.05, rng), clean))
    return out


def validate(net: torch.nn.Module, val: list[tuple[np.ndarray, np.ndarray]]) -> float:
    net.eval()
    scores = []
    with torch.inference_mode():
        for noisy, clean in val:
            den = net(torch.from_numpy(noisy[None, None]))[0, 0].numpy().astype(np.float64)
            scores.append(psnr(den, clean, data_range=1.0))
    net.train()
    return float(np.mean(scores))


def recalibrate_bn(net: torch.nn.Module, batches) -> None:
    """Re-estimate every BatchNorm's running mean/variance as the plain average over ``batches`` (inputs,
    no gradients): the momentum-0.1 averages of a fine-tuning run follow the last few varied batches."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(out / "train.log"), logging.StreamHandler(sys.stdout)])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    LOG.info("args: %s", json.dumps(vars(args)))
    sources = load_sources(args.data_dir, args.tissue_maps)
    gm, wm, t1 = sources.gm, sources.wm, sources.t1
    rnd = ContrastRandomiser(seed=args.seed)
    make_pair = RicianDenoisePairs(sigma_range=args.sigma, gain_range=(0.5, 1.2), zoom_range=args.zoom, zoom_prob=0.5)

    def draw() -> tuple[list[np.ndarray], str]:
        vol, what = rnd.draw(sources)
        if rnd.rng.random() < args.thick_prob:
            axis, k = int(rnd.rng.integers(3)), int(rnd.rng.integers(2, args.thick_max + 1))
            vol = thicken(vol, axis, k)
            what += f", {k} slices thick along {axis}"
        vol = vol / np.float32(robust_max(vol))
        return split_held_out([vol], axis=2)[0], what

    val = validation_set(gm, wm, t1)
    net = DnCNN(**NETWORK)
    net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, best = 0, -math.inf
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        step, best = load_training_state(ckpt_path, network=net, optimizer=opt, rng=rnd.rng)
        LOG.info("resumed at step %d", step)
    pool = [draw()[0] for _ in range(args.pool)]
    pair_rng = np.random.default_rng([args.seed, step])
    real = real_parts(list(args.real_shares), args.data_dir)
    real_p = np.array(list(args.real_shares.values()) + [1.0 - sum(args.real_shares.values())])

    def real_part(thin: list[np.ndarray], thick: list[np.ndarray]) -> np.ndarray:
        parts = thick if thick and pair_rng.random() < args.thick_prob else thin
        return parts[int(pair_rng.integers(len(parts)))]

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        items = []
        for _ in range(args.batch_size):
            src = int(pair_rng.choice(len(real_p), p=real_p))
            if src < len(real):
                items.append(make_pair(real_part(*real[src]), pair_rng, args.patch))
                continue
            parts = pool[int(pair_rng.integers(len(pool)))]
            items.append(make_pair(parts[int(pair_rng.integers(len(parts)))], pair_rng, args.patch))
        return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])

    def evaluate() -> tuple[float, dict]:
        if args.bn_recal:
            state = {k: v.clone() for k, v in net.state_dict().items()}
            recalibrate_bn(net, (batch()[0] for _ in range(args.bn_recal)))
            score = validate(net, val)
            recal = {k: v.clone() for k, v in net.state_dict().items()}
            net.load_state_dict(state)  # training goes on with its own running averages
            return score, recal
        return validate(net, val), {k: v.clone() for k, v in net.state_dict().items()}

    if step == 0:
        LOG.info("val step 0: %.3f dB (%d slices); with re-estimated batch norm %.3f dB", validate(net, val), len(val), evaluate()[0])
    net.train()
    t_start, n_done, loss_sum = time.time(), 0, 0.0
    while step < args.steps:
        if step % args.refresh == 0 and step > 0:
            parts, what = draw()
            pool = pool[1:] + [parts]
            LOG.info("pool: %s", what)
        x, y = batch()
        flips = [d for d in (2, 3) if pair_rng.random() < 0.5]
        if flips:
            x, y = x.flip(flips), y.flip(flips)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, total=args.steps, warmup=args.warmup, peak=args.lr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = net(x)
        loss = F.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        n_done += 1
        loss_sum += loss.item()
        if step % args.log_every == 0:
            LOG.info("step %d/%d  MSE %.6f  lr %.2e  %.2f steps/s", step, args.steps, loss_sum / n_done,
                     opt.param_groups[0]["lr"], n_done / (time.time() - t_start))
            t_start, n_done, loss_sum = time.time(), 0, 0.0
        if step % args.val_every == 0 or step == args.steps:
            v, weights = evaluate()
            if v > best:
                best = v
                save_atomic(weights, out / "best.pt")
            LOG.info("val step %d: %.3f dB (best %.3f)", step, v, best)
            t_start, n_done, loss_sum = time.time(), 0, 0.0
        if step % args.ckpt_every == 0 or step == args.steps:
            save_training_state(ckpt_path, network=net, optimizer=opt, step=step, best=best, rng=rnd.rng)
    save_atomic(net.state_dict(), out / "final.pt")
    if args.export:
        final = evaluate()
        save_atomic(final[1], Path(args.export))
        LOG.info("exported %s (val %.3f dB with re-estimated batch norm)", args.export, final[0])
    LOG.info("done: %d steps", step)


if __name__ == "__main__":
    main()
