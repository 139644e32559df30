"""Fine-tune the x2 in-plane SR-UNet on domain-randomised contrasts (contrast-agnostic pretraining).

Starts from a checkpoint (default: the shipped ``bundles/mri_sr_unet/models/model.pt``) and trains on a
pool of volumes drawn by :class:`monai_sr.training.synth.ContrastRandomiser`: random contrasts from
nilearn's MNI152 2009a grey/white-matter probability maps, and the two real training T1s under random
intensity remaps. The pool is refreshed every ``--refresh`` steps. Pairs are made as for the plain
training (:mod:`monai_sr.training.pairs`: whole slices along three axes k-space truncated x2, aligned
crops, flips, gain, Rician noise on the LR). An axial slab of each source ``[0.60, 0.72)`` is held out;
validation is on fixed-seed randomised contrasts of the MNI slab (Colin27 is never read).

Data: ``--data-dir`` (default :func:`monai_sr.training.datasets.shared_data_dir`) holds the shared training volumes of
``data_specs/shared_data.json``; ``--tissue-maps`` holds nilearn 0.14.1's
``mni_icbm152_{gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` (sha256 in ``data_specs/tissue_maps.json``;
``pip download nilearn==0.14.1 --no-deps`` and unzip those two files from the wheel).

Checkpoints (model, optimiser, step, RNG states) every ``--ckpt-every`` steps, written atomically;
``--resume`` continues from them. Example (the command that made the shipped weights is in
``bundles/mri_sr_unet/docs/training.md``)::

    python scripts/train_sr_unet_dr.py --out runs/sr_unet_dr --steps 6000 --threads 1
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

from monai_sr.inference.consistency import project_acquired_band
from monai_sr.networks import SRUNet
from monai_sr.training.datasets import split_held_out
from monai_sr.training.pairs import DegradedStack, PairSampler, normalise_volume
from monai_sr.training.schedule import warmup_cosine
from monai_sr.training.synth import ContrastRandomiser, load_sources
from monai_sr.training.trainer import load_training_state, save_atomic, save_training_state, train_step
from monai_sr.transforms.kspace import fourier_resample
from monai_sr.validation.metrics import psnr

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("train_sr_unet_dr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/sr_unet_dr")
    p.add_argument("--data-dir", default=None, help="shared data folder (default: monai_sr.training.datasets.shared_data_dir)")
    p.add_argument("--tissue-maps", default=None, help="folder with nilearn's gm/wm maps (default: the data folder, where monai-sr data fetch puts them)")
    p.add_argument("--init", default=str(REPO / "bundles/mri_sr_unet/models/model.pt"), help="starting weights")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--refresh", type=int, default=200, help="draw a new volume into the pool every N steps")
    p.add_argument("--pool", type=int, default=6, help="volumes in the pool")
    p.add_argument("--noise-prob", type=float, default=0.5)
    p.add_argument("--noise-sigma", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def stacks_of(vol: np.ndarray, lr_size: int) -> list[DegradedStack]:
    out = []
    for part in split_held_out([vol])[0]:
        for axis in range(3):
            if min(part.shape[a] for a in range(3) if a != axis) >= 2 * lr_size:
                out.append(DegradedStack.from_volume(part, axis))
    return out


def validate(net: torch.nn.Module, val: list[DegradedStack]) -> dict[str, float]:
    net.eval()
    rows = {"zf": [], "sr": [], "sr_dc": []}
    with torch.inference_mode():
        for s in val:
            for k in range(s.lr.shape[0]):
                lr = s.lr[k]
                sr = net(torch.from_numpy(lr[None, None]))[0, 0].numpy().astype(np.float64)
                hr = s.hr[k]
                rows["zf"].append(psnr(fourier_resample(lr, hr.shape, (0, 1)), hr, data_range=1.0))
                rows["sr"].append(psnr(sr, hr, data_range=1.0))
                rows["sr_dc"].append(psnr(project_acquired_band(torch.from_numpy(sr), torch.from_numpy(lr)).numpy(), hr, data_range=1.0))
    net.train()
    return {k: float(np.mean(v)) for k, v in rows.items()}


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
    gm, wm, t1 = sources.gm, sources.wm, sources.t1  # the tissue maps share the MNI T1's grid
    rnd = ContrastRandomiser(seed=args.seed)
    lr_size = args.patch // 2

    def draw() -> tuple[np.ndarray, str]:
        return rnd.draw(sources)

    val_rnd = ContrastRandomiser(seed=10_000)
    val = []
    for _ in range(4):
        vol = val_rnd.from_tissue_maps(gm, wm, t1)[0]
        slab = DegradedStack.from_volume(split_held_out([vol])[1][0], axis=2)
        val.append(DegradedStack(hr=slab.hr[::4], lr=slab.lr[::4], factor=2))
    val.append(DegradedStack.from_volume(split_held_out([normalise_volume(t1)])[1][0][:, :, ::4], axis=2))

    net = SRUNet(2, 1, 1, scale=2)
    net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, best = 0, -math.inf
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        step, best = load_training_state(ckpt_path, network=net, optimizer=opt, rng=rnd.rng)
        LOG.info("resumed at step %d", step)
    pool: list[list[DegradedStack]] = []
    t0 = time.time()
    while len(pool) < args.pool:
        vol, what = draw()
        pool.append(stacks_of(vol, lr_size))
    LOG.info("pool of %d volumes in %.1f s", len(pool), time.time() - t0)
    sampler = PairSampler([s for v in pool for s in v], lr_size=lr_size, seed=args.seed + step,
                          noise_prob=args.noise_prob, noise_sigma=args.noise_sigma)
    if step == 0:
        LOG.info("val step 0: %s", json.dumps(validate(net, val)))
    net.train()
    t_start, n_done, loss_sum = time.time(), 0, 0.0
    while step < args.steps:
        if step % args.refresh == 0 and step > 0:
            vol, what = draw()
            pool = pool[1:] + [stacks_of(vol, lr_size)]
            sampler = PairSampler([s for v in pool for s in v], lr_size=lr_size, seed=args.seed + step,
                                  noise_prob=args.noise_prob, noise_sigma=args.noise_sigma)
        lr_np, hr_np = sampler.batch(args.batch_size)
        loss = train_step(net, opt, torch.from_numpy(lr_np), torch.from_numpy(hr_np),
                          lr=warmup_cosine(step, total=args.steps, warmup=args.warmup, peak=args.lr))
        step += 1
        n_done += 1
        loss_sum += loss.item()
        if step % args.log_every == 0:
            LOG.info("step %d/%d  L1 %.5f  lr %.2e  %.2f steps/s", step, args.steps, loss_sum / n_done,
                     opt.param_groups[0]["lr"], n_done / (time.time() - t_start))
            t_start, n_done, loss_sum = time.time(), 0, 0.0
        if step % args.val_every == 0 or step == args.steps:
            v = validate(net, val)
            if v["sr_dc"] > best:
                best = v["sr_dc"]
                save_atomic(net.state_dict(), out / "best.pt")
            LOG.info("val step %d: %s (best SR+DC %.3f dB)", step, json.dumps(v), best)
            t_start, n_done, loss_sum = time.time(), 0, 0.0
        if step % args.ckpt_every == 0 or step == args.steps:
            save_training_state(ckpt_path, network=net, optimizer=opt, step=step, best=best, rng=rnd.rng)
    save_atomic(net.state_dict(), out / "final.pt")
    LOG.info("done: %d steps", step)


if __name__ == "__main__":
    main()
