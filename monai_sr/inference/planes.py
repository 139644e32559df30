"""Slice-wise along several axes, averaged: a 3D-consistent result from a 2D denoiser.

A 2D network trained on slices along all three axes makes three estimates of the same volume when run
along axes 0, 1 and 2; their errors are partly independent, so the voxel-wise mean has less residual
noise than any one of them (the mri_denoise_dncnn bundle measured +1.49 dB over axial slices alone on
Colin27 at Rician 5%, see its docs/README.md). That holds for near-isotropic voxels only: a plane that
contains a thick axis (a sagittal or coronal cut through 5 mm axial slices) shows the network a smeared,
staircase image it never saw, and its estimate drags the mean down. ``axes="auto"`` therefore reads the
voxel size from the input's affine and keeps only the planes whose two axes are the fine ones
(:func:`choose_plane_axes`). Scale 1 only (one grid to average on). Not streaming: the average needs
every axis' estimate of each output slice, so the whole input and one output volume (plus the estimate
being added) are held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from monai_sr import geometry
from monai_sr.errors import GeometryError, ModelError
from monai_sr.inference.slicewise import SliceWiseInferer
from monai_sr.meta import NOTES_KEY

__all__ = ["PlaneMeanInferer", "choose_plane_axes", "AUTO_ANISOTROPY", "AUTO_MIN_SLICES"]

#: Largest voxel-size ratio still averaged over the three orientations by ``axes="auto"``.
AUTO_ANISOTROPY = 1.5
#: Fewer voxels than this along an axis: a stack of a few slices, denoised in its own plane only.
AUTO_MIN_SLICES = 8


def choose_plane_axes(
    spacing: Sequence[float], shape: Sequence[int], *, anisotropy: float = AUTO_ANISOTROPY, min_slices: int = AUTO_MIN_SLICES
) -> tuple[int, ...]:
    """The slice axes a 2D denoiser should run along for voxels of ``spacing`` (mm) and a grid of ``shape``.

    - an axis with fewer than ``min_slices`` voxels (a single slice, a short stack): slices along it
      only (the in-plane images; a plane through it would be a few pixels wide). The shortest such axis
      when there are several;
    - voxels whose largest/smallest size ratio exceeds ``anisotropy`` (thick slices): slices along the
      coarsest axis only, i.e. the plane of the two finest axes;
    - near-isotropic voxels: all three axes ``(0, 1, 2)``.

    Examples::

        choose_plane_axes((1, 1, 1), (181, 217, 181))        # (0, 1, 2)
        choose_plane_axes((0.9, 0.9, 5), (256, 256, 30))     # (2,)
        choose_plane_axes((5, 1, 1), (24, 256, 256))         # (0,) sagittal thick slices
        choose_plane_axes((0.2, 0.2, 3), (1024, 1024, 1))    # (2,)
    """
    sp = np.asarray(spacing, dtype=np.float64)
    sh = tuple(int(n) for n in shape)
    if sp.shape != (3,) or len(sh) != 3:
        raise ValueError(f"spacing and shape need 3 values each, got {tuple(sp)} and {sh}")
    if not np.all(np.isfinite(sp) & (sp > 0)):
        raise GeometryError(f"voxel spacing must be positive mm to choose the planes, got {tuple(sp)}")
    if anisotropy < 1:
        raise ValueError(f"anisotropy must be >= 1, got {anisotropy}")
    short = [a for a in range(3) if sh[a] < min_slices]
    if short:
        return (min(short, key=lambda a: (sh[a], -sp[a])),)
    if sp.max() / sp.min() > anisotropy:
        return (int(np.argmax(sp)),)
    return (0, 1, 2)


class PlaneMeanInferer(Inferer):
    """Run :class:`~monai_sr.inference.SliceWiseInferer` along each of ``axes`` and average the results.

    Takes a channel-first volume ``(1, X, Y, Z)`` MetaTensor and a 2D network of ``scale`` ``(1, 1)``
    (a denoiser); returns the same shape and geometry (the inputs' affine). ``axes="auto"`` chooses per
    input from its affine's voxel size and its shape (:func:`choose_plane_axes` with ``anisotropy`` and
    ``min_slices``; a plain tensor without an affine is refused) and records the choice in
    :attr:`last_axes` and, when the input carries a notes list, in its notes. ``kwargs`` go to each
    ``SliceWiseInferer`` (``batch_size``, ``threads``, ``amp``, ``self_ensemble`` ...);
    ``single_plane_self_ensemble`` (``None``: as ``self_ensemble``) replaces ``self_ensemble`` when only one
    orientation runs: the three-orientation mean is already an average of three estimates, a single
    orientation can afford the flips at a similar cost. Holds one output volume per axis while it runs
    (no streaming).

    Examples::

        den = PlaneMeanInferer(axes=(0, 1, 2))(volume, dncnn)   # (1, 181, 217, 181) -> same
        den = PlaneMeanInferer(axes="auto")(thick, dncnn)        # 0.9 x 0.9 x 5 mm: axial slices only
    """

    def __init__(
        self,
        axes: Sequence[int] | str = (0, 1, 2),
        *,
        anisotropy: float = AUTO_ANISOTROPY,
        min_slices: int = AUTO_MIN_SLICES,
        single_plane_self_ensemble: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if isinstance(axes, str):
            if axes != "auto":
                raise ValueError(f"axes must be 'auto' or distinct spatial axes among 0, 1, 2, got {axes!r}")
            self.axes: tuple[int, ...] | str = "auto"
        else:
            axes = tuple(int(a) for a in axes)
            if not axes or len(set(axes)) != len(axes) or any(a not in (0, 1, 2) for a in axes):
                raise ValueError(f"axes must be distinct spatial axes among 0, 1, 2, got {axes}")
            self.axes = axes
        if anisotropy < 1 or min_slices < 1:
            raise ValueError(f"anisotropy must be >= 1 and min_slices >= 1, got {anisotropy}, {min_slices}")
        self.anisotropy, self.min_slices = float(anisotropy), int(min_slices)
        self.kwargs = kwargs
        self._inferers = {a: SliceWiseInferer(axis=a, **kwargs) for a in (0, 1, 2)}
        self._single = None
        if single_plane_self_ensemble is not None:  # the same inferers with another self-ensemble mode
            single = {**kwargs, "self_ensemble": single_plane_self_ensemble}
            self._single = {a: SliceWiseInferer(axis=a, **single) for a in (0, 1, 2)}
        self.last_axes: tuple[int, ...] | None = None

    @property
    def inferers(self) -> list[SliceWiseInferer]:
        """The slice-wise inferers of the fixed ``axes`` (all three for ``"auto"``)."""
        return [self._inferers[a] for a in (self.axes if self.axes != "auto" else (0, 1, 2))]

    def resolve_axes(self, inputs: Any) -> tuple[int, ...]:
        """The axes this input is denoised along (``axes`` itself unless ``"auto"``)."""
        if self.axes != "auto":
            return self.axes  # type: ignore[return-value]
        if not isinstance(inputs, MetaTensor):
            raise GeometryError("axes='auto' chooses the planes from the voxel size: the input needs an affine (a MetaTensor)")
        spacing = geometry.spacing_from_affine(np.asarray(inputs.affine, dtype=np.float64))
        return choose_plane_axes(spacing, inputs.shape[-3:], anisotropy=self.anisotropy, min_slices=self.min_slices)

    def volume_scale(self, network: nn.Module) -> tuple[int, int, int]:
        """``(1, 1, 1)``; ModelError for a network that changes the grid (averaging needs one grid)."""
        scales = {inf.volume_scale(network) for inf in self.inferers}
        if scales != {(1, 1, 1)}:
            raise ModelError(f"{type(self).__name__} averages denoised volumes: the network must keep the grid (scale 1), got {scales}")
        return (1, 1, 1)

    def __call__(  # type: ignore[override]
        self, inputs: MetaTensor, network: nn.Module, progress: Callable[[int, int], None] | None = None
    ) -> MetaTensor:
        self.volume_scale(network)
        axes = self.resolve_axes(inputs)
        self.last_axes = axes
        if self.axes == "auto" and isinstance(inputs, MetaTensor) and isinstance(inputs.meta.get(NOTES_KEY), list):
            spacing = geometry.spacing_from_affine(np.asarray(inputs.affine, dtype=np.float64))
            names = ", ".join(f"slices along axis {a}" for a in axes)
            inputs.meta[NOTES_KEY].append(
                f"denoised in {len(axes)} plane orientation(s): {names} (voxel {' x '.join(f'{s:.3g}' for s in spacing)} mm, "
                f"grid {' x '.join(str(int(n)) for n in inputs.shape[-3:])})"
            )
        total: MetaTensor | None = None
        n = len(axes)
        for i, a in enumerate(axes):
            step = None
            if progress is not None:
                step = lambda done, count, i=i: progress(i * count + done, n * count)  # noqa: E731
            inferers = self._single if (n == 1 and self._single is not None) else self._inferers
            out = inferers[a](inputs, network, progress=step)
            total = out if total is None else total + out.as_tensor()
        assert total is not None
        return total / n
