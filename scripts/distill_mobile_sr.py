"""Distil a small RCAN teacher into MobileSR (x2 in-plane SR) and compare it with MobileSR trained alone.

Four commands (run them in this order; each training command keeps checkpoints in ``--out`` and
continues from the newest one with ``--resume``):

``measure``   training steps/s of the teacher, the plain student and the distilled student (a few steps
              each), to size the runs to the time available.
``teacher``   trains the teacher: :class:`~monai_sr.networks.RCAN` (small: 32 features, 3 groups of 4
              blocks) plus a bicubic global residual (:class:`InterpolationResidual`; RCAN itself has
              none, SRUNet and MobileSR do, and a short CPU run cannot afford to learn the identity).
``student``   trains :class:`~monai_sr.networks.MobileSR` (default size, 69k parameters); with
              ``--teacher PATH --kd-weight W`` by distillation (:mod:`monai_sr.training.distill`),
              without them plainly. Same seed -> same initial weights and the same batches, so with equal
              ``--steps`` the only difference between the two students is the teacher term of the loss.
``evaluate``  scores bicubic, the teacher and both students on held-out Colin27 and writes a JSON.

Training data: MNI152 2009a and the pydeface mean head (sha256-checked,
:func:`monai_sr.training.datasets.load_training_volumes`), random 2D crops of slices along all three
axes, k-space truncated x2 (:class:`~monai_sr.training.datasets.InPlaneSRPairs`, Rician noise on 20% of
inputs), flips and intensity jitter (:class:`~monai_sr.training.datasets.RandomPairDataset`). Training
runs on MONAI's SupervisedTrainer (:class:`~monai_sr.training.distill.DistillationTrainer` for the
distilled student) with MONAI's checkpoint, LR-schedule and stats handlers. One thread throughout.

Evaluation (held out, never used in training or for any choice): Colin27 T1 1 mm, RAS, cropped to an even
in-plane size (180 x 216), k-space truncated in-plane x2 (90 x 108); input and reference are divided by
the robust maximum of the low-resolution volume (what the inference pipeline does to its input). The 71
axial slices 20, 22, ..., 160 are scored inside :func:`~monai_sr.validation.metrics.head_mask` of the
reference with :func:`~monai_sr.validation.metrics.slice_metrics` (data range = reference max - min in
the mask). FLOPs (:func:`~monai_sr.networks.count_flops`, 2 per multiply-add) and CPU time (one thread,
median of interleaved runs in one process) are for one 256 x 256 input slice (512 x 512 output).

Examples::

    python scripts/distill_mobile_sr.py measure
    python scripts/distill_mobile_sr.py teacher --out runs/distill/teacher --steps 800 --resume
    python scripts/distill_mobile_sr.py student --out runs/distill/student_plain --steps 400 --resume
    python scripts/distill_mobile_sr.py student --out runs/distill/student_kd --steps 400 --resume \\
        --teacher runs/distill/teacher/final.pt --kd-weight 1.0
    python scripts/distill_mobile_sr.py evaluate --runs runs/distill --json docs/distillation_results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import re
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from monai_sr.networks import RCAN, MobileSR, count_flops, count_parameters
from monai_sr.training.datasets import shared_data_dir

LOG = logging.getLogger("distill_mobile_sr")
COLIN27 = "colin27_t1_1mm.nii.gz"
TEACHER_KW = {"features": 32, "num_groups": 3, "num_blocks": 4, "reduction": 8}
STUDENT_KW: dict = {}  # MobileSR defaults: 24 features, 6 inverted residual blocks, expansion 4


class InterpolationResidual(nn.Module):
    """``net(x) + interpolate(x, scale, bicubic, align_corners=False)``: a global interpolation residual
    around an SR network ``net`` of scale ``net.scale`` (2D). ``align_corners=False`` keeps the field of
    view, as in SRUNet and MobileSR. Input ``(N, C, h, w)``, output ``(N, C, s h, s w)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.scale = tuple(net.scale)
        self._factor = [float(s) for s in self.scale]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + F.interpolate(x, scale_factor=self._factor, mode="bicubic", align_corners=False)


def make_teacher() -> nn.Module:
    return InterpolationResidual(RCAN(2, 1, 1, scale=2, **TEACHER_KW))


