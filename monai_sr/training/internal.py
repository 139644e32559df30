"""Per-volume fitting ("internal learning"): fine-tune a pretrained network on pairs made from the very
volume it is about to enhance, within a step and/or wall-time budget.

* :func:`fit_on_volume` is the generic loop: Adam from the given weights, L1 loss, cosine decay of the
  learning rate over the budget, batches from a *pair source* (anything with ``batch(n) -> (input,
  target)`` numpy arrays ``(n, 1, h, w)`` / ``(n, 1, H, W)``), stopped by ``steps`` or ``seconds``,
  whichever comes first. The network comes back in eval mode with a :class:`FitRecord`.
* Pair sources from the input itself:

  - in-plane internal learning (:class:`InternalLearning`, for the x2 in-plane SR-UNet): the input's
    slices are degraded once more by the network's factor (k-space truncation,
    :class:`monai_sr.training.pairs.DegradedStack`), giving (input-LR, input) pairs of the same
    relation as (input, wanted output);
  - through-plane (:class:`ThroughPlaneFit`, SMORE-style): the input's sharp in-plane slices degraded
    along one in-plane axis by the slice profile of the header (:mod:`monai_sr.training.through_plane`).

* :class:`InternalLearning` and :class:`ThroughPlaneFit` are the ``adapt(image, network) -> network``
  hook of :func:`monai_sr.pipeline.enhance`: ``image`` is the normalised input MetaTensor
  ``(1, X, Y, Z)`` (RAS affine, intensities / robust max: the units the network was trained in). The
  hook fits a *copy* of the network, so a folder of cases each starts from the pretrained weights. They
  take only plain keyword arguments, so a bundle config builds them with ``_target_``.

Examples::

    net = load_pretrained()                                      # SRUNet(2, scale=(1, 4))
    adapt = ThroughPlaneFit(seconds=120)
    enhance("t2_4mm.nii.gz", "t2_1mm.nii.gz", network=net, inferer=OrthogonalPlanesInferer(2), adapt=adapt)
    adapt.last_record                                            # FitRecord(steps=..., seconds=..., ...)
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_sr.checks import check_axis, check_positive_int
from monai_sr.errors import ModelError
from monai_sr.meta import NOTES_KEY
from monai_sr.inference.base import network_device, network_scale
from monai_sr.inference.baselines import ZeroFilledInterpolation
from monai_sr.training.guard import held_out_psnr, split_held_out
from monai_sr.training.pairs import DegradedStack, PairSampler
from monai_sr.training.schedule import cosine_decay
from monai_sr.training.through_plane import ThroughPlanePairs

__all__ = ["PairSource", "FitRecord", "fit_on_volume", "InternalLearning", "ThroughPlaneFit", "in_plane_pairs"]

LOG = logging.getLogger(__name__)


class PairSource(Protocol):
    """Anything that draws training batches: ``batch(n) -> (input (n, 1, h, w), target (n, 1, H, W))``."""

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FitRecord:
    """What a per-volume fit did.

    Attributes:
        steps: optimiser steps taken.
        seconds: wall time of :func:`fit_on_volume` (making the pairs before it is ``setup_seconds``).
        loss_first: mean L1 loss of the first ``min(10, steps)`` steps (normalised units).
        loss_last: mean L1 loss of the last ``min(10, steps)`` steps.
        stopped_by: ``"steps"`` or ``"seconds"``: which budget ended the fit.
        setup_seconds: time spent making the pair source (filled in by the hooks).
        held_out_before, held_out_after: PSNR (dB) of the pretrained and the fitted network on the
            slices the fit never saw (:mod:`monai_sr.training.guard`); None without a guard.
        kept: whether the fitted network was kept (always True without a guard).
        held_out_fallback: PSNR of the hook's fallback (zero-filled interpolation for
            :class:`InternalLearning`) on the same held-out part; None without one.
        fallback_used: the fallback scored at least as well as the network chosen and replaced it.
    """

    steps: int
    seconds: float
    loss_first: float
    loss_last: float
    stopped_by: str
    setup_seconds: float = 0.0
    held_out_before: float | None = None
    held_out_after: float | None = None
    kept: bool = True
    held_out_fallback: float | None = None
    fallback_used: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _check_budget(steps: int | None, seconds: float | None) -> None:
    if steps is None and seconds is None:
        raise ValueError("give a budget: steps, seconds or both")
    if steps is not None:
        check_positive_int("steps", steps, minimum=0)
    if seconds is not None and not (np.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")


def fit_on_volume(
    network: nn.Module,
    pair_source: PairSource,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 50,
    clock: Callable[[], float] = time.perf_counter,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[nn.Module, FitRecord]:
    """Fine-tune ``network`` in place on batches of ``pair_source`` until a budget is spent.

    The learning rate decays from ``lr`` to 1 % of it along a cosine over the budget's progress,
    ``max(step / steps, elapsed / seconds)``, so a time-bounded fit ends on a small step too. The check
    of the time budget happens before each step: a fit overruns ``seconds`` by at most one step.

    Args:
        network: the (pretrained) network, on its device; its weights are changed.
        pair_source: see :class:`PairSource`; arrays are moved to the network's device.
        steps, seconds: budgets (at least one); ``0`` returns the network untouched.
        lr: peak Adam learning rate.
        batch_size: pairs per step.
        seed: torch seed for the loop (the pair source has its own).
        threads: torch intra-op threads during the fit (restored afterwards); None leaves them.
        log: called with a progress line every ``log_every`` steps and at the end (default: this
            module's logger at INFO).
        clock: seconds for the time budget (default ``time.perf_counter``; tests pass a step counter).
        loss: ``loss(output, input, target)`` (default: L1 of output and target), e.g.
            :class:`monai_sr.training.losses.AcquiredBandLoss` for a network run with data consistency.

    Returns:
        ``(network, record)``: the same network object in eval mode and a :class:`FitRecord`.
    """
    t0 = clock()  # the budget covers the optimiser's set-up too (its first use imports a lot)
    _check_budget(steps, seconds)
    if lr <= 0 or batch_size < 1:
        raise ValueError(f"lr must be > 0 and batch_size >= 1, got {lr} and {batch_size}")
    log = log or LOG.info
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    device = network_device(network)
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    losses: list[float] = []
    stopped_by = "steps"
    network.train()
    try:
        while True:
            elapsed = clock() - t0
            if steps is not None and len(losses) >= steps:
                break
            if seconds is not None and elapsed >= seconds:
                stopped_by = "seconds"
                break
            progress = max(len(losses) / steps if steps else 0.0, elapsed / seconds if seconds else 0.0)
            for g in opt.param_groups:
                g["lr"] = lr * cosine_decay(progress)
            x, y = pair_source.batch(batch_size)
            x = torch.as_tensor(x, device=device)
            y = torch.as_tensor(y, device=device)
            value = loss(network(x), x, y) if loss is not None else nn.functional.l1_loss(network(x), y)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            losses.append(float(value.detach()))
            if log_every and len(losses) % log_every == 0:
                log(f"per-volume fit: step {len(losses)}, loss {np.mean(losses[-log_every:]):.5f}, "
                    f"{clock() - t0:.1f} s")
    finally:
        if threads is not None:
            torch.set_num_threads(before)
        network.eval()
    n = min(10, len(losses))
    record = FitRecord(
        steps=len(losses),
        seconds=clock() - t0,
        loss_first=float(np.mean(losses[:n])) if n else float("nan"),
        loss_last=float(np.mean(losses[-n:])) if n else float("nan"),
        stopped_by=stopped_by,
    )
    log(f"per-volume fit done: {record.steps} steps in {record.seconds:.1f} s (stopped by {record.stopped_by}), "
        f"L1 {record.loss_first:.5f} -> {record.loss_last:.5f}")
    return network, record


def _volume(image: torch.Tensor) -> np.ndarray:
    """``(X, Y, Z)`` float32 numpy of a single-channel ``(1, X, Y, Z)`` tensor."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected a single-channel volume (1, X, Y, Z), got shape {tuple(image.shape)}")
    t = image.as_tensor() if isinstance(image, MetaTensor) else image
    return t[0].detach().cpu().numpy().astype(np.float32, copy=False)


