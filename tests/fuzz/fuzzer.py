"""An in-process fuzzer of monai_sr's DICOM reading: header parsing, series discovery and stacking, pixels.

Each case starts from a seed series (:func:`make_seeds`: the committed corpus under ``tests/fuzz/corpus/``,
made once from ``data/sample/`` by ``--write-corpus``, and pydicom's own test files), mutates it (:class:`Mutator`: element edits through pydicom, then byte edits
of the encoded files, dropped and doubled files) and reads the result with the calls ``monai-sr enhance``
makes (:func:`read_case`: ``find_series`` -> the series listing -> ``open_volume`` (``order_series``,
``series_meta``) -> every slice's real values -> ``source_headers``). A case ends as

* ``read``: a volume came back, with the shape the header promised;
* ``refused``: a :class:`monai_sr.errors.MonaiSRError` (the clear one-line error the CLI prints);
* ``crash``: any other exception, a volume of the wrong shape, or ``MemoryError`` (the data segment is
  limited to ``--memory-mib`` above what the process holds at the start, so a size taken from a header
  and allocated before it is checked fails here instead of taking the machine);
* ``hang``: longer than ``--time-limit`` seconds (SIGALRM, raised as a ``BaseException`` so that no
  ``except Exception`` of the code under test swallows it).

Every mutation is recorded as a concrete, JSON-able *recipe* (no random state in it): a crash is saved
under ``--out`` as ``<signature>.json`` with the mutated files beside it, and
``tests/fuzz/test_fuzz_regressions.py`` replays such recipes. Case ``i`` of a run depends only on
``--seed`` and ``i``: ``--replay i`` builds and reads it again.

Usage (``make fuzz`` runs the first line)::

    python tests/fuzz/fuzzer.py --cases 100000 --seed 0 --out out/fuzz
    python tests/fuzz/fuzzer.py --cases 2000 --seed 0 --json      # the summary as one JSON line
    python tests/fuzz/fuzzer.py --seed 0 --replay 1234             # one case again, traceback shown
    python tests/fuzz/fuzzer.py --write-corpus                     # remake tests/fuzz/corpus/ (see below)

The sample seeds are committed bytes, not remade on every run: our writers put the time of day and UIDs in
them and format decimal strings from float geometry whose last digits differ between CPUs, so bytes made
on another machine have other lengths, and a saved recipe's byte offsets would hit other elements there.
Remaking the corpus invalidates the byte offsets of the saved regressions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = ["Seed", "Case", "Mutator", "make_seeds", "build_case", "read_case", "run", "main"]

# ---------------------------------------------------------------------------------------------- seeds


@dataclass
class Seed:
    """A series to start from: file names and their bytes (one folder)."""

    name: str
    files: dict[str, bytes]


#: pydicom's own test files used as seeds (pydicom's package, and pydicom-data's store when installed).
PYDICOM_SEEDS = (
    "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_padded.dcm", "MR_small_expb.dcm",
    "emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
)


#: The committed sample seeds, one folder each, in the order the mutator numbers them.
CORPUS = Path(__file__).resolve().with_name("corpus")
SAMPLE_SEEDS = ("sample_siemens", "sample_philips_quirks", "sample_enhanced")


def _sample_seeds(scratch: Path) -> list[Seed]:
    """Three 16 x 16 x 3 crops of the sample series (real Colin27 data, oblique) in the two vendor styles
    (one with every quirk), and the same crop as a derived Enhanced MR multi-frame object."""
    from monai_sr.io.dicom.reader import load_dicom_series
    from monai_sr.io.dicom.writer import write_derived_series
    from monai_sr.io.scanner_series import write_original_mr_series
    from monai_sr.resources import SAMPLE, data_path

    vol = load_dicom_series(data_path(SAMPLE, "colin27_t1_oblique_2mm"))
    a = np.asarray(vol.affine, dtype=np.float64)
    i0, j0, k0 = 40, 40, vol.shape[3] // 2
    data = vol[0, i0 : i0 + 16, j0 : j0 + 16, k0 : k0 + 3].numpy()
    shift = np.eye(4)
    shift[:3, 3] = [i0, j0, k0]
    affine = a @ shift
    seeds = []
    styles = {"sample_siemens": ("siemens", ()),
              "sample_philips_quirks": ("philips", ("spacing_tag_lies", "command_set", "zero_window",
                                                    "private_tags", "shuffled_names", "implicit_vr"))}
    for name, (style, quirks) in styles.items():
        folder = scratch / name
        write_original_mr_series(data, affine, folder, style=style, quirks=quirks, seed=7)
        seeds.append(Seed(name, {p.name: p.read_bytes() for p in sorted(folder.iterdir())}))
    folder = scratch / "sample_enhanced"
    headers = [pydicom.dcmread(scratch / "sample_siemens" / n) for n in seeds[0].files]
    write_derived_series(data, affine, folder, source_headers=headers, derivation="fuzz seed",
                         dicom_format="enhanced")
    seeds.append(Seed("sample_enhanced", {p.name: p.read_bytes() for p in sorted(folder.iterdir())}))
    return seeds


def _pydicom_seeds() -> list[Seed]:
    from pydicom.data import get_testdata_file

    seeds = []
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name, download=False)  # never downloads: a missing file is left out
        if path:
            data = _placed(path) if name.startswith("emri") else Path(path).read_bytes()
            seeds.append(Seed(f"pydicom_{name.removesuffix('.dcm')}", {"IM0001.dcm": data}))
        if name == "MR_small.dcm" and path:  # the same image deflated (a stream read whole, not from offsets)
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            seeds.append(Seed("pydicom_MR_small_deflated", {"IM0001.dcm": buf.getvalue()}))
    return seeds


def _placed(path: str) -> bytes:
    """pydicom's Enhanced MR test object with the geometry it lacks (an axial stack, 1 mm apart), so that
    its frames reach stacking and decoding."""
    ds = pydicom.dcmread(path)
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [1, 1], 1
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in range(int(ds.NumberOfFrames)):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [0, 0, k]
        item.PlanePositionSequence = DicomSequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def write_corpus(folder: Path = CORPUS) -> list[Path]:
    """Remake the committed sample seeds under ``folder`` from ``data/sample/``; returns the seed folders."""
    with tempfile.TemporaryDirectory(prefix="monai_sr_fuzz_seeds_") as tmp:
        made = _sample_seeds(Path(tmp))
    written = []
    for seed in made:
        target = folder / seed.name
        if target.exists():
            for old in target.iterdir():
                old.unlink()
        target.mkdir(parents=True, exist_ok=True)
        for fname, data in seed.files.items():
            (target / fname).write_bytes(data)
        written.append(target)
    return written


def _corpus_seeds() -> list[Seed]:
    seeds = []
    for name in SAMPLE_SEEDS:
        folder = CORPUS / name
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}
        if not files:
            raise FileNotFoundError(f"fuzz seed {name} missing under {CORPUS} (python tests/fuzz/fuzzer.py --write-corpus)")
        seeds.append(Seed(name, files))
    return seeds


def make_seeds() -> list[Seed]:
    """The seed corpus: the committed sample seeds (the same bytes on every machine) and pydicom's test
    files (fixed by pydicom's version); every seed is read whole as it is (tested)."""
    return _corpus_seeds() + _pydicom_seeds()


# ------------------------------------------------------------------------------------------- mutation

#: Attributes the reader looks at (top level, or inside a functional group item).
TARGET_TAGS = (
    "TransferSyntaxUID", "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality",
    "SeriesDescription", "ImageType", "EchoNumbers", "TemporalPositionIdentifier", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "SliceLocation", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames",
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth", "ModalityLUTSequence", "LUTDescriptor",
    "LUTData", "PixelData", "DimensionIndexSequence", "DimensionIndexPointer", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "PlanePositionSequence", "PlaneOrientationSequence",
    "PixelMeasuresSequence", "PixelValueTransformationSequence", "FrameContentSequence", "StackID",
    "InStackPositionNumber", "TemporalPositionIndex", "DimensionIndexValues", "MREchoSequence",
    "EffectiveEchoTime", "SpecificCharacterSet", "FrameOfReferenceUID", "StudyInstanceUID", "MRAcquisitionType",
    "SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue", "ScanningSequence",
    "SequenceVariant", "EchoTime", "RepetitionTime", "FrameVOILUTSequence", "MRTimingAndRelatedParametersSequence",
)
_WANTED = {int(Tag(kw)) for kw in TARGET_TAGS}
#: Attributes added to a file that lacks them.
ADDED = {
    "NumberOfFrames": "IS", "ModalityLUTSequence": "SQ", "RescaleSlope": "DS", "RescaleIntercept": "DS",
    "SpacingBetweenSlices": "DS", "EchoNumbers": "IS", "TemporalPositionIdentifier": "IS",
    "PerFrameFunctionalGroupsSequence": "SQ", "SharedFunctionalGroupsSequence": "SQ",
    "DimensionIndexSequence": "SQ", "PlanarConfiguration": "US",
}

_NUM_IS = [b"0", b"1", b"2", b"3", b"-1", b"-3", b"99999999", b"2147483648", b"9" * 12, b"abc", b"", b" ",
           b"1\\2", b"1.5", b"+5", b"0x10", b"1e3"]
_NUM_DS = [b"0", b"-0", b"1", b"-1", b"0.5", b"1e308", b"1e-320", b"nan", b"inf", b"-inf", b"abc", b"", b"1\\2",
           b"1\\2\\3", b"1\\2\\3\\4\\5\\6\\7", b"0\\0\\0\\0\\0\\0", b"1\\0\\0\\1\\0\\0", b"1\\0\\0\\0\\0\\1",
           b"1e400", b"1,5", b"  2.5 ", b"0\\0", b"-1\\1", b"1e-9\\1e9", b"99999\\-99999\\0"]
_UI = [b"", b"1.2.3", b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2",
       b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.5", b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.80",
       b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.5.1.4.1.1.4",
       b"1.2.840.10008.5.1.4.1.1.4.1", b"1.2.840.10008.1.3.10", b"9" * 70, b"\x00", b"0.0"]
_CS = [b"", b"MONOCHROME1", b"MONOCHROME2", b"RGB", b"PALETTE COLOR", b"YBR_FULL_422", b"MOSAIC",
       b"ORIGINAL\\PRIMARY\\M\\MOSAIC", b"CT", b"MR", b"\\\\\\", b"A" * 20, b"US", b"ISO_IR 192", b"ISO 2022 IR 87"]
_TEXT = [b"", b"\xff\xfe\xfd", b"x" * 300, b"\\", b"\x00", b"\x1b$B", b"  "]
_US = [0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 64, 255, 256, 4096, 32767, 32768, 65535]
_UL = [0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20, 0x00200032, 0x00209057, 0x00280010]
_FLOATS = [0.0, -1.0, 1.0, float("nan"), float("inf"), -float("inf"), 1e308, 5e-324]
_BYTES = [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff", b"\x00\x80", b"\xfe\xff\x00\xe0",
          b"\xfe\xff\xdd\xe0", b"\x7f\xff\xff\xff", b"UN", b"SQ", b"OB\x00\x00"]
_VRS = ["US", "SS", "UL", "IS", "DS", "CS", "UI", "LO", "SQ", "OB", "OW", "UN", "FD", "FL", "AT"]


def _values(vr: str, rng: random.Random, old: bytes | None) -> bytes:
    """A hostile value for an element of ``vr`` (``old``: its current raw bytes, if any)."""
    if vr in ("US", "SS"):
        choice = rng.random()
        if choice < 0.8:
            return struct.pack("<H", rng.choice(_US)) * rng.choice((1, 1, 1, 2, 3))
        return rng.choice((b"", b"\x01", b"\x01\x00\x00\x00\x00"))
    if vr in ("UL", "SL", "AT"):
        return struct.pack("<I", rng.choice(_UL)) * rng.choice((1, 1, 2)) if rng.random() < 0.85 else rng.choice((b"", b"\x01\x02"))
    if vr in ("FD", "FL"):
        fmt = "<d" if vr == "FD" else "<f"
        pick = [v if vr == "FD" or abs(v) < 1e38 else float("inf") for v in _FLOATS]
        return b"".join(struct.pack(fmt, rng.choice(pick)) for _ in range(rng.choice((1, 1, 2, 3)))) \
            if rng.random() < 0.85 else b"\x01\x02\x03"
    if vr == "IS":
        return rng.choice(_NUM_IS)
    if vr == "DS":
        return rng.choice(_NUM_DS)
    if vr == "UI":
        return rng.choice(_UI)
    if vr == "CS":
        return rng.choice(_CS)
    if vr in ("OB", "OW", "OF", "OD", "OL", "UN") and old is not None:
        cut = rng.choice((0, 1, 2, 3, len(old) // 2, len(old) // 2 + 1, max(len(old) - 2, 0), len(old) + 4))
        return old[:cut] if cut <= len(old) else old + bytes(cut - len(old))
    return rng.choice(_TEXT)


def _walk(ds: Dataset, path: tuple = (), depth: int = 0, out: list | None = None) -> list[tuple]:
    """Paths (keywords / tags and item indices) of the elements of ``ds``, into the first items of sequences."""
    out = [] if out is None else out
    for elem in ds:
        p = (*path, elem.keyword or int(elem.tag))  # keywords where known: recipes stay readable
        out.append((p, elem.VR))
        if elem.VR == "SQ" and depth < 3 and elem.value is not None:
            for i, item in enumerate(list(elem.value)[:3]):
                _walk(item, (*p, i), depth + 1, out)
    return out


def _parent(ds: Dataset, path: list) -> Dataset | None:
    """The dataset that holds the element at ``path`` (None when the path no longer exists)."""
    node = ds
    for i in range(0, len(path) - 1, 2):
        tag, index = path[i], path[i + 1]
        if Tag(tag) not in node:
            return None
        seq = node[Tag(tag)].value
        if not isinstance(seq, (list, DicomSequence)) or index >= len(seq):
            return None
        node = seq[index]
    return node


def _apply_element(ds: Dataset, op: list) -> bool:
    """Apply one element op to ``ds``: ``["set", f, path, vr, hex]``, ``["del", f, path]``,
    ``["items", f, path, n]``. Returns False when the op does not apply (the element is gone)."""
    kind, path = op[0], op[2]
    target = ds.file_meta if path and path[0] == "meta" else ds
    path = path[1:] if path and path[0] == "meta" else path
    parent = _parent(target, path)
    if parent is None:
        return False
    tag = Tag(path[-1])
    if kind == "del":
        if tag not in parent:
            return False
        del parent[tag]
        return True
    if kind == "items":
        if tag not in parent or parent[tag].VR != "SQ":
            return False
        items = list(parent[tag].value or [])
        n = op[3]
        parent[tag].value = DicomSequence(items[:n] if n <= len(items) else items + [Dataset()] * (n - len(items)))
        return True
    vr, value = op[3], bytes.fromhex(op[4])
    if vr == "SQ":
        parent[tag] = pydicom.DataElement(tag, "SQ", DicomSequence([Dataset()] if value else []))
        return True
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    implicit, little = (False, True)  # file meta: always explicit VR little endian
    if target is ds and ds.original_encoding[0] is not None:
        implicit, little = ds.original_encoding
    if not little and vr in ("US", "SS", "UL", "SL", "AT", "FD", "FL", "OW"):
        value = _swap(vr, value)
    parent[tag] = RawDataElement(tag, vr, len(value), value, 0, implicit, little)
    return True


def _swap(vr: str, value: bytes) -> bytes:
    """Little-endian binary ``value`` as big endian (whole words only; a ragged tail kept as it is)."""
    size = {"US": 2, "SS": 2, "OW": 2, "UL": 4, "SL": 4, "AT": 2, "FL": 4, "FD": 8}[vr]
    whole = len(value) - len(value) % size
    return b"".join(value[i : i + size][::-1] for i in range(0, whole, size)) + value[whole:]


def _safely(apply, ds: Dataset, op: list) -> bool:
    """``apply(ds, op)``; False (the op is left out) when pydicom refuses the edit itself (a private
    element is converted as it is set)."""
    try:
        return apply(ds, op)
    except Exception:
        return False


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _apply_bytes(data: bytes, op: list) -> bytes:
    """``["put", f, at, hex]``, ``["ins", f, at, hex]``, ``["cut", f, at, n]``, ``["trunc", f, at]``."""
    kind, at = op[0], op[2]
    at = min(at, len(data))
    if kind == "put":
        new = bytes.fromhex(op[3])
        return data[:at] + new + data[at + len(new) :]
    if kind == "ins":
        return data[:at] + bytes.fromhex(op[3]) + data[at:]
    if kind == "cut":
        return data[:at] + data[at + op[3] :]
    return data[:at]


ELEMENT_OPS, BYTE_OPS, FILE_OPS = ("set", "del", "items"), ("put", "ins", "cut", "trunc"), ("drop", "copy")


@dataclass
class Case:
    """A recipe (seed name, ops, resample) and the files it makes."""

    seed: str
    ops: list[list]
    resample: bool
    files: dict[str, bytes] = field(default_factory=dict)

    def recipe(self) -> dict:
        return {"seed": self.seed, "resample": self.resample, "ops": self.ops}


def build_case(seed: Seed, ops: list[list], resample: bool = False) -> Case:
    """Apply the recipe ``ops`` to ``seed`` (deterministic): element ops, then byte ops, then file ops.

    Each op names the file it acts on by its index in the seed's sorted file names. Ops that no longer
    apply are dropped from the case's recipe, so a recipe replays to the same files."""
    names = list(seed.files)
    files = dict(seed.files)
    kept = []
    by_file: dict[int, list[list]] = {}
    for op in ops:
        by_file.setdefault(op[1], []).append(op)
    for f, file_ops in sorted(by_file.items()):
        if f >= len(names):
            continue
        name = names[f]
        element_ops = [op for op in file_ops if op[0] in ELEMENT_OPS]
        if element_ops:
            try:
                ds = pydicom.dcmread(io.BytesIO(files[name]), force=True)
            except Exception:
                ds = None
            if ds is not None:
                applied = [op for op in element_ops if _safely(_apply_element, ds, op)]
                try:
                    files[name] = _encode(ds)
                    kept += applied
                except Exception:
                    pass  # pydicom cannot encode it: the file stays as it was
        for op in file_ops:
            if op[0] in BYTE_OPS:
                files[name] = _apply_bytes(files[name], op)
                kept.append(op)
    for op in ops:
        if op[0] in FILE_OPS and op[1] < len(names) and names[op[1]] in files:
            if op[0] == "drop":
                del files[names[op[1]]]
            else:
                files[f"copy_{names[op[1]]}"] = files[names[op[1]]]
            kept.append(op)
    return Case(seed.name, kept, resample, files)


class Mutator:
    """Random recipes over the seeds: 1-4 element ops and 0-3 byte ops on one or two files, sometimes a
    file dropped or doubled; ``case(i)`` depends only on the mutator's seed and ``i``."""

    def __init__(self, seeds: list[Seed], seed: int = 0) -> None:
        self.seeds = seeds
        self.seed = seed
        self._paths: dict[tuple[str, str], list[tuple]] = {}

    def _elements(self, seed: Seed, name: str) -> list[tuple]:
        key = (seed.name, name)
        if key not in self._paths:
            ds = pydicom.dcmread(io.BytesIO(seed.files[name]), force=True)
            paths = [(list(p), vr) for p, vr in _walk(ds)]
            paths += [(["meta", e.keyword or int(e.tag)], e.VR) for e in ds.file_meta if e.tag != 0x00020000]
            self._paths[key] = paths
        return self._paths[key]

    def case(self, i: int) -> Case:
        rng = random.Random(f"{self.seed}:{i}")
        seed = self.seeds[rng.randrange(len(self.seeds))]
        names = list(seed.files)
        targets = {rng.randrange(len(names)) for _ in range(1 if rng.random() < 0.8 else 2)}
        ops: list[list] = []
        for f in sorted(targets):
            elements = self._elements(seed, names[f])
            hot = [e for e in elements if Tag(e[0][-1]) in _WANTED]
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
                r = rng.random()
                if r < 0.1:  # add an attribute the file lacks (top level)
                    kw = rng.choice(sorted(ADDED))
                    vr = ADDED[kw]
                    ops.append(["set", f, [kw], vr, _values(vr, rng, None).hex()])
                    continue
                path, vr = rng.choice(hot if hot and r < 0.75 else elements)
                if r < 0.82:
                    ops.append(["del", f, path])
                elif vr == "SQ":
                    ops.append(["items", f, path, rng.choice((0, 0, 1, 2, 5))])
                else:
                    if r > 0.95:
                        vr = rng.choice(_VRS)
                    old = self._old_value(seed, names[f], path)
                    ops.append(["set", f, path, vr, _values(vr, rng, old).hex()])
            for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 3))):
                size = len(seed.files[names[f]])
                at = self._byte_offset(rng, seed.files[names[f]])
                kind = rng.choice(BYTE_OPS + ("put", "put"))
                if kind == "put":
                    data = rng.choice(_BYTES) if rng.random() < 0.5 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
                    ops.append(["put", f, at, data.hex()])
                elif kind == "ins":
                    ops.append(["ins", f, at, bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))).hex()])
                elif kind == "cut":
                    ops.append(["cut", f, at, rng.randint(1, 64)])
                else:
                    ops.append(["trunc", f, rng.randrange(size)])
        if len(names) > 1 and rng.random() < 0.1:
            ops.append([rng.choice(FILE_OPS), rng.randrange(len(names))])
        return build_case(seed, ops, resample=rng.random() < 0.25)

    def _old_value(self, seed: Seed, name: str, path: list) -> bytes | None:
        if path[0] == "meta":
            return None
        try:
            ds = pydicom.dcmread(io.BytesIO(seed.files[name]), force=True)
            parent = _parent(ds, path)
            raw = parent.get_item(Tag(path[-1]))
            return bytes(raw.value) if isinstance(raw.value, (bytes, bytearray)) else None
        except Exception:
            return None

    @staticmethod
    def _byte_offset(rng: random.Random, data: bytes) -> int:
        """Anywhere, or (half the time) just after the header of an element the reader cares about."""
        if rng.random() < 0.5:
            tag = rng.choice((0x00280010, 0x00280011, 0x00280100, 0x00280008, 0x00200032, 0x00200037, 0x00280030,
                              0x7FE00010, 0x00281053, 0x52009230, 0x52009229, 0x00020010, 0x00020000))
            needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
            hits = [m.start() for m in re.finditer(re.escape(needle), data)]
            if hits:
                return rng.choice(hits) + rng.randrange(12)
        return rng.randrange(len(data))


