"""Knowledge distillation for super-resolution: a frozen teacher guides a small student.

The loss (:class:`DistillationLoss`) is output-level distillation for regression (as in e.g. Gao et al.,
"Image Super-Resolution Using Knowledge Distillation", ACCV 2018, without their feature term)::

    L = base(student, target) + kd_weight * base(student, teacher)

with ``base`` an element-wise regression loss (L1 by default), all images ``(N, C, *spatial)`` on the
high-resolution grid. ``kd_weight = 0`` is plain supervised training. The loss is zero when
student == teacher == target, and the teacher term carries no gradient into the teacher (its output is
computed under :func:`torch.inference_mode` and cloned into an ordinary constant tensor).

No feature matching: the networks of :mod:`monai_sr.networks` return only their output, and a teacher
and a student of different widths (RCAN 32-64 channels, MobileSR 24) would need learned adapters whose
own training is a second experiment. The output term is what is tested and measured here.

:class:`DistillationTrainer` is MONAI's :class:`~monai.engines.SupervisedTrainer` with a teacher. It is
a subclass only to get the teacher's output to the loss: ``SupervisedTrainer`` calls
``loss_function(pred, label)`` with nothing else. Rather than replacing ``_iteration`` (and copying its
amp, gradient accumulation, events and compile handling), the subclass wraps two of the trainer's own
arguments: ``prepare_batch`` (after the user's ``prepare_batch`` moves the batch to the device, the
frozen teacher runs on the same inputs) and ``loss_function`` (it sees the stored teacher output).
Everything else, handlers included, is the parent's. The teacher output is also placed in
``engine.state.output["teacher_pred"]`` for handlers.

Examples::

    teacher = RCAN(2, scale=2, features=32, num_groups=3, num_blocks=3, reduction=8)
    teacher.load_state_dict(torch.load("teacher.pt", weights_only=True))
    student = MobileSR(2, scale=2)
    trainer = DistillationTrainer(
        device=torch.device("cpu"), max_epochs=10, train_data_loader=loader, network=student,
        optimizer=torch.optim.Adam(student.parameters(), 1e-3), teacher=teacher,
        loss_function=DistillationLoss(kd_weight=1.0),
    )
    trainer.run()      # the teacher's weights are unchanged afterwards; only the student learns
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import default_prepare_batch
from torch import nn

__all__ = ["DistillationLoss", "DistillationTrainer", "freeze", "TEACHER_PRED"]

#: key of the teacher's output in ``engine.state.output``.
TEACHER_PRED = "teacher_pred"


class DistillationLoss(nn.Module):
    """``base(student, target) + kd_weight * base(student, teacher)``, a scalar.

    Args:
        kd_weight: weight of the teacher term, ``>= 0`` (0: plain supervised loss).
        base: element-wise regression loss with ``reduction="mean"`` (default :class:`torch.nn.L1Loss`,
            the usual SR loss; :class:`torch.nn.MSELoss` works the same way).

    ``forward(student, target, teacher)``: three tensors of one shape ``(N, C, *spatial)``; ``teacher``
    is detached here too, so a teacher output that still carries a graph adds no gradient to it.

    Examples::

        loss = DistillationLoss(kd_weight=0.5)
        value = loss(student_out, hr, teacher_out)      # scalar tensor
    """

    def __init__(self, kd_weight: float = 1.0, base: nn.Module | None = None) -> None:
        super().__init__()
        if not kd_weight >= 0.0:
            raise ValueError(f"kd_weight must be >= 0, got {kd_weight!r}")
        self.kd_weight = float(kd_weight)
        self.base = nn.L1Loss() if base is None else base

    def terms(self, student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two terms, unweighted: ``{"target": base(student, target), "teacher": base(student, teacher)}``."""
        for name, t in (("target", target), ("teacher", teacher)):
            if t.shape != student.shape:
                raise ValueError(f"{name} shape {list(t.shape)} differs from the student output {list(student.shape)}")
        return {"target": self.base(student, target), "teacher": self.base(student, teacher.detach())}

    def forward(self, student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.terms(student, target, teacher)
        if self.kd_weight == 0.0:
            return t["target"]
        return t["target"] + self.kd_weight * t["teacher"]


def freeze(net: nn.Module) -> nn.Module:
    """Put ``net`` in eval mode and turn off ``requires_grad`` of all its parameters; returns it."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class DistillationTrainer(SupervisedTrainer):
    """:class:`~monai.engines.SupervisedTrainer` whose loss also sees a frozen teacher's output.

    Per iteration: the user's ``prepare_batch`` gives ``inputs`` (``(N, C, *lr_spatial)``) and
    ``targets`` (``(N, C, *hr_spatial)``); the teacher runs on ``inputs`` under
    :func:`torch.inference_mode` (and under autocast when ``amp`` is on, on CUDA, as the student does);
    the student's forward, loss, backward and optimiser step are the parent's, with
    ``loss_function(student_pred, targets, teacher_pred)``. See the module docstring for why this is a
    subclass and what it wraps.

    Args:
        teacher: the teacher network; it is frozen (:func:`freeze`) and moved to ``device``. It must not
            share parameters with ``network`` (checked).
        loss_function: ``(student_pred, target, teacher_pred) -> scalar``, e.g. :class:`DistillationLoss`.
        prepare_batch: as for ``SupervisedTrainer``; it must be deterministic (MONAI's default is).
        kwargs: every other ``SupervisedTrainer`` argument (``device``, ``max_epochs``,
            ``train_data_loader``, ``network``, ``optimizer``, handlers, ``amp`` ...).
    """

    def __init__(
        self,
        *,
        teacher: nn.Module,
        loss_function: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        prepare_batch: Callable = default_prepare_batch,
        **kwargs: Any,
    ) -> None:
        network = kwargs.get("network")
        if network is not None:
            student_ids = {id(p) for p in network.parameters()}
            if any(id(p) in student_ids for p in teacher.parameters()):
                raise ValueError("the teacher shares parameters with the student network; pass an independent copy")
        self.teacher = freeze(teacher).to(kwargs["device"]) if "device" in kwargs else freeze(teacher)
        self.distillation_loss = loss_function
        self._user_prepare_batch = prepare_batch
        self._teacher_pred: torch.Tensor | None = None
        super().__init__(prepare_batch=self._prepare_and_teach, loss_function=self._loss, **kwargs)

    def teach(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's output for ``inputs``, as an ordinary tensor without a graph."""
        self.teacher.eval()  # stays in eval mode whatever a handler does to the trainer's networks
        device = inputs.device
        use_amp = self.amp and device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp, **(self.amp_kwargs if use_amp else {})):
            out = self.teacher(inputs)
        # an inference tensor cannot be saved for backward; a clone made outside inference mode can
        return out.clone()

    def _prepare_and_teach(self, batchdata: Any, device: Any, non_blocking: bool, **kwargs: Any) -> Sequence:
        batch = self._user_prepare_batch(batchdata, device, non_blocking, **kwargs)
        self._teacher_pred = self.teach(batch[0])
        return batch

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._teacher_pred is None:
            raise RuntimeError("no teacher output for this iteration (prepare_batch was bypassed)")
        teacher_pred, self._teacher_pred = self._teacher_pred, None
        if isinstance(self.state.output, dict):
            self.state.output[TEACHER_PRED] = teacher_pred
        return self.distillation_loss(pred, target, teacher_pred.to(pred.dtype))
