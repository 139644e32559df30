"""W3: peak resident memory of W1 (x2 in-plane, 256 x 256 slices, DICOM in -> DICOM out) at 100 and 400
slices, streaming (``enhance`` with a ``ScaleAwareInferer``: slices go to ``DerivedSeriesWriter`` as they
are made) against the whole-volume path (the same inferer called for the whole float result first).
Each run is its own subprocess; the peak is its ``ru_maxrss``. A run that only imports and loads the
network gives the floor. ``stream+mmap`` is the streaming run with glibc's ``MALLOC_MMAP_THRESHOLD_=131072``
(large blocks always mmap'ed, so freed activation buffers go back to the system instead of fragmenting
the heap).

    .venv/bin/python -m benchmarks.inference_memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.inference_common import machine, make_series, shipped_srunet, timed


def child(series: Path, out: Path, mode: str) -> dict:
    from monai_sr.inference import SliceWiseInferer
    from monai_sr.inference.streaming import WholeVolumeInferer
    from monai_sr.pipeline import enhance

    net = shipped_srunet()
    seconds = 0.0
    if mode != "floor":
        inferer = SliceWiseInferer(batch_size="auto", memory_budget="1GiB")
        shutil.rmtree(out, ignore_errors=True)
        _, seconds = timed(enhance, series, out, network=net,
                           inferer=inferer if mode == "stream" else WholeVolumeInferer(inferer))
        shutil.rmtree(out, ignore_errors=True)
    return {"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/monai_sr_bench"))
    p.add_argument("--child", nargs=3, metavar=("SERIES", "OUT", "MODE"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.child[2])))
        return
    print(machine())
    res = {}
    for n in (100, 400):
        series = make_series(args.workdir / f"series_{n}", n)
        for mode in ("floor", "stream", "stream+mmap", "whole") if n == 100 else ("stream", "stream+mmap", "whole"):
            env = dict(os.environ)
            if mode.endswith("+mmap"):  # glibc: big blocks always mmap'ed, so freed activations leave RSS
                env["MALLOC_MMAP_THRESHOLD_"] = "131072"
            child_args = ["--child", str(series), str(args.workdir / "w3_out"), mode.split("+")[0]]
            r = subprocess.run([sys.executable, "-m", "benchmarks.inference_memory", *child_args],
                               capture_output=True, text=True, check=True, env=env)
            res[(n, mode)] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"  {n:4d} slices {mode:11s}: peak RSS {res[(n, mode)]['maxrss_mib']:7.0f} MiB, "
                  f"{res[(n, mode)]['seconds']:.1f} s", flush=True)
    s1, s4 = res[(100, "stream")]["maxrss_mib"], res[(400, "stream")]["maxrss_mib"]
    w1, w4 = res[(100, "whole")]["maxrss_mib"], res[(400, "whole")]["maxrss_mib"]
    out_mib = 512 * 512 * 300 * 4 / 2**20
    m1, m4 = res[(100, "stream+mmap")]["maxrss_mib"], res[(400, "stream+mmap")]["maxrss_mib"]
    print(f"streaming 400 / 100 slices: {s4 / s1:.3f}; with MALLOC_MMAP_THRESHOLD_=131072: {m4 / m1:.3f} "
          f"(goal within 10%: <= 1.10)")
    print(f"whole volume 400 / 100 slices: {w4 / w1:.3f}; +{w4 - w1:.0f} MiB for 300 more slices "
          f"(their float output alone is {out_mib:.0f} MiB)")
    print(f"at 400 slices streaming uses {s4 / w4:.2f} of the whole-volume peak")


if __name__ == "__main__":
    main()
