"""W1: x2 in-plane SR of a 256 x 256 x 100 DICOM series, DICOM in -> DICOM out, shipped SR-UNet weights.

Ours: ``monai_sr.pipeline.enhance`` with ``SliceWiseInferer(batch_size="auto", memory_budget=...)``
(streaming: slices go to ``DerivedSeriesWriter`` as they are made; channels-last; inference_mode).
Baseline, same process, same weights, same reader, normalisation and writer: MONAI's
``sliding_window_inference`` with a 64 x 64 ROI over the slices (overlap 0.25, sw_batch_size 8), the
whole result held, then written by the same ``DerivedSeriesWriter``. Both again with bf16 autocast.
FLOP limit: network FLOPs (``count_flops``) over the conv2d throughput measured here (best of NCHW and
channels-last 64->64 3x3), against the time of our inference alone and end to end.

    .venv/bin/python -m benchmarks.inference_w1 [--slices 100] [--workdir /tmp/monai_sr_bench]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks.inference_common import conv_peak_gflops, machine, make_series, shipped_srunet, timed

from monai_sr.inference import SliceWiseInferer
from monai_sr.networks.complexity import count_flops
from monai_sr.pipeline import enhance, load_volume


def baseline(series: Path, out: Path, net: torch.nn.Module, bf16: bool = False) -> None:
    """Read -> normalise -> MONAI sliding window (2D ROI 64, overlap 0.25) -> inverse -> write; ``bf16``:
    the network under CPU bf16 autocast, as ours with ``amp="bf16"``."""
    from contextlib import nullcontext

    from monai.inferers import sliding_window_inference

    from monai_sr.io.dicom.headers import source_headers
    from monai_sr.io.dicom.derived import estimate_window
    from monai_sr.io.dicom.writer import DerivedSeriesWriter
    from monai_sr.transforms.intensity import RobustScale
    from monai_sr.transforms.spacing import SRGeometry

    image = load_volume(series)
    norm = RobustScale()
    x = norm(image.as_tensor())
    planes = torch.movedim(x[0], 2, 0).unsqueeze(1)  # (n, 1, X, Y)
    with torch.inference_mode(), (torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()):
        y = sliding_window_inference(planes, (64, 64), 8, net, overlap=0.25).float()
    result = SRGeometry((2, 2, 1))(norm.inverse(torch.movedim(y[:, 0], 0, 2)[None]), image)
    vol = result[0].numpy()
    with DerivedSeriesWriter(out, affine=np.asarray(result.affine), shape=vol.shape,
                             source_headers=source_headers(image.meta), derivation="x2 baseline",
                             window=estimate_window(image[0].numpy())) as w:
        for k in range(vol.shape[2]):
            w.write_slice(k, vol[:, :, k])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=100)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/monai_sr_bench"))
    p.add_argument("--budget", default="1GiB")
    args = p.parse_args()
    series = make_series(args.workdir / f"series_{args.slices}", args.slices)
    print(machine())
    ours_dir, base_dir = args.workdir / "w1_ours", args.workdir / "w1_base"
    for d in (ours_dir, base_dir):
        shutil.rmtree(d, ignore_errors=True)

    net_base, net_ours = shipped_srunet(), shipped_srunet()
    inferer = SliceWiseInferer(batch_size="auto", memory_budget=args.budget)

    # our inference alone (no I/O), for the FLOP-limit ratio
    vol = load_volume(series)
    vol = vol / float(vol.max())
    batch = inferer.batch_for(vol, net_ours)
    _, t_inf = timed(lambda: [None for _ in inferer.stream(vol, net_ours)])

    res, t_ours = timed(enhance, series, ours_dir, network=net_ours, inferer=inferer)
    _, t_base = timed(baseline, series, base_dir, net_base)
    # the same with bf16 autocast (its PSNR cost: inference_backends.py)
    bf16_dir = args.workdir / "w1_bf16"
    shutil.rmtree(bf16_dir, ignore_errors=True)
    bf16 = SliceWiseInferer(batch_size="auto", memory_budget=args.budget, amp="bf16")
    _, t_bf16 = timed(enhance, series, bf16_dir, network=net_ours, inferer=bf16)
    shutil.rmtree(bf16_dir, ignore_errors=True)
    _, t_base_bf16 = timed(baseline, series, bf16_dir, net_base, bf16=True)
    shutil.rmtree(bf16_dir, ignore_errors=True)

    flops = count_flops(net_base, (1, 1, 256, 256)) * args.slices
    peak = conv_peak_gflops()
    t_limit = flops / (peak * 1e9)
    a = load_volume(ours_dir).numpy()
    b = load_volume(base_dir).numpy()
    diff = float(np.abs(a - b).max() / np.abs(b).max())

    print(f"W1: {args.slices} slices 256x256 -> 512x512, auto batch {batch} (budget {args.budget})")
    print(f"  ours end to end (read, infer, write DICOM)     {t_ours:7.2f} s")
    print(f"  MONAI sliding window end to end (roi 64, 0.25) {t_base:7.2f} s")
    print(f"  speed-up end to end                            {t_base / t_ours:7.2f} x   (goal >= 2)")
    print(f"  ours with bf16 autocast end to end             {t_bf16:7.2f} s  -> {t_base / t_bf16:.2f} x the fp32 baseline")
    print(f"  MONAI sliding window with bf16 autocast        {t_base_bf16:7.2f} s  -> ours bf16 {t_base_bf16 / t_bf16:.2f} x faster")
    print(f"  our inference alone                            {t_inf:7.2f} s  ({flops / t_inf / 1e9:.1f} GFLOP/s)")
    print(f"  network FLOPs {flops / 1e9:.0f} GFLOP; measured conv2d peak {peak:.1f} GFLOP/s; limit {t_limit:.2f} s")
    print(f"  fraction of FLOP limit: inference {t_limit / t_inf:.0%}, end to end {t_limit / t_ours:.0%}   (goal >= 60%)")
    print(f"  max |ours - baseline| / max: {diff:.3g} (tile seams of the baseline)")
    print(f"  output {res.output_shape}, {len(res.files)} files")


if __name__ == "__main__":
    main()
