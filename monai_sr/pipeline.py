"""The whole path of DESIGN.md as functions: read -> normalise -> infer -> back to units -> write.

The CLI, the bundles' ``run`` and Python scripts all call :func:`enhance`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer

from monai_sr import __version__, geometry
from monai_sr.errors import InputError, OutputError
from monai_sr.inference.base import ScaleAwareInferer
from monai_sr.inference.slicewise import SliceWiseInferer
from monai_sr.inference.streaming import NiftiSliceWriter, stream_planes
from monai_sr.io.atomic import check_output_free
from monai_sr.io.dicom_reader import NOTES_KEY, load_dicom_series, source_headers
from monai_sr.io.dicom_series import find_series, is_dicom_input, select_series
from monai_sr.io.nifti import is_nifti_path, load_nifti
from monai_sr.transforms.intensity import RobustScale
from monai_sr.transforms.spacing import acquisition_geometry, sr_slice_thickness

__all__ = ["EnhanceResult", "load_volume", "enhance", "output_kind", "preflight"]

Progress = Callable[[str, int, int], None]


@dataclass
class EnhanceResult:
    """What :func:`enhance` did: shapes, spacings (mm, index order), wall time, notes, files written."""

    input: str
    output: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_spacing: tuple[float, ...]
    output_spacing: tuple[float, ...]
    scale: tuple[int, ...]
    seconds: float
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines."""
        fmt = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
        lines = [
            f"input   {self.input}",
            f"        {fmt(self.input_shape)} voxels, {fmt(np.round(self.input_spacing, 4))} mm",
            f"output  {self.output} ({len(self.files)} file(s))",
            f"        {fmt(self.output_shape)} voxels, {fmt(np.round(self.output_spacing, 4))} mm, scale {fmt(self.scale)}",
            f"time    {self.seconds:.1f} s",
        ]
        lines += [f"note    {n}" for n in self.notes]
        return "\n".join(lines)


