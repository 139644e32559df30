"""Pretrain the 2D through-plane SR-UNet (scale (1, s)) that the per-volume fit starts from.

Pairs (:class:`monai_sr.training.through_plane.ThroughPlanePairMaker` through the shared
:class:`monai_sr.training.datasets.RandomPairDataset`): planes of the 1 mm training volumes (MNI152 2009a
and the pydeface mean head; sha256-checked; Colin27 is held out and never read here), degraded along one
plane axis by a Gaussian slice profile of FWHM = the slice thickness (``--thickness``, in HR pixels,
default the factor: 4 mm slices of 4 mm thickness at x4) and decimated by ``--factor``: input ``(p, p)``,
target ``(p, s p)``. An axial slab of each volume (fractions ``[0.60, 0.72)`` of S) is held out for
validation: its axial slices degraded along A-P, PSNR (``data_range`` 1, normalised units) of the network
and of cubic B-spline interpolation (``scipy.ndimage.zoom(order=3, grid_mode=True)``, the field-of-view
rule of DESIGN.md) along the coarse axis.

Training: Adam, L1 loss, linear warm-up then cosine decay to 1 % of ``--lr``, progressive patches
(``--patch-schedule``), one thread. Checkpoints (network, optimiser, step, seed) every epoch of
``--epoch-steps`` steps; ``--resume`` continues from the last one with the same data (items are drawn
from ``(seed, epoch, index)``).

Examples::

    python scripts/pretrain_through_plane.py --out runs/through_plane --steps 8000 --export runs/through_plane/model.pt
    python scripts/pretrain_through_plane.py --out runs/through_plane --steps 8000 --resume   # continue after a stop
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from monai_sr.networks import SRUNet
from monai_sr.training.datasets import RandomPairDataset, SliceDataset, load_training_volumes, shared_data_dir, split_held_out
from monai_sr.training.schedule import warmup_cosine
from monai_sr.training.through_plane import ThroughPlanePairMaker, validate_through_plane
from monai_sr.training.trainer import save_atomic, train_step

LOG = logging.getLogger("pretrain_through_plane")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/through_plane", help="folder for checkpoints and the log")
    p.add_argument("--data-dir", default=str(shared_data_dir()))
    p.add_argument("--factor", type=int, default=4, help="through-plane factor s (network scale (1, s))")
    p.add_argument("--thickness", type=float, default=None, help="slice profile FWHM in HR pixels (default: factor)")
    p.add_argument("--profile", default="gaussian", choices=["gaussian", "rect"])
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--epoch-steps", type=int, default=250, help="steps per epoch (checkpoint + validation)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch-schedule", default="0:24,2000:32", help="'step:patch,...' LR patch side from that step on")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--export", default=None, help="write the final weights here as a plain state_dict")
    return p.parse_args(argv)


def patch_at(step: int, schedule: str) -> int:
    """The LR patch side in force at ``step`` for a schedule ``'0:24,2000:32'``."""
    pairs = sorted((int(a), int(b)) for a, b in (item.split(":") for item in schedule.split(",")))
    return [p for s, p in pairs if s <= step][-1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "train.log")])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    LOG.info("args %s", json.dumps(vars(args)))

    volumes = load_training_volumes(data_dir=args.data_dir)
    train_parts, slabs = split_held_out(volumes)
    maker = ThroughPlanePairMaker(args.factor, thickness=args.thickness, profile=args.profile)
    ds = RandomPairDataset(train_parts, maker, length=args.epoch_steps * args.batch_size,
                           patch=patch_at(0, args.patch_schedule), seed=args.seed)
    val = SliceDataset(slabs, maker, axis=2, step=3, seed=args.seed)
    net = SRUNet(2, scale=(1, args.factor), channels=tuple(args.channels))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, history = 0, []
    ckpt = out / "checkpoint.pt"
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        net.load_state_dict(state["network"])
        opt.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), json.loads(state["history"])
        LOG.info("resumed at step %d", step)
    net.train()
    t0 = time.perf_counter()
    while step < args.steps:
        epoch = step // args.epoch_steps
        ds.set_epoch(epoch)
        ds.patch = patch_at(step, args.patch_schedule)
        loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=True)
        losses = []
        for batch in loader:
            if step >= args.steps:
                break
            loss = train_step(net, opt, batch["image"], batch["label"],
                              lr=warmup_cosine(step, total=args.steps, warmup=args.warmup, peak=args.lr))
            losses.append(float(loss))
            step += 1
        v_net, v_cubic = validate_through_plane(net, val, args.factor)
        rec = {"step": step, "epoch": epoch, "patch": ds.patch, "loss": float(np.mean(losses)), "val_psnr": v_net,
               "val_psnr_cubic": v_cubic, "seconds": time.perf_counter() - t0}
        history.append(rec)
        LOG.info("step %d epoch %d patch %d loss %.5f val PSNR %.3f dB (cubic %.3f, +%.3f) %.0f s", step, epoch,
                 ds.patch, rec["loss"], v_net, v_cubic, v_net - v_cubic, rec["seconds"])
        save_atomic({"network": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "seed": args.seed,
                     "args": json.dumps(vars(args)), "history": json.dumps(history)}, ckpt)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    if args.export:
        save_atomic(net.state_dict(), Path(args.export))
        LOG.info("exported %s", args.export)


if __name__ == "__main__":
    main()