def in_plane_pairs(
    image: torch.Tensor, factor: int, *, axis: int = 2, lr_size: int = 32, seed: int = 0, jitter: float = 0.1
) -> PairSampler:
    """In-plane internal-learning pairs: the slices of ``image`` ``(1, X, Y, Z)`` along ``axis`` (the
    slices the :class:`~monai_sr.inference.SliceWiseInferer` super-resolves) k-space truncated by
    ``factor`` once more; (input-LR, input) crops of ``lr_size`` LR pixels (smaller slices: the crop
    shrinks to fit), flips/transposes and intensity jitter, no noise (the input's own noise is in both)."""
    stack = DegradedStack.from_volume(_volume(image), axis, factor)
    size = max(1, min(int(lr_size), stack.lr.shape[1], stack.lr.shape[2]))
    return PairSampler([stack], lr_size=size, seed=seed, jitter=jitter, noise_prob=0.0, min_foreground=0.2)


@dataclass(kw_only=True, eq=False)
class _VolumeFit:
    """Shared ``adapt`` hook logic: copy the network, make pairs from the input, fit, keep the record.

    The fields are the hooks' keyword arguments (a bundle config builds them with ``_target_``); a
    subclass sets its own defaults and adds its own fields, checked in :meth:`__post_init__`.
    ``min_gain_db``: with a guard (:meth:`held_out`), the fit is kept only when it beats the pretrained
    network on the held-out part by more than this.
    """

    steps: int | None
    seconds: float | None
    min_gain_db: float = 0.0
    lr: float = 1e-4
    batch_size: int = 8
    lr_size: int | Sequence[int] = 32
    seed: int = 0
    threads: int | None = None
    enabled: bool = True
    records: list[FitRecord] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.enabled:
            _check_budget(self.steps, self.seconds)
        self.lr, self.batch_size, self.seed, self.enabled = float(self.lr), int(self.batch_size), int(self.seed), bool(self.enabled)

    @property
    def last_record(self) -> FitRecord | None:
        """The :class:`FitRecord` of the last fit (None before any)."""
        return self.records[-1] if self.records else None

    def pairs(self, image: torch.Tensor, network: nn.Module) -> PairSource:
        raise NotImplementedError

    def held_out(self, image: torch.Tensor, network: nn.Module) -> tuple[torch.Tensor, Callable[[nn.Module], float] | None, str]:
        """``(image to make pairs from, score of a network on what was set aside, what was set aside)``;
        no guard here: the whole image and no score (a hook with a guard overrides this)."""
        return image, None, ""

    def loss(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The fit's ``loss(output, input, target)`` (None: L1, see :func:`fit_on_volume`)."""
        return None

    def fallback(self, network: nn.Module) -> nn.Module | None:
        """What the guard uses instead of any network that does not beat it on the held-out part (None:
        no fallback)."""
        return None

    def __call__(self, image: torch.Tensor, network: nn.Module) -> nn.Module:
        """Return a fitted copy of ``network`` (``network`` itself, untouched, when disabled or when the
        guard finds the fit worse than the pretrained network on the held-out part; the hook's
        :meth:`fallback` when that scores at least as well as the network chosen)."""
        if not self.enabled:
            return network
        t0 = time.perf_counter()
        train, score, held = self.held_out(image, network)
        source = self.pairs(train, network)
        setup = time.perf_counter() - t0
        fitted = copy.deepcopy(network)
        fitted, record = fit_on_volume(
            fitted, source, steps=self.steps, seconds=self.seconds, lr=self.lr, batch_size=self.batch_size,
            seed=self.seed, threads=self.threads, loss=self.loss(),
        )
        record.setup_seconds = setup
        note = (f"per-volume fit ({type(self).__name__}): {record.steps} steps in {record.seconds:.0f} s "
                f"(stopped by {record.stopped_by}), L1 loss {record.loss_first:.4g} -> {record.loss_last:.4g}")
        if score is not None:
            record.held_out_before, record.held_out_after = score(network), score(fitted)
            gain = record.held_out_after - record.held_out_before
            record.kept = bool(np.isfinite(gain) and gain > self.min_gain_db)
            note += (f"; guard ({held}): {record.held_out_before:.2f} -> {record.held_out_after:.2f} dB "
                     f"({gain:+.2f} dB), {'kept' if record.kept else 'rejected: the pretrained network is used'}")
        chosen = fitted if record.kept else network
        fallback = self.fallback(network) if score is not None else None
        if fallback is not None:
            record.held_out_fallback = score(fallback)
            best = record.held_out_after if record.kept else record.held_out_before
            if not record.held_out_fallback < best:
                record.fallback_used, chosen = True, fallback
                note += (f"; {type(fallback).__name__} scores {record.held_out_fallback:.2f} dB there, not below the "
                         f"network: it is used instead")
        self.records.append(record)
        LOG.info(note)
        notes = image.meta.get(NOTES_KEY) if isinstance(image, MetaTensor) else None
        if isinstance(notes, list):  # enhance puts them in its result (see monai_sr.pipeline.enhance)
            notes.append(note)
        return chosen


@dataclass(kw_only=True, eq=False)
class InternalLearning(_VolumeFit):
    """``adapt`` hook: in-plane internal learning for an in-plane SR network (scale ``(s, s)``), see
    :func:`in_plane_pairs` and :func:`fit_on_volume`.

    Args:
        steps, seconds: fit budget (at least one when ``enabled``).
        lr, batch_size, seed, threads: see :func:`fit_on_volume`.
        lr_size: LR crop side.
        axis: the spatial axis the slice-wise inferer runs along (2: the slices of a DICOM series).
        guard: hold out part of the input (:func:`monai_sr.training.guard.split_held_out`), fit on the
            rest, and keep the fitted network only if it beats the pretrained one there by more than
            ``min_gain_db`` (:func:`~monai_sr.training.guard.held_out_psnr`); the decision and both
            scores go to the notes and the :class:`FitRecord`.
        guard_consistent: score the held-out slices after data consistency (as the inferer with
            ``data_consistency`` runs the network).
        fit_consistent: fit behind the data-consistency projection
            (:class:`monai_sr.training.losses.AcquiredBandLoss`): the loss reaches the network only outside
            the band each training input measured, as the inferer with ``data_consistency`` uses it.
        fallback_zero_filled: with the guard, use zero-filled k-space interpolation
            (:class:`~monai_sr.inference.baselines.ZeroFilledInterpolation`) instead of the network when
            it scores at least as well on the held-out part: the output is then never worse there than
            the free physics baseline.
        enabled: False makes the hook return the network untouched (a config switch).

    Examples::

        adapt = InternalLearning(steps=200, seconds=60)
        enhance(src, dst, network=sr_unet, adapt=adapt)
    """

    steps: int | None = 200
    seconds: float | None = None
    axis: int = 2
    guard: bool = True
    guard_consistent: bool = True
    fit_consistent: bool = False
    fallback_zero_filled: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_axis("axis", self.axis)

    def held_out(self, image: torch.Tensor, network: nn.Module) -> tuple[torch.Tensor, Callable[[nn.Module], float] | None, str]:
        if not self.guard:
            return image, None, ""
        train, held, how = split_held_out(_volume(image), self.axis)
        factor = self._factor(network)
        return (torch.from_numpy(np.ascontiguousarray(train))[None],
                lambda net: held_out_psnr(net, held, self.axis, factor, consistent=self.guard_consistent), how)

    def loss(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        from monai_sr.training.losses import AcquiredBandLoss

        return AcquiredBandLoss() if self.fit_consistent else None

    def fallback(self, network: nn.Module) -> nn.Module | None:
        return ZeroFilledInterpolation(self._factor(network)) if self.fallback_zero_filled else None

    @staticmethod
    def _factor(network: nn.Module) -> int:
        s = network_scale(network)
        if len(s) != 2 or s[0] != s[1] or s[0] < 2:
            raise ModelError(f"in-plane internal learning needs a 2D network with scale (s, s), s >= 2; got {s}")
        return s[0]

    def pairs(self, image: torch.Tensor, network: nn.Module) -> PairSampler:
        return in_plane_pairs(image, self._factor(network), axis=self.axis, lr_size=int(self.lr_size), seed=self.seed)


@dataclass(kw_only=True, eq=False)
class ThroughPlaneFit(_VolumeFit):
    """``adapt`` hook: self-supervised through-plane fit (SMORE-style) of a 2D network of scale ``(1, s)``
    or ``(s, 1)`` before :class:`~monai_sr.inference.OrthogonalPlanesInferer` runs it; pairs from
    :meth:`monai_sr.training.through_plane.ThroughPlanePairs.from_input`.

    Args:
        steps, seconds: fit budget (at least one when ``enabled``).
        lr, batch_size, seed, threads: see :func:`fit_on_volume`.
        lr_size: LR crop ``(fine, coarse)`` or an int.
        lr_axis: the input's coarse (slice) axis; must match the inferer's ``lr_axis``.
        slice_thickness: mm; overrides the header's thickness (NIfTI carries none: then the slice
            spacing, i.e. no gap, unless given here).
        profile: slice profile, ``"gaussian"`` (FWHM = thickness) or ``"rect"``.
        factor: the through-plane factor: None keeps the network's; ``"spacing"`` takes it from the
            input's spacing (:func:`~monai_sr.training.through_plane.through_plane_factor_from_spacing`
            with ``target_spacing``, ``ratio_policy``, ``max_factor``; the choice goes to the notes); an int
            forces it. A factor other than the network's rebuilds it
            (:func:`~monai_sr.training.through_plane.rescale_through_plane_network`: body weights kept, head
            by ``head_init``) before the fit.
        target_spacing: mm; the output slice spacing aimed at (default: the mean in-plane spacing).
        ratio_policy: ``"round"``, ``"floor"`` or ``"exact"`` for a spacing ratio that is not an integer.
        max_factor: a larger factor from the spacing is refused (too thick to recover).
        head_init: ``"pretrained"``, ``"phase"`` or ``"zero"``, see
            :class:`~monai_sr.training.through_plane.HeadInit`.
        heads: path of the heads trained per factor (``scripts/train_through_plane_heads.py``) for
            ``head_init="pretrained"``; a factor without one falls back to ``"phase"``.
        enabled: False skips the fit (the factor from the spacing still applies; with ``factor`` None the
            hook returns the network untouched: a config switch).
    """

    steps: int | None = None
    seconds: float | None = 120.0
    lr_axis: int = 2
    slice_thickness: float | None = None
    profile: str = "gaussian"
    factor: int | str | None = None
    target_spacing: float | None = None
    ratio_policy: str = "round"
    max_factor: int = 10
    head_init: str = "phase"
    heads: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_axis("lr_axis", self.lr_axis)
        if self.slice_thickness is not None and not self.slice_thickness > 0:
            raise ValueError(f"slice_thickness must be > 0 mm, got {self.slice_thickness!r}")
        if not (self.factor is None or self.factor == "spacing" or (isinstance(self.factor, int) and self.factor >= 1)):
            raise ValueError(f"factor must be None, 'spacing' or a positive int, got {self.factor!r}")
        if self.target_spacing is not None and not self.target_spacing > 0:
            raise ValueError(f"target_spacing must be > 0 mm, got {self.target_spacing!r}")

    def for_input(self, image: torch.Tensor, network: nn.Module) -> nn.Module:
        """``network`` rebuilt for this input's through-plane factor (see ``factor``); the choice is noted."""
        from monai_sr.geometry import spacing_from_affine
        from monai_sr.training.through_plane import rescale_through_plane_network, through_plane_factor_from_spacing

        if self.factor is None:
            return network
        if self.factor == "spacing":
            if not isinstance(image, MetaTensor):
                raise ValueError("ThroughPlaneFit(factor='spacing') needs the input as a MetaTensor (its affine)")
            choice = through_plane_factor_from_spacing(
                spacing_from_affine(np.asarray(image.affine, dtype=np.float64))[:3], self.lr_axis,
                target_spacing=self.target_spacing, policy=self.ratio_policy, max_factor=self.max_factor,
            )
            factor, note = choice.factor, choice.note()
        else:
            factor, note = int(self.factor), f"through-plane factor x{self.factor} (given)"
        from monai_sr.training.through_plane import load_heads

        before = network_scale(network)
        head_init = self.head_init
        heads = load_heads(self.heads) if head_init == "pretrained" and self.heads and factor != max(before) else None
        if head_init == "pretrained" and factor not in (heads or {}):
            head_init = "phase"  # no head trained for this factor
        network = rescale_through_plane_network(network, factor, head_init=head_init, heads=heads)
        if network_scale(network) != before:
            note += f"; network rebuilt from scale {before} (body weights kept, {head_init} x{factor} head)"
        LOG.info(note)
        notes = image.meta.get(NOTES_KEY) if isinstance(image, MetaTensor) else None
        if isinstance(notes, list):
            notes.append(note)
        return network

    def __call__(self, image: torch.Tensor, network: nn.Module) -> nn.Module:
        """The network for this input's factor (:meth:`for_input`), then fitted (when ``enabled``)."""
        return super().__call__(image, self.for_input(image, network))

    def pairs(self, image: torch.Tensor, network: nn.Module) -> ThroughPlanePairs:
        if not isinstance(image, MetaTensor):
            raise ValueError("ThroughPlaneFit needs the input as a MetaTensor (spacing and slice thickness come from it)")
        return ThroughPlanePairs.from_input(
            image, network, lr_axis=self.lr_axis, slice_thickness=self.slice_thickness, profile=self.profile,
            lr_size=self.lr_size, seed=self.seed,
        )
