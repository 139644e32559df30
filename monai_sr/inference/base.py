"""The inferer family's common part: scale, output geometry, blocks along the slice axis, streaming.

Every mode (:mod:`~monai_sr.inference.slicewise`, :mod:`~monai_sr.inference.sliding`,
:mod:`~monai_sr.inference.orthogonal`) is a :class:`ScaleAwareInferer`. A mode only says

* ``volume_scale(network)``: the factor per spatial axis of the whole volume;
* ``_infer_block(block, network, batch)``: the SR of a sub-volume ``(X, Y, Zb)`` -> ``(sX, sY, sZb)``;
* ``_halo(network)``: how many input slices along axis 2 a block needs on each side so that its inner
  slices come out as in a whole-volume run (0 for 2D slices along axis 2; None: no finite halo, the
  volume is one block);
* ``_block_slices(...)`` and ``_sample_shape(...)``: block size along axis 2 and the shape of one sample
  of a forward pass (for the memory budget).

The base class runs the blocks in order along axis 2 (the slice axis of a DICOM series; z-slices are
also contiguous in a NIfTI file) and gives three views of the same computation:

* :meth:`ScaleAwareInferer.iter_blocks` yields ``(k0, block)`` finished output slices ``k0, k0 + 1, ...``;
* :meth:`ScaleAwareInferer.stream` yields ``(k, plane)`` one output slice at a time (float32
  ``(column, row)`` arrays, what a slice writer takes); peak memory is one block plus the model;
* ``__call__`` fills a preallocated output from the same blocks and returns a MetaTensor whose affine
  and meta come from :func:`monai_sr.transforms.spacing.apply_sr_geometry` (the one SR-geometry formula);
  :meth:`ScaleAwareInferer.output_geometry` gives the same MetaTensor meta without any voxels, for a
  writer that must know the affine before the first slice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import StrEnum, look_up_option
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.batching import batch_for_budget, parse_bytes, torch_threads
from monai_sr.transforms.spacing import apply_sr_geometry

__all__ = ["network_scale", "network_device", "AmpDtype", "SelfEnsemble", "ScaleAwareInferer", "STREAM_AXIS"]

#: The spatial axis along which blocks run and output slices are streamed.
STREAM_AXIS = 2

#: Largest automatic batch on CPU when ``max_batch`` is not given (see :class:`ScaleAwareInferer`).
CPU_MAX_BATCH = 2
#: ``batch_size=None``: samples per forward pass on CPU, and on other devices. On CPU a larger batch of
#: whole slices is slower: glibc serves a block of 32 MiB or more by ``mmap`` and returns it when freed, so
#: every large activation is page-faulted in and zeroed again on every pass (256 x 256 slices on the
#: 2-core EPYC, bf16: SR-UNet 1.3-1.4x and DnCNN 1.7x slower per slice in batches of 4 than of 1 or 2;
#: 512 x 512: batches of 2 1.27x slower than of 1; ``benchmarks/batch_size.py``).
CPU_DEFAULT_BATCH = 1
DEVICE_DEFAULT_BATCH = 8

Progress = Callable[[int, int], None]
#: ``read(start, stop)`` -> input slices ``start .. stop - 1`` along axis 2, ``(X, Y, stop - start)``.
BlockReader = Callable[[int, int], "torch.Tensor | np.ndarray"]


def network_scale(network: nn.Module) -> tuple[int, ...]:
    """The integer scale a network declares (its ``scale`` attribute); ModelError if it declares none."""
    scale = getattr(network, "scale", None)
    if scale is None:
        raise ModelError(f"network {type(network).__name__} declares no 'scale' attribute")
    return tuple(int(s) for s in (scale if isinstance(scale, Sequence) else (scale,)))


def network_device(network: nn.Module) -> torch.device:
    """The device of the network's first parameter (CPU for a network without parameters, e.g. ONNX)."""
    p = next(network.parameters(), None) if isinstance(network, nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def self_ensemble_forward(
    network: nn.Module, x: torch.Tensor, scale: Sequence[int], *, transposes: bool = True
) -> torch.Tensor:
    """Mean of ``g^-1(network(g(x)))`` over the flips ``g`` of the last two axes of ``x`` ``(N, C, H, W)``
    and, when ``transposes`` and ``scale`` (the network's factors along those axes) is square, their
    transposes too."""
    transposes = (False, True) if transposes and int(scale[0]) == int(scale[1]) else (False,)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    total, n = None, 0
    for transpose in transposes:
        for dims in ((), (-2,), (-1,), (-2, -1)):
            g = torch.flip(x, dims) if dims else x
            if transpose:
                g = g.transpose(-2, -1)
            y = network(g.contiguous(memory_format=fmt))
            if transpose:
                y = y.transpose(-2, -1)
            y = torch.flip(y, dims) if dims else y
            total = y.float() if total is None else total + y.float()
            n += 1
    return total / n


class SelfEnsemble(StrEnum):
    """Geometric self-ensemble: ``none``; ``flips`` (the 4 flips of each plane); ``full`` (the flips and,
    for a square scale, their transposes: 8). ``True`` / ``False`` mean ``full`` / ``none``."""

    NONE = "none"
    FLIPS = "flips"
    FULL = "full"


class AmpDtype(StrEnum):
    """Mixed precision of the forward pass: ``fp16`` / ``bf16`` (``torch.autocast``), off by default;
    ``auto``: bf16 on a CPU that has it natively (:func:`cpu_has_native_bf16`), float32 elsewhere."""

    FP16 = "fp16"
    BF16 = "bf16"
    AUTO = "auto"


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16`` among the flags of
    ``/proc/cpuinfo``). Without them oneDNN emulates bf16 and runs it slower than float32, so ``auto``
    stays in float32 there; on a system without ``/proc/cpuinfo`` the answer is False."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def inference_dtype(amp: AmpDtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: float32)."""
    if amp == AmpDtype.AUTO:
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if amp is None:
        return None
    return torch.float16 if amp == AmpDtype.FP16 else torch.bfloat16


