"""Whole-process speed: ``monai-sr enhance`` against a user's plain MONAI sliding-window script.

Both are whole processes started from the shell (interpreter start-up, imports, model load, reading,
inference, writing: what a user waits for), on the same 256 x 256 x 100 DICOM series made from Colin27
(:func:`benchmarks.inference_common.make_series`), x2 in-plane with the same shipped ``mri_sr_unet``
weights, both writing one NIfTI file. The baseline is :func:`plain_monai_script` below, run as
``python -m benchmarks.whole_process_speed --plain SERIES OUT.nii.gz``: MONAI's ``LoadImage``
(``PydicomReader``), the volume divided by its 99.5th percentile, MONAI's ``sliding_window_inference``
over the axial slices (2D ROI 64 x 64, overlap 0.25, sw_batch_size 8, fp32, ``torch.inference_mode``),
scaled back, saved with nibabel. Its module imports only what that script needs.

Ours, each a separate process:

* ``default``: ``monai-sr enhance SERIES OUT.nii.gz`` (8-member self-ensemble since 0.4.0, the per-volume fit
  until 0.5.0, data consistency, bf16 autocast where the CPU has native bf16) -- more work than the
  baseline does;
* ``like-for-like``: ``--fast --set self_ensemble=none`` (no fit, no ensemble; data consistency and
  bf16 ``auto`` stay on);
* ``like-for-like fp32``: the same with ``--precision fp32`` (float32, as the baseline; until 2026-12-02
  spelled ``--set inferer#amp=null``, the same config value);
* ``like-for-like, DICOM out``: as ``like-for-like`` but writing the derived DICOM series.

The commands run in turn, ``--repeats`` rounds (order rotated each round); the table gives each one's
best and every round's wall time, and the ratio baseline / ours of the best times. The machine's load
average before and after is printed: on a shared machine the rounds differ, and the baseline's many
small forward passes (25 windows of 64 x 64 per slice, in batches of 8) suffer more from threads that
wait for each other under CPU contention than our whole-slice batches do (``--threads 1`` removes that
part).

    .venv/bin/python -m benchmarks.whole_process_speed [--slices 100] [--repeats 2] [--threads N] [--workdir /tmp/monai_sr_bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain_monai_script(series: str, out: str) -> None:
    """The baseline: what a MONAI user writes for x2 in-plane SR with these weights (no monai_sr code
    but the network class)."""
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import LoadImage

    from monai_sr.networks import SRUNet

    net = SRUNet(2, 1, 1, scale=(2, 2))
    weights = REPO / "bundles" / "mri_sr_unet" / "models" / "model.pt"
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    image = LoadImage(image_only=True, reader="PydicomReader", ensure_channel_first=True)(series)  # (1, X, Y, Z), RAS
    scale = float(np.percentile(image.numpy(), 99.5)) or 1.0
    planes = torch.movedim(image.as_tensor()[0].float() / scale, 2, 0).unsqueeze(1)  # (Z, 1, X, Y)
    with torch.inference_mode():
        y = sliding_window_inference(planes, (64, 64), 8, net, overlap=0.25)
    volume = torch.movedim(y[:, 0], 0, 2).numpy() * scale
    affine = np.asarray(image.affine, dtype=np.float64) @ np.diag([0.5, 0.5, 1.0, 1.0])
    affine[:3, 3] += np.asarray(image.affine)[:3, :2] @ np.array([-0.25, -0.25])  # same field of view
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), out)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/monai_sr_bench"))
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every command (default: unset)")
    p.add_argument("--plain", nargs=2, metavar=("SERIES", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain:
        plain_monai_script(*args.plain)
        return

    from benchmarks.inference_common import machine, make_series

    series = make_series(args.workdir / f"series_{args.slices}", args.slices)
    out = args.workdir / "whole_process"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cli = [str(Path(sys.executable).with_name("monai-sr")), "enhance", str(series)]
    fast = ["--quiet", "--fast", "--set", "self_ensemble=none"]
    commands = {  # name -> (command given the output path, output is a DICOM folder)
        "plain MONAI script (baseline)": (lambda o: [sys.executable, "-m", "benchmarks.whole_process_speed",
                                                     "--plain", str(series), o], False),
        "monai-sr enhance, default": (lambda o: [*cli, o, "--quiet"], False),
        "monai-sr like-for-like (--fast, self_ensemble=none)": (lambda o: [*cli, o, *fast], False),
        "monai-sr like-for-like, fp32 (--precision fp32)": (lambda o: [*cli, o, *fast, "--precision", "fp32"], False),
        "monai-sr like-for-like, DICOM out": (lambda o: [*cli, o, *fast], True),
    }
    print(machine())
    print(f"input {series} ({args.slices} slices 256 x 256 -> 512 x 512), {args.repeats} round(s)")
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    print(f"threads: {args.threads or 'torch default'}; load average before: {_load()}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            make, dicom = commands[name]
            target = out / ("dicom" if dicom else "out.nii.gz")
            times[name].append(_run(make(str(target)), env))
            print(f"  {name}: {times[name][-1]:.1f} s (load {_load()})", flush=True)
            if name.startswith(("plain", "monai-sr like-for-like, fp32")):  # kept for the agreement check
                target.replace(out / ("plain.nii.gz" if name.startswith("plain") else "ours_fp32.nii.gz"))
            else:
                shutil.rmtree(target) if dicom else target.unlink()
    print(f"load average after:  {_load()}")
    base = min(times["plain MONAI script (baseline)"])
    print("\n| command | best s | rounds s | baseline / this |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.1f} | {' / '.join(f'{t:.1f}' for t in ts)} | {base / min(ts):.2f}x |")

    import nibabel as nib
    import numpy as np

    plain, ours = (np.asarray(nib.load(out / f).dataobj, np.float64) for f in ("plain.nii.gz", "ours_fp32.nii.gz"))
    if plain.shape != ours.shape:
        print(f"outputs differ in shape: baseline {plain.shape}, ours {ours.shape}")
        return
    peak = float(np.percentile(plain, 99.5))
    psnr = 10 * np.log10(peak**2 / float(np.mean((plain - ours) ** 2)))
    print(f"agreement of the outputs, baseline vs like-for-like fp32 ({plain.shape}): PSNR {psnr:.1f} dB over the "
          "baseline's 99.5th percentile (ours adds data consistency; the baseline has tile seams)")


if __name__ == "__main__":
    main()