# --------------------------------------------------------------------------------------------- target


class Hang(BaseException):
    """Raised by SIGALRM when a case runs past the time limit (a BaseException: never swallowed)."""


def read_case(folder: Path, resample: bool = False) -> str:
    """Read ``folder`` as ``monai-sr enhance`` does, every candidate series (at most 4); "read" when at
    least one volume came back, else the MonaiSRError is raised. Any other exception is a crash; a volume
    whose shape is not the one the headers promised raises AssertionError (a crash too)."""
    from monai_sr.errors import MonaiSRError
    from monai_sr.io.dicom.discover import find_series, format_series_table
    from monai_sr.io.dicom.headers import source_headers
    from monai_sr.io.volume_source import InputScan, open_volume

    candidates, notes = find_series(folder)
    format_series_table(candidates)  # `monai-sr series`: every candidate described
    first_error = None
    read = 0
    for c in candidates[:4]:
        choice = None if len(candidates) == 1 else c.selector
        scan = InputScan(folder, "dicom", choice, list(candidates), list(notes))
        try:
            source = open_volume(folder, series=choice, resample=resample, scan=scan)
            n = source.shape[2]
            half = max(1, n // 2)
            blocks = [source.read(0, half)] + ([source.read(half, n)] if half < n else [])
            volume = np.concatenate(blocks, axis=2)
            if volume.shape != tuple(source.shape) or volume.dtype != np.float32:
                raise AssertionError(f"volume {volume.shape} {volume.dtype}, header promised {tuple(source.shape)}")
            source_headers(source.meta)
            read += 1
        except MonaiSRError as exc:
            first_error = first_error or exc
    if not read and first_error is not None:
        raise first_error
    return "read"


@contextlib.contextmanager
def _time_limit(seconds: float):
    def fire(signum, frame):
        raise Hang(f"case ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _limit_memory(mib: int) -> None:
    """Limit the data segment to what the process holds now plus ``mib`` MiB (Linux; no-op elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
        now = int(re.search(r"VmData:\s+(\d+)", status).group(1)) * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (now + (mib << 20), resource.getrlimit(resource.RLIMIT_DATA)[1]))
    except (OSError, AttributeError, ValueError, resource.error):
        pass


def _signature(exc: BaseException) -> str:
    """Exception type and the innermost frame in monai_sr (else the innermost frame): one per bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}monai_sr{os.sep}" in f.filename]
    f = (ours or frames or [None])[-1]
    where = f"{Path(f.filename).name}:{f.lineno}" if f is not None else "?"
    return f"{type(exc).__name__}@{where}"


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for p in folder.iterdir():
        p.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)