def load_volume(path: str | os.PathLike, *, series: str | int | None = None, resample: bool = False) -> MetaTensor:
    """Read DICOM (a folder, DICOMDIR or DICOM file) or a ``.nii``/``.nii.gz`` file as a channel-first RAS
    MetaTensor. ``series`` picks one of several DICOM series, ``resample`` interpolates unequal slice
    steps (see :class:`monai_sr.io.dicom_reader.DicomSeriesReader`)."""
    path = Path(path)
    if not is_nifti_path(path) and is_dicom_input(path):
        return load_dicom_series(path, series=series, resample=resample)
    if is_nifti_path(path):
        return load_nifti(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    raise InputError("expected a DICOM series folder or a .nii / .nii.gz file", path=path)


def output_kind(input_path: str | os.PathLike, output_path: str | os.PathLike) -> str:
    """``"nifti"`` or ``"dicom"`` for this input/output pair; OutputError for a pair that cannot work.

    A ``.nii``/``.nii.gz`` output is NIfTI; anything else is a DICOM series folder, which needs a DICOM
    input (the derived series copies the source's patient and study).
    """
    if is_nifti_path(output_path):
        return "nifti"
    if Path(output_path).suffix.lower() in (".dcm", ".nrrd", ".mha", ".mgz", ".gz", ".img", ".hdr"):
        raise OutputError("output must be a folder (DICOM series) or a .nii / .nii.gz path", path=output_path)
    if is_nifti_path(input_path) or not is_dicom_input(input_path):
        raise OutputError(
            "a DICOM series can only be written from a DICOM input (it joins the source's study); "
            "give a .nii or .nii.gz output path",
            path=output_path,
        )
    return "dicom"


def preflight(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    series: str | int | None = None,
) -> str:
    """Cheap checks before any model is loaded or voxel read: the input exists and has a readable kind,
    the output kind fits the input, the output is free. Returns the output kind."""
    path = Path(input_path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if not (is_nifti_path(path) or is_dicom_input(path)):
        raise InputError("expected a DICOM series folder or a .nii / .nii.gz file", path=path)
    if not is_nifti_path(path):
        select_series(find_series(path)[0], series, path=path)  # several series and no choice: refuse now
    kind = output_kind(input_path, output_path)
    if Path(output_path).resolve() == path.resolve():
        raise OutputError("output is the input; the input is never modified", path=output_path)
    check_output_free(output_path, overwrite=overwrite)
    return kind


def enhance(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    network: torch.nn.Module,
    inferer: Inferer | None = None,
    derivation: str | None = None,
    series: str | int | None = None,
    resample: bool = False,
    dicom_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> EnhanceResult:
    """Super-resolve one volume and write it.

    Args:
        input_path: DICOM series folder or NIfTI file (never modified).
        output_path: a new folder (DICOM series; DICOM input only) or a ``.nii``/``.nii.gz`` path.
        network: a 2D SR network with a ``scale`` attribute, in eval mode, weights loaded.
        inferer: how to run it over the volume (default: slice-wise along axis 2, the slice axis of a
            DICOM series). A :class:`~monai_sr.inference.ScaleAwareInferer` streams: each finished slice
            goes to the writer, so memory stays at a few slices plus the model; another MONAI ``Inferer``
            with ``volume_scale`` returns the whole volume first.
        derivation: Derivation Description for DICOM output; a default names the network and scale.
        dicom_format: DICOM output only: ``"classic"`` (one file per slice, the default) or ``"enhanced"``
            (one Enhanced MR multi-frame object), see :class:`monai_sr.io.dicom_writer.DicomFormat`.
        series: DICOM input with several series: Series Instance UID or Series Number to read
            (``"301:TE=25"`` for one stack); without it several series are refused with their list.
        resample: interpolate a DICOM series with unequal slice steps or missing slices onto a regular
            grid along the normal (with a note) instead of refusing it.
        overwrite: replace an existing output (only after the new one is complete).
        progress: called as ``progress(stage, done, total)``.

    Returns:
        :class:`EnhanceResult`. Nothing is left at ``output_path`` when an error is raised.
    """
    t0 = time.perf_counter()
    kind = preflight(input_path, output_path, overwrite=overwrite, series=series)  # fail before any work
    if dicom_format is not None:
        from monai_sr.io.dicom_writer import as_dicom_format

        dicom_format = as_dicom_format(dicom_format)
        if kind != "dicom":
            raise OutputError("a DICOM format was chosen but the output is NIfTI", path=output_path)
    inferer = inferer or SliceWiseInferer()
    image = load_volume(input_path, series=series, resample=resample)
    scale = inferer.volume_scale(network)

    norm = RobustScale()
    normalised = MetaTensor(norm(image.as_tensor()), meta=image.meta)
    step = (lambda d, n: progress("super-resolve slices", d, n)) if progress else None
    if isinstance(inferer, ScaleAwareInferer):  # finished slices go to the writer as they are made
        result = inferer.output_geometry(normalised, network.eval())  # affine and meta, no voxels
        planes = stream_planes(inferer.stream(normalised, network, progress=step), norm.inverse)
    else:
        predicted = inferer(normalised, network.eval(), progress=step)
        result = MetaTensor(norm.inverse(predicted.as_tensor()), meta=predicted.meta)
        planes = ((k, result[0, :, :, k].numpy()) for k in range(result.shape[3]))

    affine = np.asarray(result.affine, dtype=np.float64)
    if kind == "nifti":
        with NiftiSliceWriter(output_path, affine=affine, shape=result.shape[1:], overwrite=overwrite) as writer:
            for k, plane in planes:
                writer.write_slice(k, plane)
        files = [str(output_path)]
    else:
        from monai_sr.io.dicom_reader import FRAMES_KEY
        from monai_sr.io.dicom_writer import DerivedSeriesWriter, estimate_window

        name = type(network).__name__
        desc = derivation or (
            f"{'x'.join(map(str, scale))} super-resolution ({name}, {os.path.basename(str(input_path))}, "
            f"monai_sr {__version__})"
        )
        wstep = (lambda d, n: progress("write DICOM", d, n)) if progress else None
        headers = source_headers(image.meta)
        thickness = sr_slice_thickness(acquisition_geometry(image).slice_thickness, scale, slice_axis=2)
        # streamed slice by slice: per-slice rescale; the window from the input's percentiles, which the
        # normalisation and its inverse carry over to the result's units
        with DerivedSeriesWriter(
            output_path,
            affine=affine,
            shape=result.shape[1:],
            source_headers=headers,
            derivation=desc,
            window=estimate_window(image[0].numpy()),
            slice_thickness=thickness,
            source_frames=image.meta.get(FRAMES_KEY),
            dicom_format=dicom_format or "classic",
            overwrite=overwrite,
            progress=wstep,
        ) as writer:
            for k, plane in planes:
                writer.write_slice(k, plane)
        files = [str(p) for p in writer.files]
    return EnhanceResult(
        input=str(input_path),
        output=str(output_path),
        input_shape=tuple(image.shape[1:]),
        output_shape=tuple(result.shape[1:]),
        input_spacing=tuple(geometry.spacing_from_affine(np.asarray(image.affine)).tolist()),
        output_spacing=tuple(geometry.spacing_from_affine(affine).tolist()),
        scale=scale,
        seconds=time.perf_counter() - t0,
        files=files,
        notes=list(image.meta.get(NOTES_KEY, [])),
    )
