"""Cohort throughput: cases per hour of ``monai-sr enhance CASES OUT`` for 1 and 2 ranks (torchrun, gloo) with
1 and 2 threads per rank, and the scaling efficiency against 1 rank x 1 thread run beside them.

The cohort: ``--cases`` copies of one DICOM series of ``--slices`` slices 256 x 256 made from Colin27
(:func:`benchmarks.inference_common.make_series`), x2 in-plane with the shipped ``mri_sr_unet``. Each
configuration is one whole command into a fresh OUT folder (start-up, imports, model load, every case,
the manifest):

* 1 rank: ``monai-sr enhance CASES OUT ...`` with ``OMP_NUM_THREADS`` = 1 or 2;
* 2 ranks: ``torchrun --standalone --nproc_per_node 2 -m monai_sr enhance CASES OUT ...`` with
  ``MONAI_SR_THREADS_PER_RANK`` = 1 or 2 (the default is cores / ranks).

Settings: ``--fast --set self_ensemble=none`` (the pretrained network, data consistency and bf16
``auto`` on) unless ``--default`` (the bundle's defaults: the 8-member self-ensemble since mri_sr_unet
0.5.0, before it also the per-volume fit: more work per case). Printed per configuration: wall time, cases per hour over the whole command, the mean
per-case seconds the manifest records (without start-up), and the efficiency = throughput / (throughput
of 1 x 1 x the threads used in all). The load average before and after is printed.

    .venv/bin/python -m benchmarks.cohort_throughput [--cases 8] [--slices 16] [--default] [--workdir /tmp/monai_sr_bench]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--slices", type=int, default=16)
    p.add_argument("--default", action="store_true", help="the bundle's defaults (fit, self-ensemble), not --fast")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/monai_sr_bench"))
    args = p.parse_args()

    from benchmarks.inference_common import machine, make_series

    series = make_series(args.workdir / f"series_{args.slices}", args.slices)
    cases = args.workdir / f"cohort_{args.cases}x{args.slices}"
    if not cases.is_dir() or len(list(cases.iterdir())) != args.cases:
        shutil.rmtree(cases, ignore_errors=True)
        for i in range(args.cases):
            shutil.copytree(series, cases / f"case_{i:03d}", copy_function=shutil.copy2)
    settings = ["--quiet"] + ([] if args.default else ["--fast", "--set", "self_ensemble=none"])
    monai_sr = str(Path(sys.executable).with_name("monai-sr"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai_sr"]
    configs = [  # (ranks, threads per rank)
        (1, 1), (1, 2), (2, 1), (2, 2)]
    print(machine())
    print(f"cohort: {args.cases} cases of 256 x 256 x {args.slices} (DICOM) -> x2 in-plane; settings {' '.join(settings)}")
    print(f"load average before: {_load()}")
    results = {}
    for ranks, threads in configs:
        out = args.workdir / f"cohort_out_{ranks}x{threads}"
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ)
        if ranks == 1:
            env["OMP_NUM_THREADS"] = str(threads)
            env.pop("WORLD_SIZE", None)
            cmd = [monai_sr, "enhance", str(cases), str(out), *settings]
        else:
            env["MONAI_SR_THREADS_PER_RANK"] = str(threads)
            cmd = [*torchrun, "enhance", str(cases), str(out), *settings]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if done.returncode:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
        with (out / "manifest.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == args.cases and all(r["status"] == "done" for r in rows), rows
        per_case = sum(float(r["seconds"]) for r in rows) / len(rows)
        results[(ranks, threads)] = (wall, args.cases / wall * 3600, per_case)
        print(f"  {ranks} rank(s) x {threads} thread(s): {wall:.1f} s, load now {_load()}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"load average after:  {_load()}")
    base = results[(1, 1)][1]
    print("\n| ranks x threads | wall s | cases / hour | mean s per case (manifest) | vs 1 x 1 | efficiency |")
    print("|---|---|---|---|---|---|")
    for (ranks, threads), (wall, rate, per_case) in results.items():
        print(f"| {ranks} x {threads} | {wall:.1f} | {rate:.0f} | {per_case:.2f} | {rate / base:.2f}x | "
              f"{rate / (base * ranks * threads):.0%} |")


if __name__ == "__main__":
    main()
