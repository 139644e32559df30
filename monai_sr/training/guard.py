"""The guard of a per-volume fit: slices of the input it never trained on decide whether it is kept.

:func:`split_held_out` sets aside every ``every``-th slice of the input (along the slice axis the SR runs
along) before any pair is made; with fewer than ``2 * every`` slices it sets aside one half of each
slice instead (the far half along the first in-plane axis). :func:`held_out_psnr` scores a network on
the held-out part as it is used: each held-out slice degraded once more by the network's factor
(k-space truncation, :class:`monai_sr.training.pairs.DegradedStack`), super-resolved, optionally made
consistent with its input (:func:`monai_sr.inference.consistency.project_acquired_band`, as the
``data_consistency`` inferer does), and compared with the slice itself (PSNR, data range 1: the
normalised units of the input).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from monai_sr.inference.base import network_device
from monai_sr.inference.consistency import project_acquired_band
from monai_sr.training.pairs import DegradedStack
from monai_sr.validation.metrics import psnr

__all__ = ["split_held_out", "held_out_psnr"]


def split_held_out(volume: np.ndarray, axis: int, *, every: int = 4) -> tuple[np.ndarray, np.ndarray, str]:
    """``(train, held_out, how)`` parts of ``volume`` ``(X, Y, Z)``; ``how`` says what was set aside.

    Slices ``k`` with ``k % every == every // 2`` are held out when there are at least ``2 * every``
    slices along ``axis``; otherwise each slice is cut in two along its first in-plane axis and the
    second half is held out.
    """
    n = volume.shape[axis]
    if n >= 2 * every:
        held = np.arange(n) % every == every // 2
        return (np.compress(~held, volume, axis=axis), np.compress(held, volume, axis=axis),
                f"{int(held.sum())} of {n} slices held out")
    cut_axis = next(a for a in range(3) if a != axis)
    half = volume.shape[cut_axis] // 2
    first, second = np.split(volume, [half], axis=cut_axis)
    return first, second, f"the second half of each of the {n} slice(s) held out"


def held_out_psnr(network: nn.Module, held_out: np.ndarray, axis: int, factor: int, *, consistent: bool = True) -> float:
    """Mean PSNR (dB, data range 1) of ``network`` over the held-out slices (see the module docstring)."""
    stack = DegradedStack.from_volume(held_out, axis, factor)
    device = network_device(network)
    scores = []
    network.eval()
    with torch.inference_mode():
        for k in range(stack.lr.shape[0]):
            lr = torch.from_numpy(stack.lr[k][None, None])
            sr = network(lr.to(device)).float().cpu()
            if consistent:
                sr = project_acquired_band(sr, lr)
            scores.append(psnr(sr[0, 0].numpy().astype(np.float64), stack.hr[k].astype(np.float64), data_range=1.0))
    return float(np.mean(scores))