def make_student() -> nn.Module:
    return MobileSR(2, 1, 1, scale=2, **STUDENT_KW)


def load_weights(net: nn.Module, path: str | Path) -> nn.Module:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


# ----------------------------------------------------------------------------------------------- training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def train_opts(q: argparse.ArgumentParser, lr: float) -> None:
        q.add_argument("--out", required=True, help="folder for checkpoints, train.log and final.pt")
        q.add_argument("--steps", type=int, required=True, help="optimiser steps (a multiple of --epoch-length)")
        q.add_argument("--batch-size", type=int, default=16)
        q.add_argument("--patch", type=int, default=32, help="input (LR) patch size; the HR patch is twice it")
        q.add_argument("--lr", type=float, default=lr, help="peak learning rate (warm-up, cosine decay to 1%%)")
        q.add_argument("--warmup", type=int, default=50)
        q.add_argument("--epoch-length", type=int, default=50, help="steps per epoch = checkpoint interval")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--data-dir", default=str(shared_data_dir()))
        q.add_argument("--log-every", type=int, default=25)
        q.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")

    train_opts(sub.add_parser("teacher", help="train the RCAN teacher"), lr=5e-4)
    s = sub.add_parser("student", help="train MobileSR, with --teacher by distillation")
    train_opts(s, lr=1e-3)
    s.add_argument("--teacher", default=None, help="teacher weights (final.pt of the teacher run)")
    s.add_argument("--kd-weight", type=float, default=0.0, help="weight of the teacher term (0: no distillation)")
    m = sub.add_parser("measure", help="training steps/s of the three runs")
    m.add_argument("--steps", type=int, default=6)
    m.add_argument("--batch-size", type=int, default=16)
    m.add_argument("--patch", type=int, default=32)
    m.add_argument("--data-dir", default=str(shared_data_dir()))
    e = sub.add_parser("evaluate", help="score all on held-out Colin27")
    e.add_argument("--runs", default="runs/distill", help="folder with teacher/, student_plain/, student_kd/")
    e.add_argument("--data-dir", default=str(shared_data_dir()))
    e.add_argument("--suffix", default="", help="score student_plain<SUFFIX> and student_kd<SUFFIX> (other budgets)")
    e.add_argument("--json", default="docs/distillation_results.json")
    e.add_argument("--timing-rounds", type=int, default=9)
    args = p.parse_args(argv)
    if args.command in ("teacher", "student"):
        if args.steps < args.epoch_length or args.steps % args.epoch_length:
            p.error(f"--steps ({args.steps}) must be a positive multiple of --epoch-length ({args.epoch_length})")
    if args.command == "student" and (args.teacher is None) != (args.kd_weight == 0.0):
        p.error("distillation needs both --teacher and a positive --kd-weight (or neither, for the plain student)")
    return args


def build_trainer(args: argparse.Namespace, net: nn.Module, teacher: nn.Module | None, kd_weight: float,
                  epoch_length: int, max_epochs: int):
    """A SupervisedTrainer (DistillationTrainer with a teacher) on the shared pair dataset.

    Returns ``(trainer, extras)`` with the optimiser, scheduler and dataset in ``extras``.
    """
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler

    from monai_sr.training.datasets import CachedInPlaneSRPairs, RandomPairDataset, load_training_volumes
    from monai_sr.training.distill import DistillationLoss, DistillationTrainer
    from monai_sr.training.schedule import warmup_cosine_lambda
    from monai_sr.training.trainer import ProgressivePatch

    volumes = load_training_volumes(data_dir=args.data_dir)
    ds = RandomPairDataset(volumes, CachedInPlaneSRPairs(factor=2), length=args.batch_size * epoch_length,
                           patch=args.patch, seed=getattr(args, "seed", 0))
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=False, num_workers=0)
    opt = torch.optim.Adam(net.parameters(), lr=getattr(args, "lr", 1e-3))
    steps = getattr(args, "steps", epoch_length * max_epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_lambda(steps, getattr(args, "warmup", 50)))
    common = dict(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=loader, network=net,
                  optimizer=opt, epoch_length=epoch_length, decollate=False, optim_set_to_none=True)
    if teacher is not None:
        trainer = DistillationTrainer(teacher=teacher, loss_function=DistillationLoss(kd_weight=kd_weight), **common)
    else:
        trainer = SupervisedTrainer(loss_function=nn.L1Loss(), **common)
    ProgressivePatch(ds).attach(trainer)  # set_epoch each epoch: fresh, reproducible pairs
    LrScheduleHandler(sched, print_lr=False, epoch_level=False).attach(trainer)
    return trainer, {"optimizer": opt, "scheduler": sched, "dataset": ds}


