"""Pieces that the bundles' ``train.json`` adds to MONAI's SupervisedTrainer / SupervisedEvaluator.

- :class:`AutocastInferer`: bf16 autocast on CPU. MONAI 1.6's ``SupervisedTrainer(amp=True)`` and
  ``SupervisedEvaluator(amp=True)`` hard-code ``torch.autocast("cuda", ...)`` and a
  ``torch.cuda.amp.GradScaler`` (``monai/engines/trainer.py::_iteration``), so on a CPU ``amp=True``
  does nothing but warn. Both engines call ``engine.inferer(inputs, network)`` for the forward pass, so
  wrapping the inferer is the smallest change that puts the forward pass under CPU autocast, with no
  subclass of the engines and no copy of their iteration. bf16 keeps fp32's exponent range, so it needs
  no gradient scaler; the loss is computed in fp32 (the prediction is cast back). On CUDA the configs
  use MONAI's own ``amp=True`` (fp16 autocast + GradScaler) and leave this wrapper disabled.
- :class:`ProgressivePatch`: sets the training dataset's epoch (fresh random pairs each epoch) and its
  patch size from a schedule such as ``{0: 32, 5: 64}`` (epoch -> input pixels; small patches first).
- :class:`InterpolatedInput`: an evaluator ``output_transform`` that scores plain interpolation of the
  input (the bicubic baseline) with the same metric handler as the network.
- :class:`RunRecord`: logs the seed and versions when training starts and rides in the checkpoint
  (``CheckpointSaver(save_dict={..., "run": record})``), so a checkpoint says how it was made and a
  resumed run checks that it continues with the same seed.
- :func:`save_atomic`: ``torch.save`` to a temporary file beside the target, then a rename, so a
  checkpoint is either the old one or the new one, never half written (the training scripts use it).
- :func:`train_step`: one optimiser step of the training scripts' own loops (learning rate from their
  schedule, loss, zero-grad, backward, step), so that every script steps the same way.

Examples (JSON, as in ``bundles/mri_sr_unet/configs/train.json``)::

    "inferer": {"_target_": "monai_sr.training.trainer.AutocastInferer",
                "enabled": "$@amp and @device.type == 'cpu'"},
    "handlers": [{"_target_": "monai_sr.training.trainer.ProgressivePatch",
                  "dataset": "@train#dataset", "schedule": {"0": 32, "5": 48}}, ...]
"""

from __future__ import annotations

import logging
import os
import platform
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

__all__ = [
    "AutocastInferer", "ProgressivePatch", "RunRecord", "InterpolatedInput", "autocast_dtype", "save_atomic", "train_step",
]

LOG = logging.getLogger("monai_sr.training")


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through ``path.tmp`` and ``os.replace``: a reader (or a resumed run after a
    kill) sees the previous file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_training_state(
    path: str | os.PathLike, *, network: nn.Module, optimizer: torch.optim.Optimizer, step: int, best: float,
    rng: np.random.Generator,
) -> None:
    """Write what a training script needs to resume (weights, optimiser, step, best validation score,
    torch's and ``rng``'s states), atomically (:func:`save_atomic`)."""
    save_atomic({"model": network.state_dict(), "optimizer": optimizer.state_dict(), "step": int(step), "best": float(best),
                 "torch_rng": torch.get_rng_state(), "numpy_rng": rng.bit_generator.state}, path)


def load_training_state(
    path: str | os.PathLike, *, network: nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator
) -> tuple[int, float]:
    """Restore a :func:`save_training_state` file into ``network``, ``optimizer``, torch's and ``rng``'s
    states (``weights_only=True``: the file holds tensors and plain values only); returns ``(step, best)``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    return int(state["step"]), float(state["best"])


def train_step(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    lr: float | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.nn.functional.l1_loss,
) -> torch.Tensor:
    """One step: every parameter group's learning rate set to ``lr`` (unless None), ``loss_fn(network(inputs),
    target)``, gradients zeroed (``set_to_none``), backward, ``optimizer.step()``. Returns the loss, detached."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    loss = loss_fn(network(inputs), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def autocast_dtype(device_type: str) -> torch.dtype:
    """The mixed-precision dtype the bundles use: bf16 on CPU, fp16 on CUDA."""
    return torch.bfloat16 if device_type == "cpu" else torch.float16


