"""Find the DICOM image series under a folder (recursive) or a DICOMDIR, list them, pick one.

A *candidate* is what the reader can turn into one volume: one series, or one stack of a series whose
frames form several stacks (echoes, temporal positions, stack IDs of an Enhanced MR multi-frame object,
or echoes / temporal positions of a classic one-file-per-slice series). Stacks are never mixed: they are
split here and a stack has to be chosen like a series.

Selection (:func:`select_series`): a Series Instance UID or a Series Number, optionally followed by
``:`` and a stack label (``301:TE=25``); the listing (:func:`format_series_table`, ``monai-sr series``)
shows the selector of each candidate. The frames themselves: :mod:`monai_sr.io.dicom.frames`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from monai_sr import geometry
from monai_sr.errors import GeometryError, InputError
from monai_sr.io.dicom.frames import Frame, frames_of, lenient_reading, read_header
from monai_sr.io.library_notes import from_file

__all__ = [
    "SeriesCandidate",
    "find_series",
    "select_series",
    "format_series_table",
    "plane_label",
]

logger = logging.getLogger(__name__)

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_SPATIAL_POINTERS = {0x00200032, 0x00209057, 0x00200037}  # IPP, InStackPositionNumber, IOP
_OBLIQUE_DEG = 1.0  # a normal further than this from the closest patient axis is "oblique"


@dataclass
class SeriesCandidate:
    """One series (or one stack of a series) that the reader can turn into one volume."""

    uid: str
    number: str
    description: str
    modality: str
    frames: list[Frame]
    stack: str = ""  # stack label, "" when the series is one stack
    number_is_unique: bool = True  # no other series under the same path has this Series Number

    @property
    def selector(self) -> str:
        """What ``--series`` takes to pick this candidate (the number when it is unique, else the UID)."""
        base = self.number if self.number and self.number_is_unique else self.uid
        return f"{base}:{self.stack}" if self.stack else base

    def describe(self) -> dict:
        """Listing fields: slices, matrix, spacing (mm), orientation, acquisition type, transfer syntax."""
        with lenient_reading():  # the headers are read as find_series read them
            return self._describe()

    def _describe(self) -> dict:
        f0 = self.frames[0]
        ds = f0.dataset
        info = {
            "selector": self.selector,
            "uid": self.uid,
            "number": self.number,
            "stack": self.stack,
            "description": self.description,
            "modality": self.modality,
            "slices": len(self.frames),
            "matrix": f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')}",
            "spacing": "?",
            "orientation": "no geometry",
            "acquisition": str(ds.get("MRAcquisitionType", "") or "-"),
            "transfer_syntax": _syntax_name(ds),
            "files": len({f.path for f in self.frames}),
        }
        try:
            iops = [np.asarray([float(v) for v in f.iop()]) for f in self.frames]
            normal = geometry.slice_normal(iops[0])
            info["orientation"] = plane_label(normal)
            if any(np.abs(i - iops[0]).max() > 1e-4 for i in iops):
                info["orientation"] = "mixed"
            ps = [float(v) for v in f0.pixel_spacing()]
            if len(ps) != 2:
                raise ValueError(f"PixelSpacing holds {len(ps)} values")
            pos = sorted(float(np.asarray([float(v) for v in f.ipp()]) @ normal) for f in self.frames)
            step = f"{float(np.median(np.diff(pos))):.4g}" if len(pos) > 1 else "-"
            info["spacing"] = f"{ps[1]:.4g}x{ps[0]:.4g}x{step}"  # along i (columns), j (rows), k
        except (TypeError, ValueError, GeometryError):
            pass  # missing or broken geometry: listed as such, refused when read
        return info


def plane_label(normal: np.ndarray) -> str:
    """Closest anatomical plane of a slice with unit ``normal`` (LPS), ``"... oblique (N deg)"`` when off."""
    n = np.abs(np.asarray(normal, dtype=np.float64))
    axis = int(np.argmax(n))
    name = ("sagittal", "coronal", "axial")[axis]
    angle = float(np.rad2deg(np.arccos(min(1.0, n[axis]))))
    return name if angle <= _OBLIQUE_DEG else f"{name} oblique ({angle:.1f} deg)"


def _syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)).name if uid else "?"


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder`` (recursive, hidden names skipped), sorted."""
    out = []

    def unreadable(exc: OSError) -> None:  # a folder that cannot be listed would silently drop its slices
        raise InputError(f"cannot read this folder ({exc.strerror or exc})", path=exc.filename or folder)

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return out


