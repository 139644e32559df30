"""ONNX Runtime, int8 and bf16 autocast against the fp32 torch path: speed ratio and PSNR cost on real
slices (bf16: ``SliceWiseInferer(amp="bf16")``, torch's CPU autocast; oneDNN uses AVX512-BF16 where the
CPU has it).

Speed: 24 slices of 256 x 256 (the W1 input size) through ``SliceWiseInferer`` with each backend.
Quality: 24 axial 256 x 256 slices of Colin27 (1 mm, held-out subject) as reference, their 2 x 2 means as
input (128 x 128), normalised by the volume's 99.5th percentile; PSNR with ``data_range=1``. The int8
models are calibrated (static) on 16 other slices of the same volume.

    .venv/bin/python -m benchmarks.inference_backends
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from benchmarks.inference_common import colin_slices, machine, shipped_srunet, timed

from monai_sr.inference import SliceWiseInferer
from monai_sr.inference.backends import OnnxRuntimeNetwork, export_onnx, quantize_onnx_int8
from monai_sr.validation.metrics import psnr_from_mse


def main() -> None:
    print(machine())
    vol = colin_slices(181, 256)
    vol = vol / np.percentile(vol, 99.5)
    test_k = np.linspace(50, 130, 24).astype(int)
    calib_k = np.linspace(45, 135, 16).astype(int) + 1
    hr = torch.from_numpy(vol[:, :, test_k].copy())
    lr = F.avg_pool2d(torch.movedim(hr, 2, 0)[:, None], 2)[:, 0]  # (24, 128, 128)
    lr_vol = MetaTensor(torch.movedim(lr, 0, 2)[None].contiguous(), affine=torch.eye(4, dtype=torch.float64))
    big = MetaTensor(torch.from_numpy(vol[:, :, test_k].copy())[None], affine=torch.eye(4, dtype=torch.float64))
    calib = [F.avg_pool2d(torch.from_numpy(vol[:, :, k].copy())[None, None], 2).numpy() for k in calib_k]

    net = shipped_srunet()
    inferer = SliceWiseInferer(batch_size=2)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = export_onnx(shipped_srunet(), Path(tmp) / "fp32.onnx")
        backends = {
            "torch fp32 (channels-last)": net,
            "onnxruntime fp32": OnnxRuntimeNetwork(f32, scale=net.scale),
            "onnxruntime int8 static (QDQ)": OnnxRuntimeNetwork(
                quantize_onnx_int8(f32, Path(tmp) / "s8.onnx", calibration=calib), scale=net.scale),
            "onnxruntime int8 dynamic": OnnxRuntimeNetwork(
                quantize_onnx_int8(f32, Path(tmp) / "d8.onnx"), scale=net.scale),
        }
        rows = []
        runs = [(name, model, inferer) for name, model in backends.items()]
        runs.insert(1, ("torch bf16 autocast", net, SliceWiseInferer(batch_size=2, amp="bf16")))
        for name, model, inf in runs:
            inf(big[..., :2], model)  # warm-up
            _, dt = timed(inf, big, model)
            sr = inf(lr_vol, model)[0]
            mse = ((sr - hr) ** 2).mean(dim=(0, 1)).numpy()
            rows.append((name, dt, float(np.mean(psnr_from_mse(mse, 1.0)))))
    bicubic = F.interpolate(lr[:, None], scale_factor=2.0, mode="bicubic", align_corners=False)[:, 0]
    b_psnr = float(np.mean(psnr_from_mse(((torch.movedim(bicubic, 0, 2) - hr) ** 2).mean(dim=(0, 1)).numpy(), 1.0)))
    t0, p0 = rows[0][1], rows[0][2]
    print(f"24 slices 256x256 -> 512x512; PSNR on 24 slices 128 -> 256 (bicubic {b_psnr:.2f} dB)")
    print(f"{'backend':32s} {'time s':>7s} {'speed vs torch':>15s} {'PSNR dB':>8s} {'dPSNR':>7s}")
    for name, dt, p in rows:
        print(f"{name:32s} {dt:7.2f} {t0 / dt:14.2f}x {p:8.3f} {p - p0:+7.3f}")


if __name__ == "__main__":
    main()