def newest_checkpoint(out: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in out.glob("*checkpoint_epoch=*.pt") if (m := re.search(r"=(\d+)\.pt$", p.name))]
    return max(found)[1] if found else None


def train(args: argparse.Namespace) -> None:
    """Train the teacher or a student (see the module docstring); logs to ``OUT/train.log``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = _log_to(out / "train.log")
    try:
        _train(args, out)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def _log_to(path: Path) -> logging.Handler:
    """Send the root logger's INFO records (ours and MONAI's handlers') to ``path`` and to stdout (when
    nothing else prints them); returns the file handler, to be removed when the run ends."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(message)s")
    handler = logging.FileHandler(path)
    handler.setFormatter(fmt)
    root.addHandler(handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    return handler


def _train(args: argparse.Namespace, out: Path) -> None:
    from ignite.engine import Events
    from monai.handlers import CheckpointLoader, CheckpointSaver

    from monai_sr.training.distill import TEACHER_PRED
    from monai_sr.training.trainer import RunRecord

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)  # same seed -> same initial weights of the two students
    LOG.info("args: %s", json.dumps(vars(args)))

    teacher = None
    if args.command == "teacher":
        net, kind = make_teacher(), "teacher"
    else:
        net, kind = make_student(), "student_kd" if args.teacher else "student_plain"
        if args.teacher:
            teacher = load_weights(make_teacher(), args.teacher)
    LOG.info("%s: %s, %d parameters", kind, type(net).__name__, count_parameters(net))

    max_epochs = args.steps // args.epoch_length
    trainer, extras = build_trainer(args, net, teacher, getattr(args, "kd_weight", 0.0), args.epoch_length, max_epochs)
    record = RunRecord(args.seed, kind=kind, args=vars(args))
    record.attach(trainer)
    save_dict = {"network": net, "optimizer": extras["optimizer"], "lr_scheduler": extras["scheduler"],
                 "trainer": trainer, "run": record}
    ckpt = newest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        LOG.info("resuming from %s", ckpt)
        CheckpointLoader(load_path=str(ckpt), load_dict=save_dict, map_location="cpu").attach(trainer)
    CheckpointSaver(save_dir=str(out), save_dict=save_dict, save_interval=1, n_saved=1, file_prefix="checkpoint").attach(trainer)

    timer = {"t": time.time(), "n": 0, "loss": 0.0, "kd": 0.0}
    kd_loss = nn.L1Loss()

    @trainer.on(Events.ITERATION_COMPLETED)
    def log(engine) -> None:
        o = engine.state.output
        timer["n"] += 1
        timer["loss"] += float(o["loss"].detach())
        if TEACHER_PRED in o:  # the unweighted teacher term, for the log
            timer["kd"] += float(kd_loss(o["pred"].detach(), o[TEACHER_PRED]))
        if engine.state.iteration % args.log_every == 0:
            dt = time.time() - timer["t"]
            msg = (f"step {engine.state.iteration}/{args.steps}  loss {timer['loss'] / timer['n']:.5f}  "
                   f"lr {extras['optimizer'].param_groups[0]['lr']:.2e}  {timer['n'] / dt:.3f} steps/s")
            if TEACHER_PRED in o:
                msg += f"  |student-teacher| {timer['kd'] / timer['n']:.5f}"
            LOG.info(msg)
            timer.update(t=time.time(), n=0, loss=0.0, kd=0.0)

    t0 = time.time()
    trainer.run()
    LOG.info("done: %d steps, %.1f min in this process", trainer.state.iteration, (time.time() - t0) / 60)
    torch.save(net.state_dict(), out / "final.pt")
    LOG.info("wrote %s", out / "final.pt")