class AutocastInferer(Inferer):
    """Run ``inferer`` (default :class:`monai.inferers.SimpleInferer`) under ``torch.autocast``.

    Args:
        inferer: the wrapped inferer.
        device_type: ``"cpu"`` (default) or ``"cuda"``; also accepts a ``torch.device``.
        dtype: autocast dtype; default :func:`autocast_dtype` of ``device_type`` (bf16 on CPU).
        enabled: ``False`` makes this a plain pass-through (the configs switch it off on CUDA, where
            MONAI's ``amp=True`` does fp16 with a gradient scaler).

    The output is cast back to float32, so losses and metrics run in full precision.
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        *,
        device_type: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        enabled: bool = True,
    ) -> None:
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.device_type = device_type.type if isinstance(device_type, torch.device) else str(device_type)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype if dtype is not None else autocast_dtype(self.device_type)
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled):
            out = self.inferer(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out


def _parse_schedule(schedule: Mapping[Any, int] | None) -> list[tuple[int, int]]:
    if not schedule:
        return []
    items = sorted((int(k), int(v)) for k, v in schedule.items())
    if items[0][0] != 0:
        raise ValueError(f"a patch schedule must start at epoch 0, got {dict(items)}")
    if any(v < 1 for _, v in items):
        raise ValueError(f"patch sizes must be positive, got {dict(items)}")
    return items


class ProgressivePatch:
    """At every epoch start: ``dataset.set_epoch(e)`` and ``dataset.patch = schedule(e)``.

    ``e`` is the 0-based epoch (ignite's ``state.epoch - 1``); ``schedule`` maps a first epoch to a patch
    size in input pixels (JSON keys may be strings), e.g. ``{0: 32, 5: 64}``: epochs 0-4 use 32, then 64.
    Without a schedule only the epoch is set. A resumed run lands on the right patch size because the
    trainer's epoch is restored before the epoch starts.
    """

    def __init__(self, dataset: Any, schedule: Mapping[Any, int] | None = None) -> None:
        if not hasattr(dataset, "set_epoch"):
            raise TypeError(f"{type(dataset).__name__} has no set_epoch(); use monai_sr.training.datasets.RandomPairDataset")
        self.dataset = dataset
        self.schedule = _parse_schedule(schedule)

    def patch_for(self, epoch: int) -> int | None:
        """The scheduled patch size of 0-based ``epoch`` (``None`` without a schedule)."""
        size = None
        for first, value in self.schedule:
            if epoch >= first:
                size = value
        return size

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine) -> None:
        epoch = engine.state.epoch - 1
        self.dataset.set_epoch(epoch)
        size = self.patch_for(epoch)
        if size is not None and size != self.dataset.patch:
            LOG.info("epoch %d: patch %d -> %d input pixels", epoch, self.dataset.patch, size)
            self.dataset.patch = size


class RunRecord:
    """The seed and software of a training run: logged at start, stored in checkpoints.

    Use with ``monai.utils.set_determinism(seed)`` in the config's ``initialize`` list (the network's
    initial weights depend on it) and put the record in the CheckpointSaver's and CheckpointLoader's
    ``save_dict``/``load_dict`` under ``"run"``. Loading a checkpoint made with another seed warns.
    """

    def __init__(self, seed: int, **extra: Any) -> None:
        self.seed = int(seed)
        self.extra = dict(extra)
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        import monai

        return {
            "seed": self.seed,
            "torch": str(torch.__version__),
            "monai": str(monai.__version__),
            "python": platform.python_version(),
            **{k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool, list, dict, type(None)))},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loaded = dict(state)
        if int(state.get("seed", self.seed)) != self.seed:
            warnings.warn(f"resuming a run made with seed {state.get('seed')} under seed {self.seed}", stacklevel=2)
        LOG.info("resumed a checkpoint recorded as %s", self.loaded)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine) -> None:
        LOG.info("run record: %s", self.state_dict())
        engine.state.run_record = self.state_dict()


class InterpolatedInput:
    """Metric ``output_transform``: ``(interpolate(image), label)`` per item of a decollated output.

    With ``PeakSignalToNoiseRatio(output_transform=InterpolatedInput(2))`` an evaluator reports the
    bicubic baseline beside the network. ``align_corners=False`` puts output pixel ``j`` at input index
    ``(j + 0.5) / s - 0.5``, the package's field-of-view rule (the SR-UNet's own residual path).

    Args:
        scale: per spatial axis factor (an int for all axes).
        mode: ``torch.nn.functional.interpolate`` mode (``"bicubic"`` for 2D).
    """

    def __init__(self, scale: int | tuple[int, ...] = 2, mode: str = "bicubic") -> None:
        self.scale = scale
        self.mode = mode

    def __call__(self, output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        import torch.nn.functional as F

        items = output if isinstance(output, list) else [output]
        preds, labels = [], []
        for item in items:
            x = item["image"]
            sf = self.scale if isinstance(self.scale, int) else tuple(self.scale)
            preds.append(F.interpolate(x[None].float(), scale_factor=sf, mode=self.mode, align_corners=False)[0])
            labels.append(item["label"])
        return preds, labels
