"""Training steps per second of DnCNN variants on this machine: what size of denoiser fits the time.

One training step (Adam, MSE) on a batch of 16 single-channel 48x48 patches, fp32 and bf16 autocast on the
CPU (as ``monai_sr.training.trainer.AutocastInferer`` runs it), for the DnCNN sizes considered for the
``mri_denoise_dncnn`` bundle, with and without CBAM. Mean over ``--steps`` steps after one warm-up step.

Run (1 thread, as the bundle trains)::

    .venv/bin/python benchmarks/denoise_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from monai_sr.networks import DnCNN, count_parameters

VARIANTS = [(17, 64, None), (12, 64, None), (12, 48, None), (12, 48, 3), (10, 48, None), (10, 32, None), (10, 32, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), batch {args.batch} x 1 x {args.patch}^2, Adam + MSE")
    print("| depth x features | CBAM every | parameters | fp32 steps/s | bf16 steps/s | bf16 / fp32 |\n| --- | --- | --- | --- | --- | --- |")
    x = torch.rand(args.batch, 1, args.patch, args.patch)
    for depth, feat, cbam in VARIANTS:
        rates = []
        for bf16 in (False, True):
            torch.manual_seed(0)
            net = DnCNN(2, depth=depth, features=feat, cbam_every=cbam, cbam_reduction=4)
            opt = torch.optim.Adam(net.parameters(), 1e-3)

            def step() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = net(x)
                loss = F.mse_loss(out.float(), x)
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates.append(args.steps / (time.perf_counter() - t0))
        print(f"| {depth} x {feat} | {cbam or '-'} | {count_parameters(net)} | {rates[0]:.2f} | {rates[1]:.2f} | {rates[1] / rates[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