def measure(args: argparse.Namespace) -> None:
    """Steps/s of each run type over ``--steps`` steps (the first one not counted)."""
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from ignite.engine import Events

    args.seed, args.lr, args.warmup = 0, 1e-3, 1
    teacher = make_teacher()
    for name, net, t in (("teacher", make_teacher(), None), ("student_plain", make_student(), None),
                         ("student_kd", make_student(), teacher)):
        trainer, _ = build_trainer(args, net, t, 1.0 if t is not None else 0.0, args.steps, 1)
        stamps: list[float] = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
        trainer.run()
        rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        print(f"{name}: {rate:.3f} steps/s (batch {args.batch_size}, patch {args.patch}), "
              f"{count_parameters(net)} parameters", flush=True)


# --------------------------------------------------------------------------------------------- evaluation


def colin27_slices(data_dir: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Held-out Colin27: LR input ``(90, 108, n)`` and HR reference ``(180, 216, n)``, both divided by
    the robust maximum of the whole LR volume; ``n`` = 71 axial slices 20, 22, ..., 160."""
    from monai_sr.transforms.kspace import fourier_resample
    from monai_sr.transforms.intensity import robust_max

    path = Path(data_dir) / COLIN27
    _check_sha256(path)
    vol = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float32)
    a, b = (vol.shape[0] // 2) * 2, (vol.shape[1] // 2) * 2
    hr = vol[:a, :b]
    lr = fourier_resample(hr, (a // 2, b // 2), (0, 1)).astype(np.float32)
    scale = np.float32(robust_max(lr))
    ks = list(range(20, hr.shape[2] - 20, 2))
    return lr[:, :, ks] / scale, hr[:, :, ks] / scale, ks


def _check_sha256(path: Path) -> None:
    from monai_sr.errors import InputError
    from monai_sr.training.datasets import verified_path

    try:
        verified_path(path.name, path.parent)
    except InputError as exc:
        raise SystemExit(str(exc)) from exc


@torch.inference_mode()
def predict(net: nn.Module | None, lr: np.ndarray, batch: int = 8) -> np.ndarray:
    """Slice-wise x2 prediction of ``lr`` ``(h, w, n)`` -> ``(2h, 2w, n)``; ``net=None`` is bicubic."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(lr, 2, 0)))[:, None]
    outs = []
    for i in range(0, x.shape[0], batch):
        xb = x[i : i + batch]
        outs.append(F.interpolate(xb, scale_factor=2.0, mode="bicubic", align_corners=False) if net is None else net(xb))
    return np.moveaxis(torch.cat(outs)[:, 0].numpy(), 0, 2)


def time_per_slice(methods: dict[str, nn.Module | None], rounds: int, size: int = 256,
                   channels_last: bool = False) -> dict[str, float]:
    """Median seconds per ``(1, 1, size, size)`` input, one thread, runs interleaved across methods so a
    change of machine load hits all of them alike; two warm-up runs each. ``channels_last``: input and
    weights in NHWC (``torch.channels_last``), which oneDNN's CPU convolutions prefer."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(1, 1, size, size).contiguous(memory_format=fmt)
    nets = {k: (None if n is None else copy.deepcopy(n).to(memory_format=fmt)) for k, n in methods.items()}
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        for r in range(rounds + 2):
            for name, net in nets.items():
                t = time.perf_counter()
                (F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False) if net is None else net(x))
                if r >= 2:
                    times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def evaluate(args: argparse.Namespace) -> None:
    from monai_sr.transforms.kspace import fourier_resample
    from monai_sr.validation.metrics import head_mask, masked_data_range, slice_metrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    runs = Path(args.runs)
    methods: dict[str, nn.Module | None] = {
        "bicubic": None,
        "teacher (RCAN)": load_weights(make_teacher(), runs / "teacher" / "final.pt").eval(),
        "MobileSR without KD": load_weights(make_student(), runs / f"student_plain{args.suffix}" / "final.pt").eval(),
        "MobileSR with KD": load_weights(make_student(), runs / f"student_kd{args.suffix}" / "final.pt").eval(),
    }
    lr, hr, ks = colin27_slices(args.data_dir)
    mask = head_mask(hr)
    data_range = masked_data_range(hr, mask)
    LOG.info("Colin27: LR %s, HR %s, %d slices, data range %.4f", lr.shape, hr.shape, len(ks), data_range)
    preds = {name: predict(net, lr) for name, net in methods.items()}
    preds["zero-filled k-space (sinc)"] = fourier_resample(lr, hr.shape[:2], (0, 1)).astype(np.float32)
    timing = time_per_slice(methods, args.timing_rounds)
    timing_cl = time_per_slice(methods, args.timing_rounds, channels_last=True)
    results: dict[str, dict] = {}
    for name, pred in preds.items():
        m = slice_metrics(pred, hr, data_range=data_range, mask=mask, axis=2)
        net = methods.get(name)
        results[name] = {
            "psnr_pooled": float(m.pooled()["psnr"]),
            "ssim_pooled": float(m.pooled()["ssim"]),
            "psnr_slice_mean": float(np.nanmean(m.psnr)),
            "ssim_slice_mean": float(np.nanmean(m.ssim)),
            "psnr_per_slice": [round(float(v), 4) for v in m.psnr],
            "ssim_per_slice": [round(float(v), 5) for v in m.ssim],
            "parameters": count_parameters(net) if net is not None else 0,
            "flops_256": count_flops(net, (1, 1, 256, 256)) if net is not None else None,
            "cpu_seconds_256": timing.get(name),
            "cpu_seconds_256_channels_last": timing_cl.get(name),
        }
        LOG.info("%-28s PSNR %.3f dB  SSIM %.4f  params %s  time %s s (channels-last %s s)", name,
                 results[name]["psnr_pooled"], results[name]["ssim_pooled"], results[name]["parameters"],
                 results[name]["cpu_seconds_256"], results[name]["cpu_seconds_256_channels_last"])
    kd = np.array(results["MobileSR with KD"]["psnr_per_slice"])
    plain = np.array(results["MobileSR without KD"]["psnr_per_slice"])
    diff = kd - plain
    summary = {
        "kd_minus_plain_psnr_mean": float(diff.mean()),
        "kd_minus_plain_psnr_std": float(diff.std(ddof=1)),
        "kd_better_slices": int((diff > 0).sum()),
        "slices": len(ks),
    }
    LOG.info("KD - plain per slice: %+.3f +- %.3f dB, KD better on %d of %d slices", summary["kd_minus_plain_psnr_mean"],
             summary["kd_minus_plain_psnr_std"], summary["kd_better_slices"], len(ks))
    training = {}
    for run in ("teacher", f"student_plain{args.suffix}", f"student_kd{args.suffix}"):
        log = runs / run / "train.log"
        training[run] = _training_summary(log) if log.exists() else None
    out = {
        "command": "python scripts/distill_mobile_sr.py " + " ".join(sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {_cpu_model()}, torch {torch.__version__}, 1 thread",
        "evaluation": {"volume": COLIN27, "slices": ks, "in_plane_factor": 2, "degradation": "k-space truncation",
                       "normalisation": "robust max of the LR volume", "mask": "head_mask(reference)",
                       "data_range": data_range, "timing_input": [1, 1, 256, 256]},
        "methods": results,
        "kd_vs_plain": summary,
        "training": training,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    LOG.info("wrote %s", args.json)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{sum(1 for _ in Path('/proc/cpuinfo').read_text().splitlines() if _.startswith('processor'))}"
    except OSError:
        pass
    return "unknown CPU"


def _training_summary(log: Path) -> dict:
    """Steps, wall minutes (summed over the processes of a resumed run, each from its first to its last
    log line) and the median of the logged steps/s of a run, read back from its train.log."""
    from datetime import datetime

    rates, steps, segments = [], None, []
    for line in log.read_text().splitlines():
        try:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        if " args: " in line or not segments:
            segments.append([stamp, stamp])
        segments[-1][1] = stamp
        if m := re.search(r"step (\d+)/(\d+) .* ([\d.]+) steps/s", line):
            rates.append(float(m.group(3)))
            steps = int(m.group(1))
    minutes = sum((b - a).total_seconds() for a, b in segments) / 60
    return {"steps": steps, "processes": len(segments), "wall_minutes": round(minutes, 2),
            "median_steps_per_s": round(float(np.median(rates)), 4) if rates else None}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "measure":
        measure(args)
    elif args.command == "evaluate":
        evaluate(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