def run_one(case: Case, folder: Path, time_limit: float) -> tuple[str, BaseException | None]:
    """Write the case into ``folder`` and read it: (outcome, exception)."""
    from monai_sr.errors import MonaiSRError

    _write(folder, case.files)
    try:
        with _time_limit(time_limit):
            return read_case(folder, case.resample), None
    except Hang as exc:
        return "hang", exc
    except MemoryError as exc:
        return "memory", exc
    except MonaiSRError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, MemoryError):  # refused, but only after trying to allocate what a header said
            return "memory", exc
        return "refused", exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # anything else is a crash (a Rust decoder's PanicException is a BaseException)
        return "crash", exc


@contextlib.contextmanager
def stderr_off():
    """File descriptor 2 to /dev/null meanwhile: a Rust decoder's panic hook writes there directly."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def quiet_defaults():
    """pydicom at its defaults (as the CLI runs), its warnings and log records off, numpy's warnings off, no
    Rust backtraces."""
    import logging

    settings = pydicom.config.settings
    old = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.WARN
    level = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    backtrace = os.environ.get("RUST_BACKTRACE")
    os.environ["RUST_BACKTRACE"] = "0"  # a Rust decoder's panic: a line on stderr, not a backtrace
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            settings.reading_validation_mode, settings.writing_validation_mode = old
            logging.disable(level)
            if backtrace is None:
                os.environ.pop("RUST_BACKTRACE", None)
            else:
                os.environ["RUST_BACKTRACE"] = backtrace


def run(cases: int, *, seed: int = 0, time_limit: float = 10.0, out: Path | None = None, start: int = 0,
        progress_every: int = 0, seeds: list[Seed] | None = None) -> dict:
    """Run cases ``start .. start + cases - 1``; return the summary (counts, unique crash signatures with
    one recipe each, wall time, cases per second, load average). Crashes, hangs and memory failures are
    saved under ``out`` (a recipe JSON and the files) when it is given."""
    seeds = seeds if seeds is not None else make_seeds()
    mutator = Mutator(seeds, seed)
    outcomes: Counter = Counter()
    refusals: Counter = Counter()
    bad: dict[str, dict] = {}
    per_seed: Counter = Counter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="monai_sr_fuzz_") as tmp, quiet_defaults(), stderr_off():
        folder = Path(tmp) / "case"
        folder.mkdir()
        for i in range(start, start + cases):
            case = mutator.case(i)
            per_seed[case.seed] += 1
            outcome, exc = run_one(case, folder, time_limit)
            outcomes[outcome] += 1
            if outcome == "refused":
                refusals[type(exc).__name__] += 1
            elif outcome in ("crash", "hang", "memory"):
                sig = f"{outcome}:{_signature(exc)}"
                entry = bad.setdefault(sig, {"count": 0, "case": i, "message": str(exc)[:300], **case.recipe()})
                entry["count"] += 1
                if out is not None and entry["count"] == 1:
                    _save(out, sig, entry, case, exc)
            if progress_every and (i - start + 1) % progress_every == 0:
                dt = time.perf_counter() - t0
                print(f"{i - start + 1} cases, {dict(outcomes)}, {dt:.0f} s, {(i - start + 1) / dt:.1f} cases/s, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
    seconds = time.perf_counter() - t0
    return {
        "cases": cases, "seed": seed, "start": start, "seconds": round(seconds, 1),
        "cases_per_s": round(cases / seconds, 1) if seconds else None, "loadavg": [round(v, 2) for v in os.getloadavg()],
        "outcomes": dict(outcomes), "refusals": dict(refusals), "seeds": dict(per_seed),
        "crashes": sum(outcomes[k] for k in ("crash", "memory")), "hangs": outcomes["hang"],
        "signatures": bad,
    }


def _save(out: Path, sig: str, entry: dict, case: Case, exc: BaseException) -> None:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", sig)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in case.files.items():
        (folder / fname).write_bytes(data)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    (out / f"{name}.json").write_text(json.dumps({**entry, "traceback": text}, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="first case number (case i depends only on --seed and i)")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per case before it counts as a hang")
    p.add_argument("--memory-mib", type=int, default=1024, help="data segment allowed above the start (MiB)")
    p.add_argument("--out", type=Path, default=None, help="folder for the recipes and files of crashes")
    p.add_argument("--progress", type=int, default=0, help="print a line every N cases")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument("--replay", type=int, default=None, help="build and read case N again, traceback shown")
    p.add_argument("--write-corpus", action="store_true",
                   help="remake tests/fuzz/corpus/ from data/sample/ (moves the saved regressions' byte offsets)")
    args = p.parse_args(argv)
    if args.write_corpus:
        for folder in write_corpus():
            print(folder)
        return 0
    seeds = make_seeds()
    _limit_memory(args.memory_mib)
    if args.replay is not None:
        case = Mutator(seeds, args.seed).case(args.replay)
        print(json.dumps(case.recipe()))
        with tempfile.TemporaryDirectory() as tmp, quiet_defaults():
            outcome, exc = run_one(case, Path(tmp), args.time_limit)
        print(outcome, "" if exc is None else "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return 0 if outcome in ("read", "refused") else 1
    summary = run(args.cases, seed=args.seed, time_limit=args.time_limit, out=args.out, start=args.start,
                  progress_every=args.progress, seeds=seeds)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"cases {summary['cases']}  seconds {summary['seconds']}  cases/s {summary['cases_per_s']}  "
              f"load {summary['loadavg']}")
        print(f"outcomes {summary['outcomes']}")
        print(f"crashes {summary['crashes']}  hangs {summary['hangs']}")
        for sig, entry in sorted(summary["signatures"].items(), key=lambda kv: -kv[1]["count"]):
            print(f"  {entry['count']:6d}  {sig}  (case {entry['case']}, seed {entry['seed']}): {entry['message'][:160]}")
    return 0 if summary["crashes"] == 0 and summary["hangs"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
