"""Slices per forward pass of a shipped bundle's network on CPU: time per slice and page faults per slice.

The forward passes the bundle's inference makes (``--bundle``, default ``mri_sr_unet``; its network and
weights from :func:`monai_sr.bundles.load_inference_parts`) (channels-last, bf16 autocast where the CPU has
native bf16, float32 elsewhere or with ``--fp32``), over ``--slices`` slices of 256 x 256 in batches of
each ``--batches`` size, interleaved over ``--rounds`` rounds after one warm-up pass each; the best round
per batch size is reported with its minor page faults (``getrusage``): glibc gives a block of 32 MiB or
more straight from the kernel (``mmap``, above its largest mmap threshold) and takes it back when it is
freed, so every large activation is page-faulted in (and zeroed) again on every pass.

    .venv/bin/python -m benchmarks.batch_size [--bundle mri_sr_unet] [--threads 1] [--slices 64] [--rounds 3] [--fp32]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from monai_sr.bundles import load_inference_parts
from monai_sr.inference.base import cpu_has_native_bf16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="mri_sr_unet")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fp32", action="store_true", help="float32 even where the CPU has native bf16")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = load_inference_parts(args.bundle, device="$torch.device('cpu')")["network"].eval()
    net = net.to(memory_format=torch.channels_last)
    bf16 = cpu_has_native_bf16() and not args.fp32
    x = torch.rand(args.slices, 1, args.size, args.size)

    def one_pass(batch: int) -> tuple[float, int]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            for i in range(0, args.slices, batch):
                net(x[i : i + batch].contiguous(memory_format=torch.channels_last))
            return time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    for b in args.batches:
        one_pass(b)  # warm-up: oneDNN primitives, allocator
    best: dict[int, tuple[float, int]] = {}
    for r in range(args.rounds):
        for b in args.batches[r % len(args.batches):] + args.batches[: r % len(args.batches)]:
            seconds, faults = one_pass(b)
            if b not in best or seconds < best[b][0]:
                best[b] = (seconds, faults)
    print(f"{type(net).__name__} ({args.bundle} weights), {args.slices} slices of {args.size} x {args.size}, "
          f"{'bf16 autocast' if bf16 else 'float32'}, channels-last, {args.threads} thread(s), best of {args.rounds}")
    print("| slices per pass | ms per slice | minor page faults per slice | vs the fastest |\n|---:|---:|---:|---:|")
    fastest = min(s for s, _ in best.values())
    for b in args.batches:
        s, f = best[b]
        print(f"| {b} | {1000 * s / args.slices:.1f} | {f / args.slices:.0f} | {s / fastest:.2f}x |")


if __name__ == "__main__":
    main()
