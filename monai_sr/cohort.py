"""Cohorts: ``monai-sr enhance CASES_FOLDER OUT_FOLDER`` over every case of a folder, resumable.

The cases and their outputs are the library's (:func:`~monai_sr.pipeline.find_cases`,
:func:`~monai_sr.pipeline.case_output`, :func:`~monai_sr.pipeline.enhance_cases`); this module adds the
manifest ``OUT_FOLDER/manifest.csv`` and the split across ranks when ``torchrun`` launched the command.

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
shuffle=False)`` over a gloo process group; each rank uses cores / ranks-on-this-node threads, writes its
own cases (atomically, as :func:`~monai_sr.pipeline.enhance` always does) and rows; rank 0 prints one
summary. Every rank exits 1 when a case failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MANIFEST", "FIELDS", "case_digest", "cohort_cases", "read_manifest", "append_row", "run_cohort"]

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
) -> list[Path] | None:
    """The cases when ``input_path`` is a folder of cases, else None (one case: a file, a folder that is
    itself one DICOM series — DICOM files in it, or in one sub-folder only —, a folder with nothing to
    read, whose error the one-case path gives, any input with ``series`` chosen, or any input whose
    ``output`` is one NIfTI file: then a folder of several series is refused with their list, as before)."""
    from monai_sr.errors import InputError
    from monai_sr.io.nifti import is_nifti_path
    from monai_sr.pipeline import find_cases

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
class _Plan:
    todo: list[str]  # case names to run, in find_cases order
    skipped: int  # done before, same input, output present
    not_retried: list[tuple[str, str]]  # (case, error) failed before, same input, no --retry-failed
    digests: dict[str, str]
    ours: set[str]  # cases to run whose output is present from a run killed between publishing and its row


def _plan(cases: list[Path], out_dir: Path, output_format: str, retry_failed: bool) -> _Plan:
    from monai_sr.pipeline import case_output

    managed = (out_dir / MANIFEST).is_file()
    rows = read_manifest(out_dir / MANIFEST)
    plan = _Plan([], 0, [], {}, set())
    for case in cases:
        digest = plan.digests[case.name] = case_digest(case)
        row = rows.get(case.name)
        same = row is not None and row["input_digest"] == digest
        output = case_output(case, out_dir, output_format)
        if same and row["status"] == "done" and row["output"] == output.name and output.exists():
            plan.skipped += 1
        elif same and row["status"] == "failed" and not retry_failed:
            plan.not_retried.append((case.name, row["error"]))
        else:
            plan.todo.append(case.name)
            # An output (published whole, atomically) in a cohort folder with no row of its own, or after a
            # failed row: a run was killed between publishing it and writing its row; it is ours to replace.
            # An output made from another input (a done row, another digest) needs --overwrite.
            if managed and output.exists() and (row is None or row["status"] == "failed"):
                plan.ours.add(case.name)
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


def _distributed() -> tuple[int, int]:
    """(rank, world size), starting the gloo process group when torchrun launched more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // local))
    return dist.get_rank(), world


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run_cohort(args, cases: list[Path]) -> int:
    """``monai-sr enhance CASES_FOLDER OUT_FOLDER`` (``args`` from the CLI's parser): plan from the
    manifest, run this rank's cases through :func:`~monai_sr.pipeline.enhance_cases`, one row per case,
    one summary (rank 0). Returns 1 when any case of the cohort failed (listed), else 0."""
    from monai_sr.errors import InputError, MonaiSRError, OutputError
    from monai_sr.io.atomic import check_not_inside, make_output_folder

    for flag, given in (("--send", args.send), ("--resample", args.resample), ("--allow-modality", args.allow_modality)):
        if given:
            raise InputError(f"{flag} is not available for a folder of cases yet; run the cases one by one",
                             path=args.input)
    output_format = getattr(args, "output_format", "auto")
    rank, world = _distributed()
    out_dir = Path(args.output)
    manifest = out_dir / MANIFEST
    payload: list = [None]
    if rank == 0:
        try:
            if out_dir.exists() and not out_dir.is_dir():
                raise OutputError("output must be a folder when running cases", path=out_dir)
            check_not_inside(out_dir, args.input, replaced=False)
            payload[0] = _plan(cases, out_dir, output_format, args.retry_failed)  # a case that cannot fit: refused
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
    by_name = {c.name: c for c in cases}
    rows: list[dict] = []
    tag = f"[rank {rank}] " if world > 1 else ""

    if mine:
        from monai_sr.bundles import load_inference_parts, without_fit
        from monai_sr.pipeline import enhance_cases

        progress = _CaseProgress(not args.quiet)

        def on_case(case, dst, result, error, seconds):
            progress.next_case()
            if error is None:
                row = dict(case=case.name, output=dst.name, status="done", notes="; ".join(result.notes), error="")
                line = f"{tag}done    {case.name} -> {dst} ({seconds:.1f} s)"
            else:
                cause = str(error) if isinstance(error, MonaiSRError) else f"{type(error).__name__}: {error}"
                row = dict(case=case.name, output=dst.name, status="failed", notes="", error=cause)
                line = f"{tag}failed  {case.name}: {_one_line(cause)}"
            row.update(input_digest=plan.digests[case.name], seconds=f"{seconds:.2f}")
            append_row(manifest, row)  # the row before the line: a kill after the line finds the row
            rows.append(row)
            print(line, flush=True)

        parts = load_inference_parts(args.bundle, trust=args.trust_bundle, **dict(args.set or ()))
        try:
            # the outputs of killed runs (plan.ours) are replaced, once the new one is complete
            batches = [(mine, True)] if args.overwrite else [
                ([n for n in mine if n not in plan.ours], False), ([n for n in mine if n in plan.ours], True)]
            for names, overwrite in batches:
                if names:
                    enhance_cases(
                        args.input, out_dir, network=parts["network"], inferer=parts["inferer"],
                        adapt=without_fit(parts.get("adapt")) if args.fast else parts.get("adapt"),
                        derivation=parts.get("derivation"), dicom_format=args.dicom_format, overwrite=overwrite,
                        output_format=output_format, progress=progress, cases=[by_name[n] for n in names],
                        on_case=on_case,
                    )
        finally:
            progress.bars.close()

    all_rows = [rows]
    if world > 1:
        import torch.distributed as dist

        all_rows = [None] * world
        dist.all_gather_object(all_rows, rows)
    ran = [r for part in all_rows for r in part]
    failed = [(r["case"], r["error"]) for r in ran if r["status"] == "failed"] + plan.not_retried
    if rank == 0:
        done = sum(r["status"] == "done" for r in ran)
        print(f"cohort  {args.input} -> {out_dir}: {len(cases)} case(s): {done} done now, {plan.skipped} done before "
              f"(skipped), {len(failed)} failed" + (f", on {world} ranks x {_threads()} thread(s)" if world > 1 else ""), flush=True)
        print(f"manifest {manifest}", flush=True)
        if failed:
            for name, cause in failed:
                print(f"failed  {name}: {_one_line(cause)}", file=sys.stderr)
            hint = f"; {len(plan.not_retried)} failed before, not retried (--retry-failed)" if plan.not_retried else ""
            print(f"monai-sr: error: {len(failed)} of {len(cases)} cases failed: "
                  f"{', '.join(n for n, _ in failed)}{hint}", file=sys.stderr)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 1 if failed else 0