def _dicomdir_files(path: Path) -> list[Path]:
    """The image files a DICOMDIR points to (its records with a Referenced File ID)."""
    try:
        ds = pydicom.dcmread(path)
        records = ds.DirectoryRecordSequence
    except Exception as exc:
        raise InputError(f"damaged DICOMDIR ({type(exc).__name__}: {exc})", path=path) from exc
    out = []
    for rec in records:
        fid = rec.get("ReferencedFileID")
        if fid:
            parts = [fid] if isinstance(fid, str) else list(fid)
            out.append(path.parent.joinpath(*parts))
    missing = [p for p in out if not p.is_file()]
    if missing:
        raise InputError(f"DICOMDIR points to {len(missing)} missing file(s), e.g. {missing[0]}", path=path)
    return out


def _files_of(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if path.is_dir():
        files = _walk(path)
        if not files:
            raise InputError("folder is empty: no DICOM files to read", path=path)
        return files
    if path.name.upper() == "DICOMDIR":
        return _dicomdir_files(path)
    return [path]


def _stack_keys(frames: list[Frame]) -> list[tuple]:
    """A key per frame naming its stack: stack ID, temporal position, echo, non-spatial dimension indices."""
    keep = [i for i, pointer in enumerate(_dimension_pointers(frames[0])) if pointer not in _SPATIAL_POINTERS]
    keys = []
    for f in frames:
        if f.index is None:  # classic single-frame file
            try:
                echo, time = f.dataset.get("EchoNumbers"), f.dataset.get("TemporalPositionIdentifier")
            except (TypeError, ValueError, OverflowError) as exc:  # a value pydicom cannot convert
                raise InputError(f"EchoNumbers (0018,0086) or TemporalPositionIdentifier (0020,0100) of {f.label} "
                                 f"is unreadable ({type(exc).__name__}: {exc})", path=f.path) from None
            keys.append((("echo", _key(echo)), ("time", _key(time))))
            continue
        div = f.attr("FrameContentSequence", "DimensionIndexValues")
        te = f.attr("MREchoSequence", "EffectiveEchoTime")
        try:
            div = [int(v) for v in (div if isinstance(div, Sequence) and not isinstance(div, str) else [div])] if div is not None else []
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"DimensionIndexValues (0020,9157) of {f.label} are not whole numbers: {str(div)[:60]}",
                             path=f.path) from None
        try:
            te = None if te is None else float(te)
        except (TypeError, ValueError):
            raise InputError(f"EffectiveEchoTime (0018,9082) of {f.label} is not a number: {str(te)[:40]!r}",
                             path=f.path) from None
        keys.append(
            (
                ("stack", _key(f.attr("FrameContentSequence", "StackID"))),
                ("time", _key(f.attr("FrameContentSequence", "TemporalPositionIndex"))),
                ("TE", te),
                *((f"dim{i + 1}", div[i] if i < len(div) else None) for i in keep),
            )
        )
    return keys