class ScaleAwareInferer(Inferer):
    """Base of the monai_sr inferers (see the module docstring); not used directly.

    Args:
        batch_size: samples per forward pass; None: :data:`CPU_DEFAULT_BATCH` on CPU,
            :data:`DEVICE_DEFAULT_BATCH` elsewhere; or ``"auto"``: the largest batch whose working memory
            fits ``memory_budget`` (measured by a probe forward pass, :func:`~.batching.batch_for_budget`).
        memory_budget: bytes or ``"512MiB"`` for one forward pass (input, activations, output) when
            ``batch_size="auto"``; ValueError when one sample does not fit.
        max_batch: upper bound of an automatic batch; None: :data:`CPU_MAX_BATCH` on CPU (there a larger
            batch only leaves the caches: SR-UNet on 256 x 256 slices ran at 151 GFLOP/s with batch 1-2,
            131 with 8, on a 2-core EPYC), 64 on a GPU.
        channels_last: run 4D batches (2D networks) in channels-last memory format (the network is moved
            to it in place); ``"auto"``: on CPU, where it measured 1.4x faster for SR-UNet.
        threads: torch intra-op threads during the call (None: leave the setting).
        amp: ``"fp16"`` or ``"bf16"`` autocast of the forward pass (None: float32; ``"auto"``: bf16 on a CPU
            with native bf16, float32 elsewhere, see :class:`AmpDtype`). On a CPU with native
            bf16 (AVX512-BF16, AMX) ``"bf16"`` measured 2x faster for SR-UNet at -0.002 dB
            (``benchmarks/inference_README.md``); CPUs without it run bf16 slower than float32.
        self_ensemble: 2D networks only (:class:`SelfEnsemble`): average the network over the flips of
            each plane (``"flips"``: 4 passes) and, with ``"full"`` / ``True`` when the plane's two scale
            factors are equal, the transposes too (8 passes), each result mapped back first (geometric
            self-ensemble, Lim et al., EDSR, CVPR-W 2017). The affine is unchanged.
    """

    def __init__(
        self,
        *,
        batch_size: int | str | None = 8,
        memory_budget: int | str | None = None,
        max_batch: int | None = None,
        channels_last: bool | str = "auto",
        threads: int | None = None,
        amp: str | None = None,
        self_ensemble: bool | str = False,
    ) -> None:
        if batch_size is None:
            pass  # chosen per device when the network is known (batch_for)
        elif batch_size == "auto":
            if memory_budget is None:
                raise ValueError("batch_size='auto' needs a memory_budget (bytes or e.g. '512MiB')")
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or 'auto', got {batch_size!r}")
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.batch_size = batch_size
        self.memory_budget = parse_bytes(memory_budget) if memory_budget is not None else None
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be a positive int or None, got {max_batch!r}")
        self.max_batch = max_batch
        self.channels_last = channels_last
        self.threads = threads
        self.amp = look_up_option(amp, AmpDtype) if amp is not None else None
        if isinstance(self_ensemble, bool):
            self_ensemble = SelfEnsemble.FULL if self_ensemble else SelfEnsemble.NONE
        if self_ensemble not in set(SelfEnsemble):
            raise ValueError(f"self_ensemble must be True, False or one of {[e.value for e in SelfEnsemble]}, got {self_ensemble!r}")
        self.self_ensemble = SelfEnsemble(self_ensemble)
        self._probe_cache: dict[tuple, int] = {}

    # ----------------------------------------------------------------- what a mode provides
    def _set_blocks(self, halo: int | None, slab: int) -> None:
        """Check and keep the streaming block settings shared by every mode: ``slab`` slices per block
        along axis 2, ``halo`` extra input slices on each side (None: the mode's own default)."""
        if halo is not None and (isinstance(halo, bool) or not isinstance(halo, int) or halo < 0):
            raise ValueError(f"halo must be a non-negative int or None, got {halo!r}")
        if isinstance(slab, bool) or not isinstance(slab, int) or slab < 1:
            raise ValueError(f"slab must be a positive int, got {slab!r}")
        self.halo = halo
        self.slab = slab

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        raise NotImplementedError

    def _halo(self, network: nn.Module) -> int | None:
        raise NotImplementedError

    def _block_slices(self, n_slices: int, batch: int) -> int:
        """Input slices along axis 2 per block (without the halo)."""
        raise NotImplementedError

    def _sample_shape(self, block_shape: tuple[int, int, int], network: nn.Module) -> tuple[int, ...]:
        """Shape ``(C, *spatial)`` of one sample of a forward pass on a block of ``block_shape``."""
        raise NotImplementedError

    def _infer_block(self, block: torch.Tensor, network: nn.Module, batch: int) -> torch.Tensor:
        raise NotImplementedError

    # ----------------------------------------------------------------- shared machinery
    def _forward(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """One forward pass: to the network's device, memory format and precision; float32 CPU back."""
        device = network_device(network)
        x = x.to(device, torch.float32)
        if x.ndim == 4 and self._use_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = inference_dtype(self.amp, device)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        with ctx:
            if self.self_ensemble != SelfEnsemble.NONE and x.ndim == 4:
                y = self_ensemble_forward(
                    network, x, network_scale(network)[-2:], transposes=self.self_ensemble == SelfEnsemble.FULL
                )
            else:
                y = network(x)
        return y.to("cpu", torch.float32)

    def _use_channels_last(self, device: torch.device) -> bool:
        return self.channels_last is True or (self.channels_last == "auto" and device.type == "cpu")

    def _prepare(self, network: nn.Module) -> None:
        if self._use_channels_last(network_device(network)) and any(p.ndim == 4 for p in network.parameters()):
            network.to(memory_format=torch.channels_last)

    def batch_for(self, inputs: torch.Tensor, network: nn.Module) -> int:
        """The batch size this inferer uses for ``inputs``: fixed, or measured against the memory budget."""
        if self.batch_size is None:
            return CPU_DEFAULT_BATCH if network_device(network).type == "cpu" else DEVICE_DEFAULT_BATCH
        if self.batch_size != "auto":
            return int(self.batch_size)
        n = inputs.shape[1 + STREAM_AXIS]
        halo = self._halo(network)
        first = n if halo is None else min(n, self._block_slices(n, 1) + 2 * halo)
        shape = self._sample_shape((*inputs.shape[1:3], first), network)
        max_batch = self.max_batch or (CPU_MAX_BATCH if network_device(network).type == "cpu" else 64)
        key = (id(network), shape, self.memory_budget, max_batch)
        if key not in self._probe_cache:
            self._prepare(network)
            self._probe_cache[key] = batch_for_budget(
                # the forward pass and the copy of its output into the block buffer
                lambda x: self._forward(network, x).clone(), shape, self.memory_budget, max_batch=max_batch,
                what=type(network).__name__,
            )
        return self._probe_cache[key]

    def _check(self, inputs: torch.Tensor, network: nn.Module) -> tuple[int, int, int]:
        if inputs.ndim != 4 or inputs.shape[0] != 1:
            raise ValueError(f"expected a channel-first 3D volume (1, X, Y, Z), got shape {tuple(inputs.shape)}")
        if min(inputs.shape[1:]) < 1:
            raise ValueError(f"the volume is empty: shape {tuple(inputs.shape)}")
        return self.volume_scale(network)

    def output_geometry(self, inputs: MetaTensor, network: nn.Module) -> MetaTensor:
        """A voxel-less stand-in of the output (zero strides): its ``affine``, ``shape`` and ``meta`` are
        those ``__call__`` returns, from :func:`apply_sr_geometry`."""
        scale = self._check(inputs, network)
        out_shape = [n * s for n, s in zip(inputs.shape[1:], scale)]
        stand_in = torch.zeros(1).expand(1, *out_shape)
        return apply_sr_geometry(stand_in, inputs, scale)

    def iter_blocks(
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        progress: Progress | None = None,
        *,
        read: BlockReader | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(k0, block)``: output slices ``k0 .. k0 + block.shape[2] - 1`` along axis 2, in order,
        each block a float32 ``(sX, sY, n)`` CPU tensor; under ``torch.inference_mode``.

        ``read(start, stop)``, when given, supplies input slices ``start .. stop - 1`` as ``(X, Y, n)``
        and ``inputs`` only gives the shape (e.g. ``VolumeSource.stand_in()``): the input is then never
        held whole either (see :mod:`monai_sr.io.volume_source`)."""
        scale = self._check(inputs, network)
        if read is None:
            data = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
            vol = data[0]  # (X, Y, Z), a view
            read = lambda a, b: vol[:, :, a:b]  # noqa: E731
        in_shape = tuple(int(v) for v in inputs.shape[1:])
        n = in_shape[STREAM_AXIS]
        s = scale[STREAM_AXIS]

        with torch_threads(self.threads), torch.inference_mode():
            batch = self.batch_for(inputs, network)
            self._prepare(network)
            halo = self._halo(network)
            step = n if halo is None else max(1, self._block_slices(n, batch))
            halo = 0 if halo is None else halo
            for start in range(0, n, step):
                stop = min(start + step, n)
                lo, hi = max(0, start - halo), min(n, stop + halo)
                x = torch.as_tensor(read(lo, hi))
                if tuple(x.shape) != (*in_shape[:2], hi - lo):
                    raise ValueError(f"the block reader returned shape {tuple(x.shape)} for slices [{lo}, {hi}) of {in_shape}")
                out = self._infer_block(x, network, batch)
                expected = tuple(int(v) * f for v, f in zip(x.shape, scale))
                if tuple(out.shape) != expected:
                    raise ModelError(
                        f"{type(network).__name__} returned a block of shape {tuple(out.shape)}, expected {expected} "
                        f"(input {tuple(x.shape)} times scale {scale})"
                    )
                block, out, x = out[:, :, (start - lo) * s : (stop - lo) * s], None, None
                yield start * s, block
                del block  # one block alive at a time: the next is made after this one is let go
                if progress:
                    progress(stop, n)

    def stream(
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        progress: Progress | None = None,
        *,
        read: BlockReader | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(k, plane)`` for every output slice ``k`` along axis 2, in order: ``plane`` a float32
        ``(column, row)`` array (the output's ``[0, :, :, k]``). Peak memory: one block plus the model
        (and the whole input unless ``read`` supplies it in blocks, see :meth:`iter_blocks`)."""
        for k0, block in self.iter_blocks(inputs, network, progress, read=read):
            for i in range(block.shape[2]):
                yield k0 + i, block[:, :, i].numpy().copy()  # a held plane does not pin the block
            del block

    def __call__(  # type: ignore[override]
        self, inputs: MetaTensor, network: nn.Module, progress: Progress | None = None
    ) -> MetaTensor:
        geo = self.output_geometry(inputs, network)
        out = torch.empty(tuple(geo.shape), dtype=torch.float32)
        for k0, block in self.iter_blocks(inputs, network, progress):
            out[0, :, :, k0 : k0 + block.shape[2]] = block
        return apply_sr_geometry(out, inputs, self.volume_scale(network))
