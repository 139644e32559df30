"""The whole path of DESIGN.md as functions: read -> normalise -> infer -> back to units -> write.

The CLI, the bundles' ``run`` and Python scripts all call :func:`enhance`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import StrEnum, look_up_option

from monai_sr import __version__, geometry
from monai_sr.errors import InputError, MonaiSRError, OutputError
from monai_sr.inference.base import ScaleAwareInferer
from monai_sr.inference.slicewise import SliceWiseInferer
from monai_sr.inference.streaming import stream_planes
from monai_sr.io.atomic import check_not_inside, make_output_folder, release_output, release_output_on_error, reserve_output
from monai_sr.io.dicom.derived import estimate_window, source_positions
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.library_notes import with_library_notes
from monai_sr.io.nifti import NiftiSliceWriter, is_nifti_path
from monai_sr.io.volume_source import InputScan, check_modality, input_kind, open_volume, scan_input
from monai_sr.meta import FRAMES_KEY, HEADERS_KEY, INTENSITY_SCALE_KEY, NOTES_KEY
from monai_sr.transforms.intensity import RobustScale
from monai_sr.transforms.spacing import acquisition_geometry, sr_slice_thickness

__all__ = [
    "EnhanceResult",
    "OutputFormat",
    "load_volume",
    "enhance",
    "enhance_cases",
    "find_cases",
    "case_output",
    "output_kind",
    "preflight",
    "Preflight",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
#: ``adapt(image, network) -> network``: a per-volume step before inference (e.g. a self-supervised fit).
Adapt = Callable[[MetaTensor, torch.nn.Module], torch.nn.Module]
#: ``on_case(case, output, result, error, seconds)`` of :func:`enhance_cases`: one case ended.
CaseDone = Callable[[Path, Path, "EnhanceResult | None", "BaseException | None", float], None]


@dataclass
class EnhanceResult:
    """What :func:`enhance` did: shapes, spacings (mm, index order), wall time, notes, files written
    (``uncertainty_files``: those of the uncertainty map, when one was asked for)."""

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
    uncertainty_files: list[str] = field(default_factory=list)

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
    steps (see :class:`monai_sr.io.dicom.reader.DicomSeriesReader`); :func:`open_volume` reads in blocks."""
    return open_volume(path, series=series, resample=resample).load()


def output_kind(input_path: str | os.PathLike, output_path: str | os.PathLike) -> str:
    """``"nifti"`` or ``"dicom"`` for this input/output pair; OutputError for a pair that cannot work.

    A ``.nii``/``.nii.gz`` output is NIfTI; anything else is a DICOM series folder, which needs a DICOM
    input (the derived series copies the source's patient and study).
    """
    if is_nifti_path(output_path):
        return "nifti"
    if Path(output_path).suffix.lower() in (".dcm", ".nrrd", ".mha", ".mgz", ".gz", ".img", ".hdr"):
        raise OutputError("output must be a folder (DICOM series) or a .nii / .nii.gz path", path=output_path)
    if input_kind(input_path) != "dicom":
        raise OutputError(
            "a DICOM series can only be written from a DICOM input (it joins the source's study); "
            "give a .nii or .nii.gz output path",
            path=output_path,
        )
    return "dicom"


@dataclass(frozen=True)
class Preflight:
    """What :func:`preflight` found: the output kind (``"nifti"`` or ``"dicom"``) and the input's scan,
    which :func:`enhance` takes (``checked=``) instead of scanning the DICOM headers again."""

    kind: str
    scan: InputScan


