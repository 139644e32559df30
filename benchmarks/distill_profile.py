"""Where MobileSR's CPU time goes on one 256 x 256 slice, beside the distillation teacher (RCAN).

Prints, for one thread and ``torch.inference_mode``: the share of self CPU time of the heaviest operators
of ``MobileSR(2, scale=2)`` (grouped by input shape, NCHW, from ``torch.profiler``), and the median time
per slice of MobileSR and of the teacher of ``scripts/distill_mobile_sr.py`` (untrained weights: the
cost does not depend on them) in NCHW and channels-last, interleaved in this process, with the FLOP rate
each reaches (``monai_sr.networks.count_flops``). See docs/distillation.md.

Example::

    python benchmarks/distill_profile.py --rounds 9
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from monai_sr.networks import MobileSR, count_flops

REPO = Path(__file__).resolve().parents[1]


def _teacher() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("distill_mobile_sr", REPO / "scripts" / "distill_mobile_sr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_teacher()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=9)
    args = p.parse_args()
    torch.set_num_threads(1)
    shape = (1, 1, args.size, args.size)
    x = torch.rand(shape)
    nets = {"MobileSR": MobileSR(2, scale=2).eval(), "teacher (RCAN)": _teacher().eval()}

    with torch.inference_mode():
        for _ in range(2):
            nets["MobileSR"](x)
        with torch.profiler.profile(record_shapes=True) as prof:
            nets["MobileSR"](x)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"MobileSR, {args.size}x{args.size}, NCHW: share of self CPU time")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.key:28s} x{e.count:<3d} {e.input_shapes[:2]}")

    variants = {}
    for name, net in nets.items():
        variants[(name, "NCHW")] = (net, x)
        variants[(name, "channels-last")] = (copy.deepcopy(net).to(memory_format=torch.channels_last),
                                             x.contiguous(memory_format=torch.channels_last))
    times: dict = {k: [] for k in variants}
    with torch.inference_mode():
        for r in range(args.rounds + 2):
            for k, (net, inp) in variants.items():
                t = time.perf_counter()
                net(inp)
                if r >= 2:
                    times[k].append(time.perf_counter() - t)
    flops = {name: count_flops(net, shape) for name, net in nets.items()}
    print(f"median seconds per slice over {args.rounds} interleaved rounds, one thread:")
    for (name, layout), ts in times.items():
        med = float(np.median(ts))
        print(f"  {name:15s} {layout:13s} {med:.3f} s   {flops[name] / 1e9:.1f} GFLOP  {flops[name] / med / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