def _dimension_pointers(frame: Frame) -> list[int]:
    """The Dimension Index Pointer of each item of the Dimension Index Sequence (0 where absent);
    InputError naming the file when the sequence or a pointer cannot be read as a tag."""
    dims = frame.dataset.get("DimensionIndexSequence")
    if dims is None or dims == "":
        return []
    if not isinstance(dims, Sequence) or isinstance(dims, str) or not all(isinstance(d, Dataset) for d in dims):
        raise InputError("DimensionIndexSequence (0020,9222) is not a sequence of items", path=frame.path)
    out = []
    for i, d in enumerate(dims):
        pointer = d.get("DimensionIndexPointer", 0) or 0
        try:
            if isinstance(pointer, float) or isinstance(pointer, (list, tuple, MultiValue, str, bytes)):
                raise TypeError
            out.append(int(pointer))
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"DimensionIndexPointer (0020,9165) of item {i + 1} of the Dimension Index Sequence is "
                             f"{str(pointer)[:40]!r}: not one tag", path=frame.path) from None
    return out


def _key(value):
    """A header value as a stack-key part, hashable: several values become a tuple of their texts, a value
    of another kind (a sequence where a number belongs) its text."""
    if value is None or isinstance(value, (str, bytes, int, float)):
        return value
    if isinstance(value, (list, tuple, MultiValue)):
        return tuple(str(v) for v in value)
    return str(value)[:64]


def _split_stacks(frames: list[Frame]) -> list[tuple[str, list[Frame]]]:
    """Split frames into stacks by the key parts that vary; [("", frames)] when there is one stack."""
    parts = [dict(k) for k in _stack_keys(frames)]  # single- and multi-frame files may share a series UID
    names = list(dict.fromkeys(name for p in parts for name in p))
    keys = [tuple(p.get(name) for name in names) for p in parts]
    if len(set(keys)) <= 1:
        return [("", frames)]
    varying = [i for i in range(len(names)) if len({k[i] for k in keys}) > 1]
    groups: dict[tuple, list[Frame]] = {}
    for key, frame in zip(keys, frames):
        groups.setdefault(tuple(key[i] for i in varying), []).append(frame)

    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return [
        (",".join(f"{names[i]}={fmt(v)}" for i, v in zip(varying, key)), group)
        for key, group in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))
    ]


def find_series(path: str | os.PathLike) -> tuple[list[SeriesCandidate], list[str]]:
    """Every image series (split into stacks where needed) under ``path`` and the notes of the scan.

    ``path`` is a folder (searched recursively), a DICOMDIR (its records are followed) or one DICOM
    file. Non-DICOM and empty files are skipped with a note, files without pixel data (DICOMDIR,
    reports) skipped with a note, duplicated instances kept once; a damaged DICOM file is an error
    naming it. Raises :class:`InputError` when no image is found.
    """
    path = Path(path)
    files = _files_of(path)
    notes: list[str] = []
    by_uid: dict[str, list[Frame]] = {}
    first: dict[str, Dataset] = {}
    seen: set[str] = set()
    pixelless: dict[str, Path] = {}  # series UID -> a file of it without pixel data
    skipped = no_pixels = 0
    with lenient_reading():
        for file in files:
            with from_file(file):  # what pydicom warns about names the file
                ds = read_header(file, notes)
            if ds is None:
                skipped += 1
                continue
            if "PixelData" not in ds:
                no_pixels += 1
                sop_class = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
                image = sop_class is not None and str(getattr(sop_class, "name", "")).endswith("Image Storage")
                if image and not ds.get("SeriesInstanceUID"):  # cut before its series is named: cannot be placed
                    raise InputError(  # a truncated or damaged slice (even the last one): never dropped silently
                        f"no pixel data, though the file belongs to an image series ({sop_class.name}; a damaged, "
                        "truncated or incomplete slice; remove or replace it)", path=file)
                if str(ds.get("SOPClassUID", "")) != _DICOMDIR_SOP:
                    notes.append(f"skipped {file.name}: no pixel data ({ds.get('SOPClassUID', 'unknown SOP class')})")
                    if ds.get("SeriesInstanceUID"):
                        pixelless.setdefault(str(ds.SeriesInstanceUID), file)
                continue
            sop = str(ds.get("SOPInstanceUID", "")) or str(file)
            if sop in seen:
                notes.append(f"skipped {file.name}: same SOP Instance UID as a file read before")
                continue
            seen.add(sop)
            uid = str(ds.get("SeriesInstanceUID", "")) or "<no SeriesInstanceUID>"
            first.setdefault(uid, ds)
            with from_file(file):
                by_uid.setdefault(uid, []).extend(frames_of(file, ds))
        for uid, file in pixelless.items():
            if uid in by_uid:  # a slice of an image series without its pixels: never dropped silently
                raise InputError(
                    "no pixel data, though the file belongs to an image series read here (a damaged or incomplete "
                    "slice; remove or replace it)", path=file)
        if not by_uid:
            raise InputError(
                f"no DICOM image files found ({len(files)} file(s) checked, {skipped} not DICOM, "
                f"{no_pixels} DICOM without pixel data)",
                path=path,
            )
        out = []
        for uid, frames in by_uid.items():
            ds = first[uid]
            for stack, group in _split_stacks(frames):
                out.append(
                    SeriesCandidate(
                        uid=uid,
                        number=str(ds.get("SeriesNumber", "") or ""),
                        description=str(ds.get("SeriesDescription", "") or ""),
                        modality=str(ds.get("Modality", "") or ""),
                        frames=group,
                        stack=stack,
                    )
                )
    out.sort(key=lambda c: (_num(c.number), c.uid, c.stack))
    for c in out:
        c.number_is_unique = len({o.uid for o in out if o.number == c.number}) == 1
    for note in notes:
        logger.info("%s: %s", path, note)
    return out, notes


