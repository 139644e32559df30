"""Shared parts of the inference benchmarks: test series made from a real volume, the shipped weights,
timing helpers. Not a benchmark itself."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from monai_sr.training.datasets import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
COLIN = shared_data_dir() / "colin27_t1_1mm.nii.gz"  # held-out test subject; fine for speed
WEIGHTS = REPO / "bundles" / "mri_sr_unet" / "models" / "model.pt"


def colin_slices(n_slices: int, size: int = 256) -> np.ndarray:
    """Colin27 T1 as ``(size, size, n_slices)``: in-plane padded/cropped to ``size``, slices resampled
    (linear) to ``n_slices``; values scaled to 0..4000 (scanner-like integers)."""
    vol = np.asarray(nib.load(COLIN).dataobj, dtype=np.float32)
    out = np.zeros((size, size, vol.shape[2]), np.float32)
    sx, sy = min(size, vol.shape[0]), min(size, vol.shape[1])
    ox, oy = (size - sx) // 2, (size - sy) // 2
    ix, iy = (vol.shape[0] - sx) // 2, (vol.shape[1] - sy) // 2
    out[ox : ox + sx, oy : oy + sy] = vol[ix : ix + sx, iy : iy + sy]
    t = torch.from_numpy(out)[None, None]
    t = F.interpolate(t, size=(size, size, n_slices), mode="trilinear", align_corners=False)[0, 0]
    arr = t.numpy()
    return np.round(np.clip(arr / np.percentile(arr, 99.5), 0, None) * 3000.0).astype(np.float32)


def make_series(folder: Path, n_slices: int, size: int = 256, slice_step: float = 1.0) -> Path:
    """A Siemens-style DICOM series of Colin27 with ``n_slices`` slices of ``size`` x ``size``."""
    from monai_sr.io.scanner_series import write_original_mr_series

    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.is_dir() and len(list(folder.iterdir())) == n_slices:
        return folder
    affine = np.diag([-1.0, -1.0, slice_step, 1.0])  # LPS-like axial RAS affine
    affine[:3, 3] = [128.0, 128.0, -50.0]
    write_original_mr_series(colin_slices(n_slices, size), affine, folder, overwrite=True,
                             slice_thickness=slice_step)
    return folder


def shipped_srunet() -> torch.nn.Module:
    from monai_sr.networks import SRUNet

    net = SRUNet(2, 1, 1, scale=(2, 2))
    net.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def conv_peak_gflops(repeats: int = 3) -> float:
    """Measured conv2d throughput of this machine (GFLOP/s): a 64 -> 64 3x3 convolution on 4 x 128 x 128,
    best of NCHW and channels-last, best of ``repeats``."""
    from monai_sr.networks.complexity import count_flops

    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.rand(4, 64, 128, 128)
    flops = count_flops(conv, x.shape)
    best = 0.0
    with torch.inference_mode():
        for fmt in (torch.contiguous_format, torch.channels_last):
            c, xx = conv.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            c(xx)
            for _ in range(repeats):
                _, dt = timed(c, xx)
                best = max(best, flops / dt / 1e9)
    return best


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
