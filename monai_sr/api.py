"""The short API for research scripts: a bundle by name, and enhancement in memory or file to file.

* :func:`load_bundle` parses a bundle's ``configs/inference.json`` once (weights loaded with
  ``weights_only=True``) into a :class:`Bundle`: its network, inferer and per-volume ``adapt`` hook.
* :func:`enhance_image` runs the same steps as ``monai-sr enhance`` on a channel-first MetaTensor in
  memory (robust-max normalisation, the bundle's ``adapt`` hook, its inferer, the intensities back) and
  returns a MetaTensor on the field-of-view-rule grid; the notes go to ``meta["monai_sr_notes"]``.
* :func:`enhance` takes a path, a MetaTensor, a ``nibabel`` image or a SimpleITK image; without
  ``output`` it returns the same kind, enhanced, in memory; with ``output`` it writes (a path input goes
  through :func:`monai_sr.pipeline.enhance`: DICOM or NIfTI out, atomic) and returns what was written.

Coordinates: a MetaTensor is ``(C, X, Y, Z)`` with a RAS affine (voxel index -> mm); a nibabel image's
affine is RAS too; a SimpleITK image is LPS with ``(Z, Y, X)`` arrays, converted both ways by
:func:`monai_sr.geometry.lps_to_ras` / :func:`~monai_sr.geometry.ras_to_lps`.

Examples::

    import monai_sr
    sr = monai_sr.enhance("t1.nii.gz")                                  # MetaTensor, x2 in-plane
    img = monai_sr.enhance(nib.load("t1.nii.gz"), fast=True)            # nibabel in, nibabel out
    bundle = monai_sr.load_bundle("mri_denoise_dncnn")
    clean = monai_sr.enhance_image(volume, bundle)                      # a MetaTensor from LoadImage
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from monai_sr import geometry
from monai_sr.errors import InputError
from monai_sr.meta import INTENSITY_SCALE_KEY, NOTES_KEY
from monai_sr.transforms.intensity import RobustScale

__all__ = ["Bundle", "load_bundle", "enhance_image", "enhance"]


@dataclass
class Bundle:
    """A loaded bundle: what :func:`enhance_image` runs. ``adapt`` is None when the bundle has no
    per-volume hook; ``fast`` switches its fit off (:func:`monai_sr.bundles.without_fit`)."""

    name: str
    network: nn.Module
    inferer: Any
    adapt: Any = None
    derivation: str | None = None
    root: Path | None = None
    overrides: dict = field(default_factory=dict)


def load_bundle(name: str | os.PathLike = "mri_sr_unet", *, fast: bool = False, trust: bool = False, **overrides: Any) -> Bundle:
    """Load bundle ``name`` (a shipped bundle's name, a folder under ``$MONAI_SR_BUNDLES`` or a path).

    ``overrides`` set ids of its ``configs/inference.json`` (``self_ensemble="full"``,
    ``**{"internal_learning_fit#steps": 50}``), as ``monai-sr enhance --set`` does; ``fast`` drops the
    per-volume adaptation (``--fast``); ``trust`` accepts a bundle from elsewhere whose config reaches
    beyond monai, monai_sr and torch (see :func:`monai_sr.bundles.load_inference_parts`).
    """
    from monai_sr.bundles import load_inference_parts, without_fit

    parts = load_inference_parts(name, trust=trust, **overrides)
    return Bundle(
        name=Path(parts["bundle_root"]).name, network=parts["network"], inferer=parts["inferer"],
        adapt=without_fit(parts.get("adapt")) if fast else parts.get("adapt"), derivation=parts.get("derivation"),
        root=Path(parts["bundle_root"]), overrides=dict(overrides),
    )


def _as_bundle(bundle: Bundle | str | os.PathLike, fast: bool, overrides: dict) -> Bundle:
    if isinstance(bundle, Bundle):
        if overrides:
            raise ValueError("config overrides go to load_bundle; this bundle is loaded already")
        from monai_sr.bundles import without_fit

        return Bundle(**{**bundle.__dict__, "adapt": without_fit(bundle.adapt) if fast else bundle.adapt})
    return load_bundle(bundle, fast=fast, **overrides)


def enhance_image(
    image: MetaTensor, bundle: Bundle | str = "mri_sr_unet", *, fast: bool = False, uncertainty: bool = False,
    **overrides: Any,
) -> MetaTensor | tuple[MetaTensor, MetaTensor]:
    """Enhance a channel-first single-channel MetaTensor ``(1, X, Y, Z)`` (RAS affine) in memory.

    The steps are those of :func:`monai_sr.pipeline.enhance`: divide by the robust maximum, run the
    bundle's ``adapt`` hook (a guarded per-volume fit for ``mri_sr_unet``) and its inferer, multiply
    back. Returns a float32 MetaTensor on the inferer's grid (the field-of-view rule of DESIGN.md) whose
    meta carries the input's and ``monai_sr_notes`` (what the hook decided). The input is not changed.

    ``uncertainty=True`` (a slice-wise bundle): returns ``(result, spread)``, the result being the mean of
    the self-ensemble members' results (8 flips/transposes by default) and ``spread`` their standard
    deviation per voxel, in the image's units (:mod:`monai_sr.inference.uncertainty`).
    """
    if not isinstance(image, MetaTensor):
        raise InputError(f"expected a MetaTensor with an affine, got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] != 1:
        raise InputError(f"expected a single-channel volume (1, X, Y, Z), got shape {tuple(image.shape)}")
    data = image.as_tensor().float()
    if not torch.isfinite(data).all():
        raise InputError(f"the volume holds {int((~torch.isfinite(data)).sum())} NaN/Inf voxels")
    parts = _as_bundle(bundle, fast, overrides)
    if uncertainty:
        from monai_sr.inference.uncertainty import check_ensemble_inferer

        check_ensemble_inferer(parts.inferer, parts.name)  # before the per-volume fit
    norm = RobustScale()
    meta = {k: v for k, v in image.meta.items() if k not in (NOTES_KEY, "affine", "original_affine")}
    work = MetaTensor(norm(data), affine=image.affine.clone(), meta=meta)
    work.meta[NOTES_KEY] = []
    work.meta[INTENSITY_SCALE_KEY] = float(norm.scale)
    network = parts.adapt(work, parts.network) if parts.adapt is not None else parts.network
    if uncertainty:
        from monai_sr.inference.uncertainty import ensemble_mean_and_spread

        out, spread = ensemble_mean_and_spread(work, network.eval(), parts.inferer)
        spread = MetaTensor(norm.inverse(spread.as_tensor()), meta=spread.meta)
    else:
        out = parts.inferer(work, network.eval())
    result = MetaTensor(norm.inverse(out.as_tensor()), meta=out.meta)
    result.meta[NOTES_KEY] = list(work.meta[NOTES_KEY])
    result.meta.pop(INTENSITY_SCALE_KEY, None)  # the normalisation's, not the result's
    if uncertainty:
        from monai_sr.inference.uncertainty import zero_map_note

        result.meta[NOTES_KEY] += [n for n in [zero_map_note(float(spread.max()), float(result.abs().max()))] if n]
    return (result, spread) if uncertainty else result


def _from_nibabel(img: Any) -> MetaTensor:
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"expected a 3D NIfTI image, got shape {data.shape}")
    return MetaTensor(torch.from_numpy(data[None].copy()), affine=torch.as_tensor(img.affine, dtype=torch.float64))


def _from_sitk(img: Any) -> MetaTensor:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img).astype(np.float32)  # (Z, Y, X)
    if arr.ndim != 3:
        raise InputError(f"expected a 3D scalar SimpleITK image, got array shape {arr.shape}")
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=np.float64)[None, :]
    lps[:3, 3] = img.GetOrigin()
    affine = geometry.lps_to_ras(lps)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 1, 0))[None]), affine=torch.as_tensor(affine))


def _to_sitk(t: MetaTensor) -> Any:
    import SimpleITK as sitk

    lps = geometry.ras_to_lps(np.asarray(t.affine, dtype=np.float64))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(t[0].numpy().transpose(2, 1, 0)))
    img.SetSpacing([float(v) for v in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def enhance(
    input: Any, output: str | os.PathLike | None = None, *, bundle: Bundle | str = "mri_sr_unet", fast: bool = False,
    uncertainty: bool = False, overwrite: bool = False, **overrides: Any,
) -> Any:
    """Enhance ``input`` (a path, a MetaTensor, a nibabel image or a SimpleITK image) with ``bundle``.

    Without ``output``: the enhanced image, in memory, of the input's kind (a path gives a MetaTensor);
    with ``uncertainty=True`` a pair ``(image, spread)`` of that kind (:func:`enhance_image`).
    With ``output``: a path input is enhanced file to file by :func:`monai_sr.pipeline.enhance` (a DICOM
    series folder or NIfTI, atomic; with ``uncertainty=True`` the map beside it, as ``monai-sr enhance
    --uncertainty`` writes it) and its :class:`~monai_sr.pipeline.EnhanceResult` returned; an in-memory
    input is written as NIfTI at ``output`` (the spread beside it, named by
    :func:`~monai_sr.inference.uncertainty.uncertainty_path`) and the in-memory result returned.
    """
    if isinstance(input, (str, os.PathLike)):
        if output is not None:
            from monai_sr.pipeline import enhance as enhance_file

            parts = _as_bundle(bundle, fast, overrides)
            if uncertainty:
                from monai_sr.inference.uncertainty import check_ensemble_inferer

                check_ensemble_inferer(parts.inferer, parts.name)
            return enhance_file(input, output, network=parts.network, inferer=parts.inferer, adapt=parts.adapt,
                                derivation=parts.derivation, overwrite=overwrite, uncertainty=uncertainty)
        from monai_sr.pipeline import load_volume

        return enhance_image(load_volume(input), bundle, fast=fast, uncertainty=uncertainty, **overrides)
    kind = type(input).__module__.split(".")[0]
    if isinstance(input, MetaTensor):
        image, back = input, (lambda t: t)
    elif kind == "nibabel":
        import nibabel as nib

        image, back = _from_nibabel(input), (lambda t: nib.Nifti1Image(t[0].numpy(), np.asarray(t.affine, dtype=np.float64)))
    elif kind == "SimpleITK":
        image, back = _from_sitk(input), _to_sitk
    else:
        raise InputError(f"enhance takes a path, a MetaTensor, a nibabel or a SimpleITK image, not {type(input).__name__}")
    out = enhance_image(image, bundle, fast=fast, uncertainty=uncertainty, **overrides)
    result, spread = out if uncertainty else (out, None)
    if output is not None:
        from monai_sr.io.nifti import save_nifti

        if spread is None:
            save_nifti(result, output, overwrite=overwrite)
        else:  # as the pipeline does: both reserved first, the map published just before the result
            from monai_sr.inference.uncertainty import uncertainty_path
            from monai_sr.io.atomic import release_output, reserve_output

            map_path = uncertainty_path(output)
            reserve_output(output, overwrite=overwrite)
            try:
                reserve_output(map_path, overwrite=overwrite)
                save_nifti(spread, map_path, overwrite=overwrite)
                try:
                    save_nifti(result, output, overwrite=overwrite)
                except BaseException:
                    map_path.unlink(missing_ok=True)
                    raise
            finally:
                release_output(output)
                release_output(map_path)
    return (back(result), back(spread)) if uncertainty else back(result)