def _num(number: str) -> tuple[int, str]:
    try:
        return int(number), ""
    except ValueError:
        return 1 << 30, number


def format_series_table(candidates: Sequence[SeriesCandidate]) -> str:
    """A text table of the candidates: the selector, then the fields of :meth:`SeriesCandidate.describe`."""
    cols = [
        ("SERIES", "selector"), ("MODALITY", "modality"), ("SLICES", "slices"), ("MATRIX", "matrix"),
        ("SPACING_MM", "spacing"), ("ORIENTATION", "orientation"), ("ACQ", "acquisition"),
        ("DESCRIPTION", "description"), ("UID", "uid"),
    ]
    rows = [[h for h, _ in cols]] + [[str(c.describe()[k]) or "-" for _, k in cols] for c in candidates]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def _one_line(candidates: Sequence[SeriesCandidate]) -> str:
    parts = []
    for c in candidates:
        d = c.describe()
        parts.append(
            f"{d['selector']} ('{d['description']}', {d['modality']}, {d['slices']} slices, {d['orientation']}, uid {c.uid})"
        )
    return "; ".join(parts)


def select_series(
    candidates: Sequence[SeriesCandidate], series: str | int | None = None, *, path: str | os.PathLike | None = None
) -> SeriesCandidate:
    """The candidate ``series`` names (UID or number, optionally ``:stack``); the only one when None.

    Raises :class:`InputError` listing the candidates when the choice is missing, unknown or ambiguous.
    """
    if series is None or str(series).strip() == "":
        if len(candidates) == 1:
            return candidates[0]
        stacks = {c.uid for c in candidates}
        what = f"{len(candidates)} series" if len(stacks) == len(candidates) else f"{len(candidates)} series/stacks"
        raise InputError(f"found {what}; choose one with --series (series= in Python): {_one_line(candidates)}", path=path)
    text = str(series).strip()
    base, _, stack = text.partition(":")
    matches = [c for c in candidates if base in (c.uid, c.number)]
    if stack:
        matches = [c for c in matches if c.stack == stack]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InputError(f"no series matches --series {text}; available: {_one_line(candidates)}", path=path)
    if len({c.uid for c in matches}) > 1:
        raise InputError(f"--series {text} matches several series (give the UID): {_one_line(matches)}", path=path)
    raise InputError(
        f"series {base} holds {len(matches)} stacks that must not be mixed; choose one with --series {base}:STACK: "
        f"{_one_line(matches)}",
        path=path,
    )
