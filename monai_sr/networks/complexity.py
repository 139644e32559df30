"""Network size and cost: parameter counts and FLOPs of a forward pass.

:func:`count_flops` uses :class:`torch.utils.flop_counter.FlopCounterMode` (PyTorch's own counter; it
works on CPU and counts at the operator level, so functional convolutions are seen as well as modules).
It counts the FLOPs of convolutions (incl. transposed), matrix multiplications and attention:
**2 FLOPs per multiply-accumulate**, so ``MACs = count_flops(...) // 2``. Element-wise work
(activations, normalisation, interpolation, pooling, additions) is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops"]


def count_parameters(net: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``net`` (only those with ``requires_grad`` if ``trainable_only``).

    Examples::

        count_parameters(SRUNet(2))          # 420900
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_flops(net: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 per multiply-accumulate) of one forward pass of ``net`` on a zero tensor of ``input_shape``.

    The input takes the device and dtype of the network's first parameter (float32 CPU if it has none).
    The pass runs in eval mode under ``torch.no_grad()``; the training mode is restored afterwards.

    Args:
        net: the network.
        input_shape: full input shape including batch and channels, e.g. ``(1, 1, 256, 256)``.

    Examples::

        count_flops(DnCNN(2), (1, 1, 64, 64))    # ~4.5e9: 17 3x3 convs on 4096 pixels
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 3 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be (N, C, *spatial) with positive sizes, got {tuple(input_shape)}")
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = net.training
    net.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        net.train(was_training)
    return int(counter.get_total_flops())
