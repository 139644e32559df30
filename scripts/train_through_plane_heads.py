"""Train sub-pixel heads of other through-plane factors for the pretrained x4 through-plane SR-UNet.

The bundle's network (``bundles/mri_sr_selfsupervised/models/model.pt``, SR-UNet of scale ``(1, 4)``) has
one layer whose shape depends on the factor: the sub-pixel head. For each ``--factors`` ``s`` this script
rebuilds the network for ``(1, s)`` (:func:`monai_sr.training.through_plane.rescale_through_plane_network`,
head started from the x4 head interpolated in sub-pixel phase), **freezes the body** (the shipped weights
stay what they are) and trains the head alone on through-plane pairs of the training volumes
(:class:`~monai_sr.training.through_plane.ThroughPlanePairMaker` ``(s)``: Gaussian profile of FWHM ``s``
HR pixels, i.e. thickness = spacing, decimated x ``s``; MNI152 2009a and the pydeface mean head, sha256-checked;
Colin27 and pycortex S1 are never read), Adam + cosine decay, L1. The held-out axial slab of the training
volumes (:func:`monai_sr.training.datasets.split_held_out`) scores the phase-interpolated start and the
trained head against cubic B-spline along the coarse axis (PSNR, data range 1).

Output: one file of ``{"<s>.weight": tensor, "<s>.bias": tensor, ...}`` (plain tensors, loadable with
``torch.load(..., weights_only=True)``), read by ``rescale_through_plane_network(..., heads=...)``.

Examples::

    python scripts/train_through_plane_heads.py --factors 2 3 5 6 7 8 --steps 400 \\
        --out bundles/mri_sr_selfsupervised/models/heads.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from monai_sr.networks import SRUNet
from monai_sr.networks.blocks import pixel_shuffle
from monai_sr.training.datasets import RandomPairDataset, SliceDataset, load_training_volumes, split_held_out
from monai_sr.training.schedule import warmup_cosine
from monai_sr.training.through_plane import ThroughPlanePairMaker, rescale_through_plane_network, validate_through_plane
from monai_sr.training.trainer import save_atomic

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("train_through_plane_heads")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(REPO / "bundles" / "mri_sr_selfsupervised" / "models" / "model.pt"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--factors", type=int, nargs="+", default=[2, 3, 5, 6, 7, 8])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch side")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/through_plane_heads/heads.pt")
    return p.parse_args(argv)


def head_forward(net: SRUNet, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` with the body under no_grad (frozen) and the head trainable."""
    with torch.no_grad():
        feats = net.body(x)
    out = pixel_shuffle(net.head(feats), net._scale_list)
    return out + F.interpolate(x, scale_factor=net._scale_factor, mode="bicubic", align_corners=False)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    base = SRUNet(2, scale=(1, 4), channels=(32, 64, 128))
    base.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    base.eval()
    volumes = load_training_volumes(data_dir=args.data_dir)
    train_parts, slabs = split_held_out(volumes)
    heads, report = {}, {}
    for s in args.factors:
        t0 = time.perf_counter()
        net = rescale_through_plane_network(base, s, head_init="phase")
        for p in net.parameters():
            p.requires_grad_(False)
        for p in net.head.parameters():
            p.requires_grad_(True)
        maker = ThroughPlanePairMaker(s)
        val = SliceDataset(slabs, maker, axis=2, step=6, seed=args.seed)
        v0, cubic = validate_through_plane(net, val, s)
        ds = RandomPairDataset(train_parts, maker, length=args.steps * args.batch_size, patch=args.patch, seed=args.seed)
        opt = torch.optim.Adam(net.head.parameters(), lr=args.lr)
        losses = []
        for step, batch in enumerate(DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=0, drop_last=True)):
            for g in opt.param_groups:
                g["lr"] = warmup_cosine(step, total=args.steps, warmup=20, peak=args.lr)
            loss = F.l1_loss(head_forward(net, batch["image"]), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        v1, _ = validate_through_plane(net, val, s)
        heads[f"{s}.weight"] = net.head.weight.detach().clone()
        heads[f"{s}.bias"] = net.head.bias.detach().clone()
        report[s] = {"val_psnr_phase_start": v0, "val_psnr_trained": v1, "val_psnr_cubic": cubic,
                     "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:])),
                     "seconds": time.perf_counter() - t0}
        LOG.info("x%d: held-out slab PSNR phase start %.2f -> trained head %.2f dB (cubic B-spline %.2f), L1 %.4f -> %.4f, %.0f s",
                 s, v0, v1, cubic, report[s]["loss_first"], report[s]["loss_last"], report[s]["seconds"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(heads, out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "report": report}, indent=1))
    LOG.info("written %s", out)


if __name__ == "__main__":
    main()
