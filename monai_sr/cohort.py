"""Cohorts: ``monai-sr enhance CASES_FOLDER OUT_FOLDER`` over every case of a folder, resumable.

The cases and their outputs are the library's (:func:`~monai_sr.pipeline.find_cases`,
:func:`~monai_sr.pipeline.case_output`, :func:`~monai_sr.pipeline.enhance_cases`); this module adds the
manifest ``OUT_FOLDER/manifest.csv`` and the split across ranks when ``torchrun`` launched the command.
:func:`enhance_cohort` is the library entry (the bundles' ``configs/multi_gpu_inference.json`` call it);
:func:`run_cohort` is the CLI's.

Cases from a PACS: in place of a folder, a DICOMweb query ``dicomweb+http(s)://HOST:PORT/ROOT?KEY=VALUE...``
(:mod:`monai_sr.io.dicomweb`): rank 0 searches it (QIDO-RS; one case per series, named by its Series
Instance UID, its digest from the SOP Instance UIDs the server lists); each rank fetches its cases one at a
time (WADO-RS) into ``OUT_FOLDER/.<uid>.dicomweb.monai-sr-<pid>.partial/<uid>/``, enhances the case and
removes the fetched files (a killed rank's folder is removed by the next run writing into OUT_FOLDER, as
any partial of a dead owner). With ``send`` (``--send``) each DICOM output is sent (C-STORE or STOW-RS,
:mod:`monai_sr.io.pacs`) before its row is written; a failed send makes the case ``failed`` (its output
stays, and is made and sent again with ``--retry-failed``).

Manifest: one row per case run (``case, input_digest, output, status, seconds, notes, error``), appended as
each case ends (under an exclusive ``flock``, one ``write`` per row, so ranks can share the file) and never
rewritten; the last row of a case is its state. A rerun skips a case whose last row is ``done`` with the
same input digest and whose output is present; a ``failed`` case with the same digest is run again only
with ``--retry-failed`` (a changed input is always run again). An output present in a folder that holds a
manifest, with no row of its case (or after a failed row), was published by a run killed before it wrote
the row: it is made again and replaces that one once complete. Any other output in the way (from another
input, or in a folder that is not a cohort's) is replaced only with ``--overwrite``.

Input digest (:func:`case_digest`): sha256 over the relative name, size and modification time (ns) of
every file of the case. It costs one ``stat`` per file, nothing read: a cohort of thousands of studies is
planned in seconds, where hashing the bytes (or even the DICOM headers, one open and parse per file)
would read the cohort once more before any work. It changes whenever a file is added, removed, renamed,
rewritten or replaced; a copy that does not keep modification times (``cp`` without ``-p``) counts as a
new input and is run again — the safe side. Moving the whole cases folder keeps it.

Ranks: under ``torchrun`` (``WORLD_SIZE`` > 1) rank 0 plans (reads the manifest, decides what to run) and
broadcasts the list; the cases to run are split with MONAI's ``DistributedSampler(even_divisible=False,
shuffle=False)`` over a gloo process group (NCCL with one GPU per rank where CUDA is available); each rank
uses cores / ranks-on-this-node threads (``$MONAI_SR_THREADS_PER_RANK`` overrides), writes its
own cases (atomically, as :func:`~monai_sr.pipeline.enhance` always does) and rows; rank 0 prints one
summary. Every rank exits 1 when a case failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from monai_sr.io.dicomweb import DicomwebQuery

__all__ = ["MANIFEST", "FIELDS", "CohortReport", "case_digest", "cohort_cases", "read_manifest", "append_row",
           "enhance_cohort", "rank_device", "run_cohort", "threads_per_rank", "THREADS_ENV"]

MANIFEST = "manifest.csv"
FIELDS = ("case", "input_digest", "output", "status", "seconds", "notes", "error")


def case_digest(case: str | os.PathLike) -> str:
    """``stat:`` + sha256 over (relative name, size, mtime in ns) of every file of ``case`` (a file, or
    every file under a folder, sorted); reads no file. See the module's docstring for why."""
    case = Path(case)
    files = [case] if case.is_file() else sorted(p for p in case.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        name = f.name if f == case else f.relative_to(case).as_posix()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "stat:" + h.hexdigest()


def cohort_cases(
    input_path: str | os.PathLike, *, series: str | int | None = None, output: str | os.PathLike | None = None
) -> list[Path] | DicomwebQuery | None:
    """The cases when ``input_path`` is a folder of cases, else None (one case: a file, a folder that is
    itself one DICOM series — DICOM files in it, or in one sub-folder only —, a folder with nothing to
    read, whose error the one-case path gives, any input with ``series`` chosen, or any input whose
    ``output`` is one NIfTI file: then a folder of several series is refused with their list, as before).
    A DICOMweb query (``dicomweb+http(s)://...``, :mod:`monai_sr.io.dicomweb`) is always a cohort: its
    parsed :class:`~monai_sr.io.dicomweb.DicomwebQuery` is returned (``series`` and a NIfTI ``output``
    refused)."""
    from monai_sr.errors import InputError
    from monai_sr.io.dicomweb import is_query, parse_query
    from monai_sr.io.nifti import is_nifti_path
    from monai_sr.pipeline import find_cases

    if is_query(input_path):
        if series is not None:
            raise InputError("--series does not apply to a DICOMweb query; put SeriesInstanceUID=... in the query",
                             path=input_path)
        if output is not None and is_nifti_path(output):
            raise InputError("a DICOMweb query is a cohort: OUTPUT must be a folder (--output-format nifti for "
                             ".nii.gz outputs)", path=output)
        return parse_query(input_path)
    path = Path(input_path)
    cases = None
    if series is None and path.is_dir() and not (output is not None and is_nifti_path(output)):
        try:
            cases = find_cases(path)
        except InputError:
            cases = None
    if cases == [path] or (cases is not None and len(cases) == 1 and cases[0].is_dir()):
        cases = None
    if cases is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would write the one output
        raise InputError("one case, launched on several ranks (torchrun); run it without torchrun, or give a "
                         "folder of cases", path=input_path)
    return cases


def read_manifest(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """The last row of each case in the manifest at ``path`` ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as f:
        return {row["case"]: row for row in csv.DictReader(f) if row.get("case")}


def append_row(path: str | os.PathLike, row: dict[str, object]) -> None:
    """Append one row (the header first when the file is new or empty), one ``write`` under an exclusive
    lock, flushed to disk: concurrent ranks and a kill at any moment leave whole rows only."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_one_line(row.get(k, "")) for k in FIELDS])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX: one process at a time
            pass
        header = "" if os.fstat(fd).st_size else ",".join(FIELDS) + "\n"
        os.write(fd, (header + buf.getvalue()).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock


def _one_line(value: object) -> str:
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


@dataclass
class _Source:
    """Where the cases come from: a folder (``root``, its ``cases``) or a DICOMweb ``query``."""

    label: str
    root: Path | None = None
    cases: list[Path] | None = None
    query: object | None = None  # monai_sr.io.dicomweb.DicomwebQuery


@dataclass
class _Plan:
    todo: list[str]  # case names to run, in find_cases (or Series Instance UID) order
    total: int  # cases in the cohort
    skipped: int  # done before, same input, output present
    not_retried: list[tuple[str, str]]  # (case, error) failed before, same input, no --retry-failed
    digests: dict[str, str]
    ours: set[str]  # cases to run whose output is present from a run killed between publishing and its row
    refs: dict = field(default_factory=dict)  # DICOMweb: case name -> monai_sr.io.dicomweb.SeriesRef
    left_out: int = 0  # DICOMweb: series the query found that monai_sr derived (outputs sent back before)


@dataclass
class CohortReport:
    """What :func:`enhance_cohort` did, for the whole cohort (every rank gets the same report)."""

    source: str
    output: Path
    total: int
    done: int  # done now
    skipped: int  # done before
    failed: list[tuple[str, str]]  # (case, one-line cause): failed now, or before and not retried
    not_retried: int
    left_out: int = 0  # DICOMweb: series found that monai_sr derived, not cases
    world: int = 1
    threads: int = 1
    rank: int = 0

    def summary(self) -> str:
        """The two lines rank 0 prints: counts (and ranks x threads under torchrun), the manifest."""
        ranks = f", on {self.world} ranks x {self.threads} thread(s)" if self.world > 1 else ""
        ours = f" ({self.left_out} series derived by monai_sr left out)" if self.left_out else ""
        return (f"cohort  {self.source} -> {self.output}: {self.total} case(s){ours}: {self.done} done now, "
                f"{self.skipped} done before (skipped), {len(self.failed)} failed{ranks}\n"
                f"manifest {self.output / MANIFEST}")

    def failure_text(self) -> str:
        """The failed cases one per line, then ``monai-sr: error: N of M cases failed: ...``; '' if none."""
        if not self.failed:
            return ""
        hint = f"; {self.not_retried} failed before, not retried (--retry-failed)" if self.not_retried else ""
        return "\n".join([*(f"failed  {name}: {_one_line(cause)}" for name, cause in self.failed),
                          f"monai-sr: error: {len(self.failed)} of {self.total} cases failed: "
                          f"{', '.join(n for n, _ in self.failed)}{hint}"])

    def raise_for_failures(self) -> None:
        """:class:`~monai_sr.errors.OutputError` listing the failed cases, if any (a bundle's run ends in it)."""
        from monai_sr.errors import OutputError

        if self.failed:
            raise OutputError(f"{len(self.failed)} of {self.total} cases failed: "
                              + "; ".join(f"{n}: {_one_line(c)}" for n, c in self.failed), path=self.output)


def _dicomweb_output(name: str, out_dir: Path, output_format: str) -> Path:
    """:func:`~monai_sr.pipeline.case_output` of a DICOMweb case (a DICOM series named ``name``)."""
    from monai.utils import look_up_option

    from monai_sr.pipeline import OutputFormat

    fmt = look_up_option(output_format, OutputFormat)
    return out_dir / (f"{name}.nii.gz" if fmt == OutputFormat.NIFTI else name)


def _plan(source: _Source, out_dir: Path, output_format: str, retry_failed: bool, *, send: bool,
          timeout: float) -> _Plan:
    """Rank 0: the cases, their digests and outputs, checked against the manifest (see the module)."""
    from monai_sr.errors import OutputError
    from monai_sr.pipeline import case_output

    if source.query is not None:
        from monai_sr.io.dicomweb import search_series

        found = search_series(source.query, timeout=timeout)
        refs = {ref.series_uid: ref for ref in found if not ref.ours}  # not our outputs sent back before
        if not refs:
            from monai_sr.errors import InputError

            raise InputError("no series matches the query (QIDO-RS found none" + (
                f"; {len(found)} derived by monai_sr left out)" if found else ")"), path=source.label)
        entries = [(name, ref.digest, _dicomweb_output(name, out_dir, output_format)) for name, ref in refs.items()]
    else:
        refs = {}
        entries = [(c.name, case_digest(c), case_output(c, out_dir, output_format)) for c in source.cases]
    if send and any(out.name.endswith(".nii.gz") for _, _, out in entries):
        nifti = next(name for name, _, out in entries if out.name.endswith(".nii.gz"))
        raise OutputError(f"--send needs DICOM outputs, and case {nifti} gives NIfTI; send DICOM cases only "
                          "(--output-format dicom)", path=out_dir)
    managed = (out_dir / MANIFEST).is_file()
    rows = read_manifest(out_dir / MANIFEST)
    plan = _Plan([], len(entries), 0, [], {}, set(), refs, len(found) - len(refs) if source.query is not None else 0)
    for name, digest, output in entries:
        plan.digests[name] = digest
        row = rows.get(name)
        same = row is not None and row["input_digest"] == digest
        if same and row["status"] == "done" and row["output"] == output.name and output.exists():
            plan.skipped += 1
        elif same and row["status"] == "failed" and not retry_failed:
            plan.not_retried.append((name, row["error"]))
        else:
            plan.todo.append(name)
            # An output (published whole, atomically) in a cohort folder with no row of its own, or after a
            # failed row: a run was killed between publishing it and writing its row (or its sending
            # failed); it is ours to replace. An output made from another input needs --overwrite.
            if managed and output.exists() and (row is None or row["status"] == "failed"):
                plan.ours.add(name)
    return plan


class _CaseProgress:
    """The CLI's progress bars, new ones for each case."""

    def __init__(self, enabled: bool) -> None:
        from monai_sr.cli import _Progress

        self._make = lambda: _Progress(enabled)
        self.bars = self._make()

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.bars(stage, done, total)

    def next_case(self) -> None:
        self.bars.close()
        self.bars = self._make()


def rank_device() -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when CUDA is available (one GPU per rank, as
    ``torchrun --nproc_per_node=<GPUs>`` starts them), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}")
    return torch.device("cpu")


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group). Under torchrun (``WORLD_SIZE``
    > 1) a group not started yet (a bundle's ``initialize`` may have) is started: NCCL with this rank's
    GPU as the current device when CUDA is available, else gloo; threads: :func:`threads_per_rank`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch
    import torch.distributed as dist

    started = False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(rank_device())  # a bare "cuda" device (the bundles' default) is this GPU
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        started = True
    torch.set_num_threads(threads_per_rank())
    return dist.get_rank(), world, started


THREADS_ENV = "MONAI_SR_THREADS_PER_RANK"


def threads_per_rank() -> int:
    """Threads of each rank under torchrun: ``$MONAI_SR_THREADS_PER_RANK`` when set (a positive integer),
    else the cores this process may use (its CPU affinity: a SLURM or cgroup allocation counts) divided by
    the ranks on this node (``LOCAL_WORLD_SIZE``), at least 1."""
    from monai_sr.errors import InputError

    given = os.environ.get(THREADS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise InputError(f"${THREADS_ENV} must be a positive integer, not {given!r}")
        return int(given)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // local)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _source(source: str | os.PathLike) -> _Source:
    from monai_sr.io.dicomweb import is_query, parse_query
    from monai_sr.pipeline import find_cases

    if is_query(source):
        return _Source(label=str(source), query=parse_query(str(source)))
    return _Source(label=str(source), root=Path(source), cases=find_cases(source))


def enhance_cohort(
    source: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    network,
    inferer=None,
    adapt=None,
    derivation: str | None = None,
    output_format: str = "auto",
    dicom_format: str | None = None,
    overwrite: bool = False,
    retry_failed: bool = False,
    send: str | None = None,
    calling_aet: str = "MONAI_SR",
    timeout: float = 30.0,
    progress: bool = False,
) -> CohortReport:
    """Run a cohort into the folder ``output_path``, with its manifest, resume and (under torchrun) the
    split across ranks; what ``monai-sr enhance CASES OUT`` and the bundles' ``multi_gpu_inference.json``
    run.

    Args:
        source: a folder of cases (:func:`~monai_sr.pipeline.find_cases`) or a DICOMweb query
            ``dicomweb+http(s)://HOST:PORT/ROOT?KEY=VALUE...`` (:mod:`monai_sr.io.dicomweb`).
        network, inferer, adapt, derivation: as :func:`~monai_sr.pipeline.enhance` takes them.
        output_format: ``auto``, ``dicom`` or ``nifti`` (:func:`~monai_sr.pipeline.case_output`).
        overwrite: replace outputs in the way that are not this cohort's own.
        retry_failed: run again the cases whose last manifest row is ``failed`` (same input).
        send: after each case, send its DICOM output to this URL (``dicom://AET@HOST:PORT`` or the
            STOW-RS service root, :mod:`monai_sr.io.pacs`); a failed send makes the case ``failed``.
        calling_aet, timeout: for the DICOMweb search / fetch and the sending.
        progress: progress bars on stderr.

    Returns:
        :class:`CohortReport` (the same on every rank); one that lists failures has not raised: call
        ``raise_for_failures()``. Errors before any case runs (an unreachable PACS, an output in the
        way) raise :class:`~monai_sr.errors.MonaiSRError` on every rank.
    """
    parts = dict(network=network, inferer=inferer, adapt=adapt, derivation=derivation)
    return _run(_source(source), Path(output_path), lambda: parts, output_format=output_format,
                dicom_format=dicom_format, overwrite=overwrite, retry_failed=retry_failed, send=send,
                calling_aet=calling_aet, timeout=timeout, progress=progress)


def run_cohort(args, cases) -> int:
    """``monai-sr enhance CASES_FOLDER|DICOMWEB_QUERY OUT_FOLDER`` (``args`` from the CLI's parser,
    ``cases`` from :func:`cohort_cases`): :func:`enhance_cohort` with the bundle loaded only on a rank
    that has cases to run; rank 0 prints the summary and the failures. Returns 1 when any case failed."""
    import logging

    from monai_sr.errors import InputError

    for flag, given in (("--resample", args.resample), ("--allow-modality", args.allow_modality)):
        if given:
            raise InputError(f"{flag} is not available for a folder of cases yet; run the cases one by one",
                             path=args.input)
    if args.send and not args.debug:
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # failures are reported per case

    def load_parts() -> dict:
        from monai_sr.bundles import config_overrides, load_inference_parts, without_fit

        parts = load_inference_parts(args.bundle, trust=args.trust_bundle, **config_overrides(args.precision, args.set))
        return {**parts, "adapt": without_fit(parts.get("adapt")) if args.fast else parts.get("adapt")}

    source = _Source(label=args.input, query=cases) if not isinstance(cases, list) else _Source(
        label=args.input, root=Path(args.input), cases=cases)
    report = _run(source, Path(args.output), load_parts, output_format=getattr(args, "output_format", "auto"),
                  dicom_format=args.dicom_format, overwrite=args.overwrite, retry_failed=args.retry_failed,
                  send=args.send, calling_aet=args.aet, timeout=args.timeout, progress=not args.quiet)
    if report.rank == 0 and report.failed:
        print(report.failure_text(), file=sys.stderr)
    return 1 if report.failed else 0


def _run(source: _Source, out_dir: Path, load_parts, *, output_format: str, dicom_format: str | None,
         overwrite: bool, retry_failed: bool, send: str | None, calling_aet: str, timeout: float,
         progress: bool) -> CohortReport:
    from monai_sr.errors import OutputError
    from monai_sr.io.atomic import check_not_inside, make_output_folder

    rank, world, started = _distributed()
    try:
        payload: list = [None]
        if rank == 0:
            try:
                if out_dir.exists() and not out_dir.is_dir():
                    raise OutputError("output must be a folder when running cases", path=out_dir)
                if send:
                    from monai_sr.io.pacs import check_destination

                    check_destination(send, timeout=timeout)  # before the PACS is searched or a model loads
                if source.root is not None:
                    check_not_inside(out_dir, source.root, replaced=False)
                # a case that cannot fit, an unreachable PACS: refused before anything is made
                payload[0] = _plan(source, out_dir, output_format, retry_failed, send=bool(send), timeout=timeout)
                make_output_folder(out_dir)
            except Exception as exc:  # every rank must leave, not wait for a plan
                payload[0] = exc
        if world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(payload, src=0)
        if isinstance(payload[0], Exception):
            raise payload[0]
        plan: _Plan = payload[0]

        mine = plan.todo
        if world > 1 and len(plan.todo) >= world:
            from monai.data import DistributedSampler

            sampler = DistributedSampler(plan.todo, even_divisible=False, shuffle=False, num_replicas=world, rank=rank)
            mine = [plan.todo[i] for i in sampler]
        elif world > 1:  # fewer cases than ranks (the sampler refuses): one case each, as it would give them
            mine = plan.todo[rank : rank + 1]
        rows: list[dict] = []
        if mine:
            rows = _run_mine(source, out_dir, plan, mine, load_parts(), rank=rank, world=world,
                             output_format=output_format, dicom_format=dicom_format, overwrite=overwrite,
                             send=send, calling_aet=calling_aet, timeout=timeout, progress=progress)
        all_rows = [rows]
        if world > 1:
            import torch.distributed as dist

            all_rows = [None] * world
            dist.all_gather_object(all_rows, rows)
        ran = [r for part in all_rows for r in part]
        failed = [(r["case"], r["error"]) for r in ran if r["status"] == "failed"] + plan.not_retried
        report = CohortReport(source=source.label, output=out_dir, total=plan.total,
                              done=sum(r["status"] == "done" for r in ran), skipped=plan.skipped, failed=failed,
                              not_retried=len(plan.not_retried), left_out=plan.left_out, world=world,
                              threads=_threads(), rank=rank)
        if rank == 0:
            print(report.summary(), flush=True)
        return report
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run_mine(source: _Source, out_dir: Path, plan: _Plan, mine: list[str], parts: dict, *, rank: int, world: int,
              output_format: str, dicom_format: str | None, overwrite: bool, send: str | None, calling_aet: str,
              timeout: float, progress: bool) -> list[dict]:
    """This rank's cases, one manifest row each (written before the case's line is printed)."""
    import shutil
    import time

    from monai_sr.errors import MonaiSRError
    from monai_sr.pipeline import enhance_cases

    manifest = out_dir / MANIFEST
    rows: list[dict] = []
    tag = f"[rank {rank}] " if world > 1 else ""
    bars = _CaseProgress(progress)
    extra: dict[str, tuple[float, list[str]]] = {}  # DICOMweb: case -> (fetch seconds, notes)

    def on_case(case, dst, result, error, seconds):
        bars.next_case()
        fetch_s, notes = extra.pop(case.name, (0.0, []))
        seconds += fetch_s
        if error is None:
            notes = [*notes, *result.notes]
            if send:
                try:
                    notes.append(_send_case(dst, send, calling_aet=calling_aet, timeout=timeout))
                except MonaiSRError as exc:
                    error = exc
        if error is None:
            row = dict(case=case.name, output=dst.name, status="done", notes="; ".join(notes), error="")
            line = f"{tag}done    {case.name} -> {dst} ({seconds:.1f} s)"
        else:
            cause = str(error) if isinstance(error, MonaiSRError) else f"{type(error).__name__}: {error}"
            row = dict(case=case.name, output=dst.name, status="failed", notes="; ".join(notes), error=cause)
            line = f"{tag}failed  {case.name}: {_one_line(cause)}"
        row.update(input_digest=plan.digests[case.name], seconds=f"{seconds:.2f}")
        append_row(manifest, row)  # the row before the line: a kill after the line finds the row
        rows.append(row)
        print(line, flush=True)

    def run(root: Path, cases: list[Path], overwrite_them: bool) -> None:
        enhance_cases(root, out_dir, network=parts["network"], inferer=parts.get("inferer"), adapt=parts.get("adapt"),
                      derivation=parts.get("derivation"), dicom_format=dicom_format, overwrite=overwrite_them,
                      output_format=output_format, progress=bars, cases=cases, on_case=on_case)

    try:
        if source.query is None:
            by_name = {c.name: c for c in source.cases}
            # the outputs of killed runs (plan.ours) are replaced, once the new one is complete
            for names, overwrite_them in ([(mine, True)] if overwrite else [
                    ([n for n in mine if n not in plan.ours], False), ([n for n in mine if n in plan.ours], True)]):
                if names:
                    run(source.root, [by_name[n] for n in names], overwrite_them)
            return rows
        from monai_sr.io.atomic import _partial_name  # the partials' naming: a dead rank's are cleaned
        from monai_sr.io.dicomweb import fetch_series

        for name in mine:
            # fetched into OUT/.<uid>.dicomweb.monai-sr-<pid>.partial/<uid>/, removed after the case
            work = out_dir / _partial_name(f"{name}.dicomweb")
            case = work / name
            t0 = time.perf_counter()
            try:
                shutil.rmtree(work, ignore_errors=True)
                case.mkdir(parents=True)
                files = fetch_series(plan.refs[name], source.query.root, case, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - one case never stops the others
                shutil.rmtree(work, ignore_errors=True)
                on_case(case, _dicomweb_output(name, out_dir, output_format), None, exc, time.perf_counter() - t0)
                continue
            fetched = time.perf_counter() - t0
            extra[name] = (fetched, [f"fetched {len(files)} instance(s) by WADO-RS in {fetched:.1f} s"])
            try:
                run(work, [case], overwrite or name in plan.ours)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return rows
    finally:
        bars.bars.close()


def _send_case(output: Path, send: str, *, calling_aet: str, timeout: float) -> str:
    """Send one case's DICOM output; the note (``sent N instance(s) to URL``), or :class:`SendError`."""
    from monai_sr.io.pacs import send_series

    report = send_series(output, send, calling_aet=calling_aet, timeout=timeout)
    report.raise_for_failures()
    return f"sent {len(report.results)} instance(s) to {send}"
