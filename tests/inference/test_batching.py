"""Batch size from a memory budget: the chosen batch keeps a run under its budget (measured two ways),
and a budget too small for one slice is refused with a clear message."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from sr_helpers import ramp_volume
from torch import nn

from monai_sr.inference import SliceWiseInferer, measure_peak_bytes, parse_bytes


class NumpySR(nn.Module):
    """A synthetic x2 model whose working memory is NumPy arrays (seen by tracemalloc): 16 feature
    maps per slice, then nearest up-sampling."""

    scale = (2, 2)

    def forward(self, x):
        a = x.numpy()
        feats = np.repeat(a, 16, axis=1) * np.float32(1.5)  # (B, 16, H, W)
        y = feats.mean(axis=1, keepdims=True)
        return torch.from_numpy(y.repeat(2, axis=2).repeat(2, axis=3))


class TorchSR(nn.Module):
    scale = (2, 2)

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x))


def test_parse_bytes():
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes(1000) == 1000
    for bad in ("lots", "-1MB", 0, None):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_budget_holds_numpy_model_tracemalloc():
    src = ramp_volume((64, 48, 20))
    budget = 4 * 2**20
    inferer = SliceWiseInferer(batch_size="auto", memory_budget=budget, channels_last=False, max_batch=100)
    net = NumpySR()
    batch = inferer.batch_for(src, net)
    per_slice = 64 * 48 * 4 * (1 + 16 + 1 + 4 + 4)  # input copy, features, mean, two repeats
    assert 2 <= batch <= budget // (per_slice * 0.9)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in inferer.stream(src, net):
            pass
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak <= budget, (peak, budget, batch)
    assert peak > budget / 3  # the budget is used, not ignored


def test_budget_holds_torch_model():
    src = ramp_volume((48, 40, 30))
    net = TorchSR().eval()
    budget = 3 * 2**20
    inferer = SliceWiseInferer(batch_size="auto", memory_budget=budget, max_batch=100)
    batch = inferer.batch_for(src, net)
    assert 1 < batch < 30
    _, peak = measure_peak_bytes(lambda: [None for _ in inferer.stream(src, net)])
    assert peak <= budget, (peak, budget, batch)
    bigger = SliceWiseInferer(batch_size="auto", memory_budget=4 * budget, max_batch=100).batch_for(src, net)
    assert bigger >= 3 * batch


def test_too_small_budget_is_refused():
    src = ramp_volume((64, 48, 4))
    with pytest.raises(ValueError, match=r"memory budget 0\.0 MiB is too small: one sample of shape \(1, 64, 48\)"):
        SliceWiseInferer(batch_size="auto", memory_budget="10kB")(src, TorchSR().eval())


def test_default_batch_is_one_slice_on_cpu_and_the_result_does_not_depend_on_it():
    """``batch_size=None`` (the default of SliceWiseInferer): one slice per pass on CPU (a batch of whole
    slices page-faults its large activations in on every pass there); the output is the same as with
    batches of 4."""
    from monai_sr.inference.base import CPU_DEFAULT_BATCH

    src = ramp_volume((24, 20, 7))
    torch.manual_seed(0)
    net = TorchSR().eval()
    inferer = SliceWiseInferer()
    assert inferer.batch_size is None and inferer.batch_for(src, net) == CPU_DEFAULT_BATCH == 1
    with torch.inference_mode():
        one, four = inferer(src, net), SliceWiseInferer(batch_size=4)(src, net)
    torch.testing.assert_close(one.as_tensor(), four.as_tensor(), rtol=1e-5, atol=1e-6)