@with_library_notes(lambda checked, notes: checked.scan.notes.extend(notes))  # pydicom's warnings: notes
def preflight(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    overwrite: bool = False,
    series: str | int | None = None,
    scan: InputScan | None = None,
    allow_modality: str | None = None,
    uncertainty: bool = False,
) -> Preflight:
    """Cheap checks before any model is loaded or voxel read: the input exists and has a readable kind
    (a DICOM input holds the series ``series`` names, or only one), the output kind fits the input, the
    output is free, not inside the input, and is reserved for this process (a second writer is refused as
    "in use"; the reservation ends when :func:`enhance` has written or failed, or the process ends; see
    :mod:`monai_sr.io.atomic`). ``scan``: this input's :func:`~monai_sr.io.volume_source.scan_input` made before.
    ``uncertainty``: the map's output beside it (:func:`~monai_sr.inference.uncertainty.uncertainty_path`)
    is checked and reserved the same way."""
    path = Path(input_path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    scan = scan_input(path, series=series, scanned=scan)  # DICOM: several series and no choice: refuse now
    kind = output_kind(input_path, output_path)
    check_modality(scan, allow_modality, output_kind=kind)  # a DICOM series that is not MR: refused by name
    check_not_inside(output_path, path)  # the input is never modified nor written into
    reserve_output(output_path, overwrite=overwrite)  # also proves the folder writable, before any model loads
    if uncertainty:
        from monai_sr.inference.uncertainty import uncertainty_path

        check_not_inside(uncertainty_path(output_path), path)
        try:
            reserve_output(uncertainty_path(output_path), overwrite=overwrite)
        except MonaiSRError:
            release_output(output_path)
            raise
    return Preflight(kind, scan)


@with_library_notes(lambda result, notes: result.notes.extend(notes))  # pydicom's and nibabel's warnings: notes
@release_output_on_error("output_path")
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
    adapt: Adapt | None = None,
    checked: Preflight | None = None,
    allow_modality: str | None = None,
    uncertainty: bool = False,
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
            (one Enhanced MR multi-frame object), see :class:`monai_sr.io.dicom.writer.DicomFormat`.
        series: DICOM input with several series: Series Instance UID or Series Number to read
            (``"301:TE=25"`` for one stack); without it several series are refused with their list.
        resample: interpolate a DICOM series with unequal slice steps or missing slices onto a regular
            grid along the normal (with a note) instead of refusing it.
        overwrite: replace an existing output (only after the new one is complete).
        progress: called as ``progress(stage, done, total)``.
        adapt: ``adapt(image, network) -> network``, called once with the whole normalised input
            (channel-first ``(1, X, Y, Z)`` MetaTensor, RAS affine, intensities divided by the robust
            maximum) before inference: a per-volume fit (internal learning) returns the fitted network.
            Strings the hook appends to ``image.meta["monai_sr_notes"]`` end up in the result's notes.
            Without it a :class:`~monai_sr.inference.ScaleAwareInferer` reads the input in blocks too.
        checked: the :func:`preflight` of this input and output made before (the CLI's): the input is
            not scanned again.
        allow_modality: a DICOM modality other than MR to accept (e.g. ``"CT"``; NIfTI output only); by
            default a series that is not MR is refused.
        uncertainty: also write the uncertainty map (the spread of the in-plane flip ensemble,
            :mod:`monai_sr.inference.uncertainty`; the result is then the ensemble's mean, and the volume is
            held whole) at :func:`~monai_sr.inference.uncertainty.uncertainty_path` ``(output_path)``: NIfTI
            beside a NIfTI output, a second derived DICOM series (SeriesDescription
            ``"SR uncertainty (ensemble spread)"``, Series Number of the result + 1000, same grid and frame
            of reference) beside a DICOM one. Both are reserved, written and cleaned like one output: the
            map is published just before the result, and removed again if the result then fails.

    Returns:
        :class:`EnhanceResult`. Nothing is left at ``output_path`` when an error is raised.
    """
    t0 = time.perf_counter()
    if uncertainty:
        from monai_sr.inference.uncertainty import uncertainty_path

        try:
            return _enhance(input_path, output_path, network=network, inferer=inferer, derivation=derivation,
                            series=series, resample=resample, dicom_format=dicom_format, overwrite=overwrite,
                            progress=progress, adapt=adapt, checked=checked, allow_modality=allow_modality,
                            uncertainty=True, t0=t0)
        except BaseException:
            release_output(uncertainty_path(output_path))
            raise
    return _enhance(input_path, output_path, network=network, inferer=inferer, derivation=derivation, series=series,
                    resample=resample, dicom_format=dicom_format, overwrite=overwrite, progress=progress, adapt=adapt,
                    checked=checked, allow_modality=allow_modality, uncertainty=False, t0=t0)


def _enhance(input_path, output_path, *, network, inferer, derivation, series, resample, dicom_format, overwrite,
             progress, adapt, checked, allow_modality, uncertainty, t0) -> EnhanceResult:
    """The body of :func:`enhance` (its arguments; ``t0`` its start time)."""
    checked = preflight(input_path, output_path, overwrite=overwrite, series=series, allow_modality=allow_modality,
                        scan=checked.scan if checked is not None else None, uncertainty=uncertainty)  # fail before any work
    kind = checked.kind
    if dicom_format is not None:
        from monai_sr.io.dicom.writer import as_dicom_format

        dicom_format = as_dicom_format(dicom_format)
        if kind != "dicom":
            raise OutputError("a DICOM format was chosen but the output is NIfTI", path=output_path)
    inferer = inferer or SliceWiseInferer()
    if uncertainty:
        from monai_sr.inference.uncertainty import check_ensemble_inferer

        check_ensemble_inferer(inferer)  # refused before any voxel is read
    source = open_volume(input_path, series=series, resample=resample, scan=checked.scan)  # headers read once, no voxels
    notes = list(source.meta.get(NOTES_KEY, []))
    scale = inferer.volume_scale(network)

    # Normalisation and display window from a sample of whole slices, so that a streaming run holds
    # neither the whole input nor a normalised copy of it (DESIGN.md: memory of a few slices + the model).
    sample = source.sample()
    norm = RobustScale()
    norm(torch.from_numpy(sample))
    window = estimate_window(sample)
    del sample
    step = (lambda d, n: progress("enhance slices" if scale == (1, 1, 1) else "super-resolve slices", d, n)) if progress else None
    spread = None
    if adapt is None and isinstance(inferer, ScaleAwareInferer) and not uncertainty:  # blocks read, inferred, written in turn
        stand_in = source.stand_in()
        result = inferer.output_geometry(stand_in, network.eval())  # affine and meta, no voxels
        read = lambda a, b: torch.from_numpy(source.read(a, b)) / norm.scale  # noqa: E731  (a new block)
        planes = stream_planes(inferer.stream(stand_in, network, progress=step, read=read), norm.inverse)
    else:
        image = source.load()
        image.as_tensor().div_(norm.scale)  # in place: no second whole copy
        image.meta[INTENSITY_SCALE_KEY] = float(norm.scale)
        if adapt is not None:
            image.meta[NOTES_KEY] = list(image.meta.get(NOTES_KEY, []))  # the hook may add its own notes
            network = adapt(image, network)
            notes = image.meta[NOTES_KEY]
            scale = inferer.volume_scale(network)  # the hook may rebuild the network for this input's factor
        if uncertainty:  # the same ensemble as monai_sr.enhance(..., uncertainty=True)
            from monai_sr.inference.uncertainty import ensemble_mean_and_spread

            mean, spread = ensemble_mean_and_spread(image, network.eval(), inferer)
            result = MetaTensor(norm.inverse(mean.as_tensor()), meta=mean.meta)
            spread = norm.inverse(spread.as_tensor())[0].numpy()
            planes = ((k, result[0, :, :, k].numpy()) for k in range(result.shape[3]))
        elif isinstance(inferer, ScaleAwareInferer):
            result = inferer.output_geometry(image, network.eval())
            planes = stream_planes(inferer.stream(image, network, progress=step), norm.inverse)
        else:
            predicted = inferer(image, network.eval(), progress=step)
            result = MetaTensor(norm.inverse(predicted.as_tensor()), meta=predicted.meta)
            planes = ((k, result[0, :, :, k].numpy()) for k in range(result.shape[3]))

    affine = np.asarray(result.affine, dtype=np.float64)
    if scale[2] != 1:
        notes.append(through_plane_note(source, affine, scale[2], result.shape[3]))
    map_path = None
    if spread is not None:
        from monai_sr.inference.uncertainty import uncertainty_path

        map_path = uncertainty_path(output_path)
    published = [False]  # the map's writer ended well (published): undone if the result then fails
    try:
        with ExitStack() as stack:
            if kind == "nifti":
                writer = stack.enter_context(
                    NiftiSliceWriter(output_path, affine=affine, shape=result.shape[1:], overwrite=overwrite))
                if spread is not None:
                    stack.push(lambda exc_type, *_: published.__setitem__(0, exc_type is None))
                    map_writer = stack.enter_context(
                        NiftiSliceWriter(map_path, affine=affine, shape=spread.shape, overwrite=overwrite))
            else:
                from monai_sr.io.dicom.derived import peak_of
                from monai_sr.io.dicom.writer import DerivedSeriesWriter

                name = type(network).__name__
                what = "enhancement (same grid)" if scale == (1, 1, 1) else f"{'x'.join(map(str, scale))} super-resolution"
                desc = derivation or f"{what} ({name}, {os.path.basename(str(input_path))}, monai_sr {__version__})"
                wstep = (lambda d, n: progress("write DICOM", d, n)) if progress else None
                headers = source_headers(source.meta)
                thickness = sr_slice_thickness(acquisition_geometry(source.stand_in()).slice_thickness, scale, slice_axis=2)
                # streamed slice by slice: per-slice rescale; the window from the input's percentiles, which the
                # normalisation and its inverse carry over to the result's units
                writer = stack.enter_context(DerivedSeriesWriter(
                    output_path,
                    affine=affine,
                    shape=result.shape[1:],
                    source_headers=headers,
                    derivation=desc,
                    window=window,
                    slice_thickness=thickness,
                    source_frames=source.meta.get(FRAMES_KEY),
                    dicom_format=dicom_format or "classic",
                    overwrite=overwrite,
                    progress=wstep,
                ))
                if spread is not None:
                    from monai_sr.inference.uncertainty import SERIES_DESCRIPTION

                    stack.push(lambda exc_type, *_: published.__setitem__(0, exc_type is None))
                    map_writer = stack.enter_context(DerivedSeriesWriter(
                        map_path, affine=affine, shape=spread.shape, source_headers=headers,
                        derivation=f"spread (standard deviation) of the 4 in-plane flips of the {desc}, in the result's units",
                        series_description=SERIES_DESCRIPTION,
                        series_number=int(writer.plan.common.SeriesNumber) + 1000,
                        window=estimate_window(spread), peak=peak_of(spread), slice_thickness=thickness,
                        source_frames=source.meta.get(FRAMES_KEY), dicom_format=dicom_format or "classic",
                        overwrite=overwrite,
                    ))
            for k, plane in planes:
                writer.write_slice(k, plane)
                if spread is not None:
                    map_writer.write_slice(k, spread[:, :, k])
    except BaseException:
        if published[0]:  # the map is out but the result is not: take the map back
            shutil.rmtree(map_path, ignore_errors=True) if Path(map_path).is_dir() else Path(map_path).unlink(missing_ok=True)
        raise
    files = [str(output_path)] if kind == "nifti" else [str(p) for p in writer.files]
    map_files = []
    if spread is not None:
        map_files = [str(map_path)] if kind == "nifti" else [str(p) for p in map_writer.files]
        notes.append(f"uncertainty map {map_path} ({len(map_files)} file(s)): the standard deviation of the 4 in-plane "
                     f"flips' results, in the result's units (max {float(spread.max()):.4g}); the result is their mean")
        from monai_sr.inference.uncertainty import zero_map_note

        notes += [n for n in [zero_map_note(float(spread.max()), float(result.abs().max()))] if n]
    return EnhanceResult(
        input=str(input_path),
        output=str(output_path),
        input_shape=tuple(source.shape),
        output_shape=tuple(result.shape[1:]),
        input_spacing=tuple(geometry.spacing_from_affine(source.affine).tolist()),
        output_spacing=tuple(geometry.spacing_from_affine(affine).tolist()),
        scale=scale,
        seconds=time.perf_counter() - t0,
        files=files,
        notes=list(notes),
        uncertainty_files=map_files,
    )


def through_plane_note(source, affine: np.ndarray, factor: int, n_out: int) -> str:
    """How through-plane SR by ``factor`` placed its ``n_out`` slices (output RAS ``affine``): on a regular
    grid by the field-of-view rule over the source's grid; for a DICOM source (a VolumeSource with its
    headers in meta) also how far its measured slice positions lie off that source grid, whose step is the
    mean from the first to the last slice."""
    n_in = source.shape[2]
    step_in = float(geometry.spacing_from_affine(source.affine)[2])
    step_out = float(geometry.spacing_from_affine(affine)[2])
    note = (f"through-plane x{factor}: the {n_out} output slices lie on a regular grid every {step_out:.4g} mm "
            f"along the slice normal, output slice j at source slice (j + 0.5) / {factor} - 0.5 (field of view kept) "
            f"of the source's {n_in} slices every {step_in:.4g} mm")
    headers = source.meta.get(HEADERS_KEY) or []
    src = source_positions(headers) if len(headers) == n_in else None
    if src is not None:
        off = np.abs(geometry.offsets_from_grid(source.affine, src))
        note += (f"; that source grid runs from the first to the last slice position (ImagePositionPatient), the "
                 f"source slices lie up to {off.max():.3f} mm off it")
    return note


class OutputFormat(StrEnum):
    """Output of :func:`enhance_cases`: ``auto`` (DICOM for a DICOM case, NIfTI for a NIfTI one),
    ``dicom`` (a derived series; DICOM cases only) or ``nifti``."""

    AUTO = "auto"
    DICOM = "dicom"
    NIFTI = "nifti"


def _is_dicom_file(path: Path) -> bool:
    return path.is_file() and input_kind(path) == "dicom"


def find_cases(path: str | os.PathLike) -> list[Path]:
    """The cases under ``path``, sorted by name.

    ``path`` is one case (a ``.nii``/``.nii.gz`` file, a DICOM file or DICOMDIR, or a folder with DICOM
    files directly in it: one series folder) or a folder of cases: every NIfTI file directly in it and
    every sub-folder that holds DICOM files (at any depth) is a case. Hidden names are skipped.
    Raises :class:`InputError` when there is nothing to read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if path.is_file():
        if input_kind(path) is not None:
            return [path]
        raise InputError("expected a DICOM series folder or a .nii / .nii.gz file", path=path)
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(_is_dicom_file(p) for p in children):
        return [path]
    cases = [p for p in children if p.is_file() and input_kind(p) == "nifti"]
    for sub in (p for p in children if p.is_dir()):
        if any(_is_dicom_file(Path(root) / f) for root, _, files in os.walk(sub) for f in files if not f.startswith(".")):
            cases.append(sub)
    if not cases:
        raise InputError("no cases found: expected .nii / .nii.gz files or DICOM series folders in it", path=path)
    return sorted(cases, key=lambda p: p.name)


def case_output(case: Path, output_dir: Path, output_format: str) -> Path:
    """Where :func:`enhance_cases` writes ``case``: ``output_dir/<name>.nii.gz`` or ``output_dir/<name>/``
    (a DICOM series folder), ``<name>`` the file name without ``.nii``/``.nii.gz`` or the folder name."""
    fmt = look_up_option(output_format, OutputFormat)
    name = case.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    dicom_case = input_kind(case) != "nifti"
    if fmt == OutputFormat.DICOM and not dicom_case:
        raise OutputError("a DICOM series can only be written from a DICOM case; use output_format 'nifti' or 'auto'", path=case)
    if fmt == OutputFormat.NIFTI or (fmt == OutputFormat.AUTO and not dicom_case):
        return output_dir / f"{name}.nii.gz"
    return output_dir / name


def enhance_cases(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    network: torch.nn.Module,
    inferer: Inferer | None = None,
    adapt: Adapt | None = None,
    output_format: str = "auto",
    derivation: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    dicom_format: str | None = None,
    cases: list[Path] | None = None,
    on_case: CaseDone | None = None,
) -> list[EnhanceResult]:
    """:func:`enhance` every case of :func:`find_cases` ``(input_path)`` into the folder ``output_path``.

    Each case's output path is :func:`case_output`; all of them are checked (kind, free) before the
    first case is read, so a batch that cannot finish fails before any work. A case that fails later
    leaves nothing of itself behind (each output is written atomically); the other cases still run, and
    an :class:`OutputError` listing the failed cases is raised at the end.

    ``cases``: run these cases of ``input_path`` instead of all of :func:`find_cases` (a resumed or
    split cohort, :mod:`monai_sr.cohort`). ``on_case(case, output, result, error, seconds)``: called as
    each case ends (``result`` or the ``error``); with it, a case refused by its own check or failing
    with any exception is reported there and skipped, nothing is raised for it at the end.

    Returns:
        one :class:`EnhanceResult` per case, in :func:`find_cases` order.
    """
    cases = find_cases(input_path) if cases is None else [Path(c) for c in cases]
    out_dir = Path(output_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("output must be a folder when running cases", path=out_dir)
    plan = [(case, case_output(case, out_dir, output_format)) for case in cases]
    if len({dst for _, dst in plan}) != len(plan):
        raise OutputError("two cases have the same name; their outputs would collide", path=input_path)
    check_not_inside(out_dir, input_path, replaced=False)  # the cases' outputs go into it, it is not replaced
    created = make_output_folder(out_dir)
    catch = Exception if on_case else MonaiSRError  # with on_case, one case never stops the others
    try:
        for case, dst in list(plan):
            try:
                preflight(case, dst, overwrite=overwrite)
            except catch as exc:
                if on_case is None:
                    raise
                plan.remove((case, dst))
                on_case(case, dst, None, exc, 0.0)
    except MonaiSRError:
        for _, dst in plan:
            release_output(dst)
        if created:
            out_dir.rmdir()
        raise
    results, failed = [], []
    for case, dst in plan:
        t0 = time.perf_counter()
        try:
            results.append(
                enhance(case, dst, network=network, inferer=inferer, adapt=adapt, derivation=derivation,
                        overwrite=overwrite, progress=progress, dicom_format=dicom_format)
            )
        except catch as exc:
            if on_case is not None:
                on_case(case, dst, None, exc, time.perf_counter() - t0)
                continue
            logger.error("%s", exc)
            failed.append(f"{case.name}: {exc}")
        else:
            if on_case is not None:
                on_case(case, dst, results[-1], None, time.perf_counter() - t0)
    if failed:
        raise OutputError(f"{len(failed)} of {len(plan)} cases failed: " + "; ".join(failed), path=input_path)
    return results
