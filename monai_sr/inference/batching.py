"""How much work runs at once: batch size from a memory budget, and the intra-op thread count.

Batch size: measure what one slice costs, take the largest batch that fits.

:func:`measure_peak_bytes` runs a function and returns the peak of the memory it held at once: the bytes
of live torch tensor storages (every tensor an ATen operator returns, tracked under a
``TorchDispatchMode`` until it is freed) plus the peak of Python/NumPy allocations (``tracemalloc``).
Scratch buffers inside a single kernel (e.g. a convolution's workspace) are not seen, hence the
``safety`` factor of :func:`batch_for_budget`.

:func:`batch_for_budget` measures one forward pass of batch 1 (the "probe") and divides the budget by
it: for a convolutional network the working memory of a batch grows linearly with the batch size with a
non-negative intercept, so ``budget // bytes_per_slice`` never exceeds the budget.
"""

from __future__ import annotations

import re
import tracemalloc
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["torch_threads", "parse_bytes", "measure_peak_bytes", "slice_bytes", "batch_for_budget"]

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30}


def parse_bytes(value: int | float | str) -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"1.5 GB"``, ``"2GiB"``.

    Examples::

        parse_bytes("512MiB")   # 536870912
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", value)
        unit = m.group(2).lower() if m else None
        if unit not in _UNITS:
            raise ValueError(f"cannot read {value!r} as a memory size; use bytes or e.g. '512MiB', '2GB'")
        out = int(float(m.group(1)) * _UNITS[unit])
    else:
        raise ValueError(f"memory size must be bytes or a string like '512MiB', got {value!r}")
    if out <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return out


class _LiveTensorBytes(TorchDispatchMode):
    """Track the bytes of storages that tensors made by ATen operators keep alive; remember the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage address -> [nbytes, live tensors on it]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr == 0:
                continue
            entry = self.live.get(ptr)
            if entry is None:
                self.live[ptr] = [storage.nbytes(), 1]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def measure_peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()``; return its result and the peak bytes it held at once (new torch CPU tensor storages
    plus Python/NumPy allocations seen by ``tracemalloc``). Memory that existed before the call is not
    counted; the returned result is (it is alive at the end)."""
    mode = _LiveTensorBytes()
    with mode:
        torch.zeros(1)  # the first dispatch under a mode imports torch._dynamo: not the function's memory
        mode.live.clear()
        mode.current = mode.peak = 0
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            result = fn()
            py_peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            if not was_tracing:
                tracemalloc.stop()
    return result, int(mode.peak + max(py_peak, 0))


def slice_bytes(forward: Callable[[torch.Tensor], Any], sample_shape: Sequence[int]) -> int:
    """Peak working memory (bytes) of ``forward`` on one sample of ``sample_shape`` (no batch axis):
    the input batch, every activation alive at once and the output."""
    shape = (1, *(int(s) for s in sample_shape))

    def probe():
        with torch.inference_mode():
            return forward(torch.zeros(shape))

    _, peak = measure_peak_bytes(probe)
    return max(peak, 1)


def batch_for_budget(
    forward: Callable[[torch.Tensor], Any],
    sample_shape: Sequence[int],
    budget: int | str,
    *,
    max_batch: int = 64,
    safety: float = 1.1,
    what: str = "network",
) -> int:
    """The largest batch (at most ``max_batch``) whose working memory fits ``budget``.

    Args:
        forward: the batched forward pass (e.g. the network), called once on a zero batch of 1.
        sample_shape: one sample without the batch axis, e.g. ``(1, 256, 256)`` for a 2D slice.
        budget: bytes (or ``"512MiB"``) for one batch's input, activations and output; the model's
            weights and the volumes are not part of it.
        max_batch: upper bound (more rarely helps a CPU).
        safety: factor on the measured bytes for kernel scratch memory the measurement cannot see.
        what: the name used in the error message.

    Raises:
        ValueError: when one sample alone does not fit, naming the bytes it needs.
    """
    budget_b = parse_bytes(budget)
    if max_batch < 1:
        raise ValueError(f"max_batch must be positive, got {max_batch}")
    per = slice_bytes(forward, sample_shape) * float(safety)
    batch = int(budget_b // per)
    if batch < 1:
        raise ValueError(
            f"memory budget {budget_b / 2**20:.1f} MiB is too small: one sample of shape {tuple(sample_shape)} "
            f"needs about {per / 2**20:.1f} MiB in {what} (measured by a probe forward pass); "
            f"raise memory_budget to at least {per / 2**20:.0f} MiB or give a fixed batch_size"
        )
    return min(batch, max_batch)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it); the old count comes back after."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be positive, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
