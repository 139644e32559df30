"""The hostile-input corpus of issue 16, made by code (no committed binaries): each :class:`Case` builds one
input from a small real series (a crop of the sample, :func:`helpers.crop_series`) or a small NIfTI file,
and says what ``monai-sr enhance`` must do with it: refuse it (exit 1, one line naming the culprit file
and, where one is at fault, the tag, and the cause) or accept it with a note that says what was done.

:data:`CASES` maps a case name to its :class:`Case`; ``tests/hostile/test_corpus.py`` runs them all
through the real entry point in parallel workers. To add a case: a builder ``build(folder, base) -> input``
that writes the input inside ``folder`` (``base`` holds the clean sources), and what must happen.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag

__all__ = ["Base", "Case", "CASES", "lenient_writing"]

SLICES = 6  # the base series: 40 x 48 x 6, IM0001.dcm .. IM0006.dcm
MIDDLE, LAST = 2, SLICES - 1


@dataclass(frozen=True)
class Base:
    """The clean sources every case starts from: ``series`` (a 6-slice MR series folder), ``rle`` (the
    same series RLE-compressed)."""

    series: Path
    rle: Path


@dataclass(frozen=True)
class Case:
    """One hostile input and what must happen to it.

    ``refuse``: substrings of the one error line (besides the culprit's path); empty means it is accepted.
    ``culprit``: the file the error must name, relative to the input (``""``: the input itself).
    ``note``: accepted cases: a substring of a ``note`` line of the summary.
    ``output``: the output's name (a folder: a derived DICOM series; ``.nii.gz``: NIfTI).
    """

    build: Callable[[Path, Base], Path]
    refuse: tuple[str, ...] = ()
    culprit: str = ""
    note: str | None = None
    output: str = "out"
    args: tuple[str, ...] = ()
    as_user: bool = False  # run as an unprivileged user (permissions mean nothing to root)

    @property
    def accepted(self) -> bool:
        return not self.refuse


@contextlib.contextmanager
def lenient_writing() -> Iterator[None]:
    """pydicom writes the invalid values these cases need (tests run with strict validation)."""
    settings = pydicom.config.settings
    old = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = old


# --- DICOM builders ---------------------------------------------------------------------------------------

def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def name(i: int) -> str:
    """The file name of slice ``i`` (0-based) of the base series."""
    return f"IM{i + 1:04d}.dcm"


def raw(ds: pydicom.Dataset, tag: int, vr: str, value: bytes) -> None:
    """Store ``value`` as it is (pydicom would refuse to write most of these values)."""
    value += b" " if len(value) % 2 else b""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def series(edit: Callable[[pydicom.Dataset], object] | None = None, which=(MIDDLE,), src: str = "series",
           after: Callable[[Path], object] | None = None) -> Callable[[Path, Base], Path]:
    """A builder: the base series (or its RLE twin) with ``edit(ds)`` applied to slices ``which``
    (``"all"``), then ``after(folder)`` for file-level changes."""

    def build(folder: Path, base: Base) -> Path:
        out = folder / "series"
        shutil.copytree(getattr(base, src), out)
        files = _files(out)
        for i in (range(len(files)) if which == "all" else which):
            if edit is not None:
                ds = pydicom.dcmread(files[i])
                edit(ds)
                ds.save_as(files[i])
        if after is not None:
            after(out)
        return out

    return build


def setter(**values) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        for key, value in values.items():
            if value is None:
                delattr(ds, key) if key in ds else None
            else:
                setattr(ds, key, value)

    return edit


def raw_setter(tag: int, vr: str, value: bytes) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: raw(ds, tag, vr, value)


def truncate(i: int, keep: int | float) -> Callable[[Path], None]:
    """Cut slice ``i``'s file to ``keep`` bytes (a float: that fraction of it)."""

    def after(folder: Path) -> None:
        f = _files(folder)[i]
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])

    return after


def remove(i: int) -> Callable[[Path], None]:
    return lambda folder: _files(folder)[i].unlink()


def add_file(filename: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / filename).write_bytes(data)


def _shift_position(mm: float, *, along: str = "normal") -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        vec = np.cross(iop[:3], iop[3:]) if along == "normal" else iop[:3]
        ds.ImagePositionPatient = [f"{float(v):.6f}" for v in np.asarray([float(v) for v in ds.ImagePositionPatient]) + mm * vec]

    return edit


def _tilt(folder: Path) -> None:
    """Shift each slice along its row direction in proportion to its index: a sheared (tilted) stack."""
    for k, f in enumerate(_files(folder)):
        ds = pydicom.dcmread(f)
        _shift_position(0.5 * k, along="row")(ds)
        ds.save_as(f)


def _same_position_as_neighbour(folder: Path) -> None:
    files = _files(folder)
    ipp = pydicom.dcmread(files[MIDDLE - 1]).ImagePositionPatient
    ds = pydicom.dcmread(files[MIDDLE])
    ds.ImagePositionPatient = ipp
    ds.save_as(files[MIDDLE])


def _second_series(count: int) -> Callable[[Path], None]:
    """Give the last ``count`` slices another Series Instance UID and number (two series in one folder)."""

    def after(folder: Path) -> None:
        for f in _files(folder)[-count:]:
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
            ds.SeriesNumber = 99
            ds.save_as(f)

    return after


def _copy_of(i: int, new: str) -> Callable[[Path], None]:
    return lambda folder: shutil.copy(_files(folder)[i], folder / new)


def _echo(folder: Path) -> None:
    """Every slice once more as a second echo (EchoNumbers 2, new SOP UIDs): two stacks in one series."""
    for f in _files(folder):
        ds = pydicom.dcmread(f)
        ds.EchoNumbers = 2
        ds.EchoTime = 30
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"E2_{f.name}")


def _pixels(transform: Callable[[bytes, pydicom.Dataset], bytes]) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.PixelData = transform(ds.PixelData, ds)

    return edit


def _rle_fragment(transform: Callable[[bytes], bytes]) -> Callable[[pydicom.Dataset], None]:
    """Change the one RLE fragment of a compressed slice and encapsulate it again."""
    from pydicom.encaps import generate_fragmented_frames

    def edit(ds: pydicom.Dataset) -> None:
        (frame,) = [b"".join(f) for f in generate_fragmented_frames(ds.PixelData, number_of_frames=1)]
        ds.PixelData = encapsulate([transform(frame)])

    return edit


def _multiframe(frames: int, declared: bytes | None = None) -> Callable[[pydicom.Dataset], None]:
    """Slice data repeated ``frames`` times in one file, NumberOfFrames ``declared`` (default: frames)."""

    def edit(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData * frames
        raw(ds, 0x00280008, "IS", declared if declared is not None else str(frames).encode())

    return edit


def _claim_rle(i: int) -> Callable[[Path], None]:
    """Slice ``i``'s file meta claims RLE Lossless over its native pixel data (the UIDs have the same length)."""

    def after(folder: Path) -> None:
        f = _files(folder)[i]
        data = f.read_bytes()
        assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
        f.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00"))

    return after


def _unreadable_subfolder(folder: Path) -> None:
    sub = folder / "more"
    sub.mkdir()
    for f in _files(folder)[MIDDLE:]:
        f.rename(sub / f.name)
    sub.chmod(0o000)


def _unreadable_file(folder: Path) -> None:
    _files(folder)[MIDDLE].chmod(0o000)


def _symlink(target: str, link: str = "link.dcm") -> Callable[[Path], None]:
    def after(folder: Path) -> None:
        os.symlink(folder / target if target != "." else folder, folder / link)

    return after


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "pipe.dcm")


def _dicomdir(missing: bool) -> Callable[[Path], None]:
    """A DICOMDIR (pydicom's FileSet) over the series; the input is the DICOMDIR file."""

    def after(folder: Path) -> None:
        from pydicom.fileset import FileSet

        fs = FileSet()
        for f in _files(folder):
            fs.add(f)
        fs.write(folder / "fs")
        if missing:
            victim = sorted(p for p in (folder / "fs").rglob("*") if p.is_file() and p.name != "DICOMDIR")[MIDDLE]
            victim.unlink()

    return after


def _single(build: Callable[[Path, Base], Path], pick: str) -> Callable[[Path, Base], Path]:
    """The input is the one file ``pick`` inside what ``build`` made."""

    def wrapped(folder: Path, base: Base) -> Path:
        return build(folder, base) / pick

    return wrapped


# --- NIfTI builders ---------------------------------------------------------------------------------------

AFFINE = np.diag([1.2, 1.2, 2.0, 1.0])


def _volume(shape=(24, 20, 4), dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(0).random(shape) * 300).astype(dtype)


def nifti(data: np.ndarray | Callable[[], np.ndarray] | None = None, *, affine=AFFINE, fname: str = "in.nii.gz",
          header: dict | None = None, raw_bytes: Callable[[bytes], bytes] | None = None,
          ni2: bool = False) -> Callable[[Path, Base], Path]:
    """A builder of one NIfTI file: ``data`` (default a 24 x 20 x 4 float32 volume), header ``fields`` set
    as stored (nibabel mends some on save), then ``raw_bytes`` applied to the uncompressed file bytes."""

    def build(folder: Path, base: Base) -> Path:
        arr = _volume() if data is None else (data() if callable(data) else data)
        img = (nib.Nifti2Image if ni2 else nib.Nifti1Image)(arr, affine, dtype=arr.dtype)
        if header is None or "sform_code" not in header:
            img.set_sform(affine, code=1)
        blob = img.to_bytes()
        if header:
            hdr_cls = nib.Nifti2Header if ni2 else nib.Nifti1Header
            size = hdr_cls.sizeof_hdr
            hdr = hdr_cls.from_fileobj(io.BytesIO(blob), check=False)
            for key, value in header.items():
                hdr[key] = value
            blob = hdr.binaryblock + blob[size:]
        if raw_bytes is not None:
            blob = raw_bytes(blob)
        path = folder / fname
        path.write_bytes(gzip.compress(blob, mtime=0) if fname.endswith(".gz") else blob)
        return path

    return build


def _nan_at(*where, value=np.nan, count: int = 1) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        arr = _volume()
        for w in where[:count] if where else [(3, 4, 2)]:
            arr[w] = value
        return arr

    return make


def _file(fname: str, data: bytes) -> Callable[[Path, Base], Path]:
    def build(folder: Path, base: Base) -> Path:
        path = folder / fname
        path.write_bytes(data)
        return path

    return build


def _gz_cut(fraction: float) -> Callable[[Path, Base], Path]:
    def build(folder: Path, base: Base) -> Path:
        path = nifti()(folder, base)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return build


def _link_input(kind: str) -> Callable[[Path, Base], Path]:
    def build(folder: Path, base: Base) -> Path:
        link = folder / "in.nii.gz"
        os.symlink(folder / "nowhere.nii.gz" if kind == "dangling" else link, link)
        return link

    return build


def _dir_named(fname: str) -> Callable[[Path, Base], Path]:
    def build(folder: Path, base: Base) -> Path:
        (folder / fname).mkdir()
        return folder / fname

    return build


def _sheared(shear: float) -> np.ndarray:
    a = AFFINE.copy()
    a[0, 1] = shear
    return a


def _header_cut(keep: int) -> Callable[[bytes], bytes]:
    return lambda blob: blob[:keep]


# --- the corpus ---------------------------------------------------------------------------------------------

NII = "out.nii.gz"
DS, IS = "DS", "IS"
SLOPE, INTERCEPT, FRAMES = 0x00281053, 0x00281052, 0x00280008
IPP, IOP, SPACING = 0x00200032, 0x00200037, 0x00280030
M = name(MIDDLE)

CASES: dict[str, Case] = {
    # Rescale (Modality LUT): text, several values, 0, NaN, Inf
    "dcm_slope_text": Case(series(raw_setter(SLOPE, DS, b"abc")), ("RescaleSlope (0028,1053)", "not a number"), M),
    "dcm_slope_two_values": Case(series(raw_setter(SLOPE, DS, b"1\\2")), ("RescaleSlope (0028,1053) holds 2 values",), M),
    "dcm_slope_zero": Case(series(raw_setter(SLOPE, DS, b"0")), ("RescaleSlope (0028,1053) is 0",), M),
    "dcm_slope_zero_last": Case(series(raw_setter(SLOPE, DS, b"0"), which=(LAST,)), ("RescaleSlope (0028,1053) is 0",), name(LAST)),
    "dcm_slope_nan": Case(series(raw_setter(SLOPE, DS, b"nan")), ("RescaleSlope (0028,1053)", "not a finite number"), M),
    "dcm_slope_inf": Case(series(raw_setter(SLOPE, DS, b"inf")), ("RescaleSlope (0028,1053)", "not a finite number"), M),
    "dcm_intercept_text": Case(series(raw_setter(INTERCEPT, DS, b"x")), ("RescaleIntercept (0028,1052)", "not a number"), M),
    "dcm_intercept_nan": Case(series(raw_setter(INTERCEPT, DS, b"NaN")), ("RescaleIntercept (0028,1052)", "not a finite"), M),
    "dcm_intercept_three_values": Case(series(raw_setter(INTERCEPT, DS, b"1\\2\\3")), ("RescaleIntercept (0028,1052) holds 3",), M),
    "dcm_modality_lut_broken": Case(series(setter(ModalityLUTSequence=pydicom.Sequence([pydicom.Dataset()]))),
                                    ("Modality LUT Sequence (0028,3000)",), M),
    # NumberOfFrames / matrix: text, 0, negative, more than the file holds, memory bombs
    "dcm_frames_text": Case(series(raw_setter(FRAMES, IS, b"abc")), ("NumberOfFrames (0028,0008) is 'abc'",), M),
    "dcm_frames_zero": Case(series(raw_setter(FRAMES, IS, b"0")), ("NumberOfFrames (0028,0008) is 0",), M),
    "dcm_frames_negative": Case(series(raw_setter(FRAMES, IS, b"-3")), ("NumberOfFrames (0028,0008) is -3",), M),
    "dcm_frames_two_in_one": Case(series(raw_setter(FRAMES, IS, b"2")), ("NumberOfFrames (0028,0008) 2", "more than the file holds"), M),
    "dcm_frames_bomb": Case(series(raw_setter(FRAMES, IS, b"99999999")), ("NumberOfFrames (0028,0008) 99999999", "more than the file holds"), M),
    "dcm_frames_bomb_last": Case(series(raw_setter(FRAMES, IS, b"2147483647"), which=(LAST,)), ("NumberOfFrames (0028,0008) 2147483647",), name(LAST)),
    "dcm_matrix_bomb": Case(series(setter(Rows=65535, Columns=65535)), ("Rows (0028,0010) 65535", "Columns (0028,0011) 65535"), M),
    "dcm_rows_zero": Case(series(setter(Rows=0)), ("Rows (0028,0010)",), M),
    "dcm_columns_differ": Case(series(setter(Columns=20)), ("matrix 48x20 differs",), M),
    "dcm_multiframe_in_classic_series": Case(series(_multiframe(2)), ("found 2 series/stacks",), ""),
    "dcm_samples_per_pixel_3": Case(series(setter(SamplesPerPixel=3, PhotometricInterpretation="RGB")), ("need 11520 bytes of pixel data",), M),
    "dcm_bits_allocated_12": Case(series(setter(BitsAllocated=12)), ("BitsAllocated (0028,0100)",), M),
    "dcm_bits_stored_over_allocated": Case(series(setter(BitsStored=20, HighBit=19)), ("BitsStored (0028,0101) is 20",), M),
    "dcm_mosaic": Case(series(setter(ImageType=["ORIGINAL", "PRIMARY", "M", "MOSAIC"]), which="all"), ("Siemens mosaic",), name(0)),
    # pixel data: truncated, oversized, missing, compressed and broken
    "dcm_pixels_truncated_middle": Case(series(after=truncate(MIDDLE, 0.7)), ("damaged DICOM file",), M),
    "dcm_pixels_truncated_last": Case(series(after=truncate(LAST, 0.7)), ("damaged DICOM file",), name(LAST)),
    "dcm_pixels_short_element": Case(series(_pixels(lambda b, ds: b[:1000])), ("need 3840 bytes of pixel data",), M),
    "dcm_pixels_oversized": Case(series(_pixels(lambda b, ds: b + bytes(512))), note=None),  # the frame's bytes are read
    "dcm_pixels_missing_middle": Case(series(setter(PixelData=None)), ("no pixel data",), M),
    "dcm_pixels_missing_last": Case(series(setter(PixelData=None), which=(LAST,)), ("no pixel data",), name(LAST)),
    "dcm_rle_ok": Case(series(src="rle"), note=None),
    "dcm_rle_fragment_truncated": Case(series(_rle_fragment(lambda b: b[: len(b) // 3]), src="rle"), ("cannot be decoded",), M),
    "dcm_rle_fragment_garbage": Case(series(_rle_fragment(lambda b: bytes(range(256)) * 4), src="rle"), ("cannot be decoded",), M),
    "dcm_rle_matrix_bomb": Case(series(setter(Rows=65535, Columns=65535), which="all", src="rle"),
                                ("Rows (0028,0010) 65535 x Columns (0028,0011) 65535 would decode to", "refused before decoding"), name(0)),
    "dcm_rle_frames_bomb": Case(series(raw_setter(FRAMES, IS, b"99999999"), src="rle"), ("NumberOfFrames (0028,0008) 99999999",), M),
    "dcm_jpeg_ls_garbage": Case(series(lambda ds: (setattr(ds.file_meta, "TransferSyntaxUID", pydicom.uid.JPEGLSLossless),
                                                   setattr(ds, "PixelData", encapsulate([b"\xff\xd8" + bytes(300)]))),
                                       which="all"), ("cannot be decoded",), name(0)),
    "dcm_jpeg2000_garbage": Case(series(lambda ds: (setattr(ds.file_meta, "TransferSyntaxUID", pydicom.uid.JPEG2000Lossless),
                                                    setattr(ds, "PixelData", encapsulate([bytes(range(200))]))),
                                        which=(MIDDLE,)), ("cannot be decoded",), M),
    "dcm_transfer_syntax_unknown": Case(series(lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5.6")),
                                        ("transfer syntax",), M),
    "dcm_compressed_syntax_native_data": Case(series(after=_claim_rle(MIDDLE)), ("RLE Lossless",), M),
    # whole files: damaged, empty, junk, links, permissions
    "dcm_header_truncated_middle": Case(series(after=truncate(MIDDLE, 400)), ("no pixel data", "truncated"), M),
    "dcm_header_truncated_last": Case(series(after=truncate(LAST, 400)), ("no pixel data", "truncated"), name(LAST)),
    "dcm_marker_then_garbage": Case(series(after=add_file("IM0099.dcm", bytes(128) + b"DICM" + bytes(range(256)))),
                                    ("damaged DICOM file",), "IM0099.dcm"),
    "dcm_empty_file_beside": Case(series(after=add_file("IM0000.dcm", b"")), note="skipped empty file IM0000.dcm"),
    "dcm_junk_file_beside": Case(series(after=add_file("README.txt", b"not an image\n")), note="skipped non-DICOM file README.txt"),
    "dcm_slice_replaced_by_empty": Case(series(after=truncate(MIDDLE, 0)), ("missing slice",), ""),
    "dcm_dangling_link": Case(series(after=_symlink("nowhere.dcm")), note="skipped link.dcm"),
    "dcm_link_loop": Case(series(after=_symlink("link.dcm")), note="skipped link.dcm"),
    "dcm_folder_link_loop": Case(series(after=_symlink(".", "loop")), note=None),
    "dcm_fifo_beside": Case(series(after=_fifo), note="pipe.dcm"),
    "dcm_unreadable_subfolder": Case(series(after=_unreadable_subfolder), ("cannot read this folder (Permission denied)",), "more", as_user=True),
    "dcm_unreadable_file": Case(series(after=_unreadable_file), ("cannot read this file (Permission denied)",), M, as_user=True),
    "dcm_empty_folder": Case(lambda folder, base: (folder / "empty").mkdir() or folder / "empty", ("folder is empty",), ""),
    "dcm_only_junk": Case(lambda folder, base: series(after=lambda f: [p.write_bytes(b"junk") for p in _files(f)])(folder, base),
                          ("no DICOM image files found",), ""),
    "dcm_single_empty_file": Case(_file("empty.dcm", b""), ("no DICOM image files found", "1 not DICOM"), ""),
    "dcm_single_garbage_file": Case(_file("garbage.dcm", bytes(128) + b"DICM" + bytes(60)), ("no DICOM image files found",), ""),
    # slices: missing, duplicate, repeated position, several series or stacks
    "dcm_missing_middle_slice": Case(series(after=remove(MIDDLE)), ("missing slice", "--resample"), ""),
    "dcm_missing_middle_resampled": Case(series(after=remove(MIDDLE)), note="--resample filled 1 of 6 slices", args=("--resample",)),
    "dcm_duplicate_file": Case(series(after=_copy_of(MIDDLE, "copy.dcm")), note="skipped copy.dcm: same SOP Instance UID"),
    "dcm_two_slices_one_position": Case(series(after=_same_position_as_neighbour), ("duplicated slice position",), ""),
    "dcm_two_series": Case(series(after=_second_series(3)), ("found 2 series", "--series"), ""),
    "dcm_one_stray_slice": Case(series(after=_second_series(1)), ("found 2 series",), ""),
    "dcm_two_series_chosen": Case(series(after=_second_series(3)), note="read series", args=("--series", "99")),
    "dcm_two_echoes": Case(series(after=_echo), ("stacks",), ""),  # (two echoes)
    "dcm_no_series_uid": Case(series(setter(SeriesInstanceUID=None), which="all"), note=None),
    "dcm_single_slice": Case(series(after=lambda f: [p.unlink() for p in _files(f)[1:]]), note="single slice"),
    # modality
    "dcm_modality_ct": Case(series(setter(Modality="CT"), which="all"), ("is CT (Modality), not MR",), ""),
    "dcm_modality_pt": Case(series(setter(Modality="PT"), which="all"), ("is PT (Modality), not MR",), ""),
    "dcm_modality_ot": Case(series(setter(Modality="OT"), which="all"), ("is OT (Modality), not MR",), ""),
    "dcm_modality_ct_allowed_nifti": Case(series(setter(Modality="CT"), which="all"), note=None, output=NII,
                                          args=("--allow-modality", "CT")),
    "dcm_modality_ct_allowed_dicom": Case(series(setter(Modality="CT"), which="all"), ("would claim to be MR",), "",
                                          args=("--allow-modality", "CT")),
    # geometry: spacing, orientation, position
    "dcm_spacing_zero": Case(series(setter(PixelSpacing=[0, 0]), which="all"), ("PixelSpacing (0028,0030)", "must be positive"), name(0)),
    "dcm_spacing_negative": Case(series(setter(PixelSpacing=[-2, 2]), which="all"), ("PixelSpacing (0028,0030)", "must be positive"), name(0)),
    "dcm_spacing_nan": Case(series(raw_setter(SPACING, DS, b"nan\\2"), which="all"), ("PixelSpacing (0028,0030)", "finite"), name(0)),
    "dcm_spacing_text": Case(series(raw_setter(SPACING, DS, b"a\\b")), ("unreadable PixelSpacing (0028,0030)",), M),
    "dcm_spacing_one_value": Case(series(raw_setter(SPACING, DS, b"2")), ("unreadable PixelSpacing (0028,0030) '2'",), M),
    "dcm_spacing_differs": Case(series(setter(PixelSpacing=[2.5, 2.5])), ("PixelSpacing [2.5, 2.5]", "differs"), M),
    "dcm_spacing_missing": Case(series(setter(PixelSpacing=None)), ("missing PixelSpacing",), M),
    "dcm_orientation_not_perpendicular": Case(series(setter(ImageOrientationPatient=[1, 0, 0, 0.5, 0.866, 0]), which="all"),
                                              ("ImageOrientationPatient (0020,0037)", "not perpendicular"), name(0)),
    "dcm_orientation_zero": Case(series(setter(ImageOrientationPatient=[0, 0, 0, 0, 0, 0]), which="all"),
                                 ("ImageOrientationPatient (0020,0037)", "not unit vectors"), name(0)),
    "dcm_orientation_nan": Case(series(raw_setter(IOP, DS, b"nan\\0\\0\\0\\1\\0")), ("ImageOrientationPatient (0020,0037)", "finite"), M),
    "dcm_orientation_five_values": Case(series(raw_setter(IOP, DS, b"1\\0\\0\\0\\1")), ("ImageOrientationPatient (0020,0037) must hold 6",), M),
    "dcm_orientation_mixed": Case(series(setter(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])), ("mixed orientations",), M),
    "dcm_orientation_missing": Case(series(setter(ImageOrientationPatient=None), which="all"), ("missing ImageOrientationPatient",), name(0)),
    "dcm_position_missing_last": Case(series(setter(ImagePositionPatient=None), which=(LAST,)), ("missing ImagePositionPatient",), name(LAST)),
    "dcm_position_nan": Case(series(raw_setter(IPP, DS, b"0\\nan\\0")), ("ImagePositionPatient (0020,0032)", "finite"), M),
    "dcm_position_text": Case(series(raw_setter(IPP, DS, b"x\\y\\z")), ("ImagePositionPatient (0020,0032)",), M),
    "dcm_position_uneven": Case(series(_shift_position(0.8)), ("--resample",), ""),
    "dcm_gantry_tilt": Case(series(after=_tilt), ("gantry tilt",), ""),
    "dcm_spacing_tag_lies": Case(series(setter(SpacingBetweenSlices=7.5), which="all"), note="SpacingBetweenSlices 7.5 mm contradicts"),
    "dcm_spacing_tag_text": Case(series(raw_setter(0x00180088, DS, b"wide"), which="all"), note="SpacingBetweenSlices"),
    "dcm_thickness_text": Case(series(raw_setter(0x00180050, DS, b"thick"), which="all"), note="SliceThickness"),
    "dcm_thickness_overlap": Case(series(setter(SliceThickness=6), which="all"), note="SliceThickness 6 mm exceeds"),
    # DICOMDIR
    "dcm_dicomdir_ok": Case(_single(series(after=_dicomdir(False)), "fs/DICOMDIR"), note=None),
    "dcm_dicomdir_missing_file": Case(_single(series(after=_dicomdir(True)), "fs/DICOMDIR"), ("DICOMDIR points to 1 missing file",), ""),
    "dcm_dicomdir_damaged": Case(_single(series(after=add_file("DICOMDIR", bytes(128) + b"DICM" + bytes(40))), "DICOMDIR"),
                                 ("DICOMDIR",), ""),
    # NIfTI: voxel values
    "nii_nan_voxel": Case(nifti(_nan_at()), ("1 NaN/Inf voxel(s)",), output=NII),
    "nii_inf_voxel": Case(nifti(_nan_at(value=np.inf)), ("NaN/Inf voxel(s)",), output=NII),
    "nii_minus_inf_voxel": Case(nifti(_nan_at(value=-np.inf)), ("NaN/Inf voxel(s)",), output=NII),
    "nii_all_nan": Case(nifti(np.full((24, 20, 4), np.nan, np.float32)), ("480 NaN/Inf voxel(s) in slice 0",), output=NII),
    "nii_scl_slope_inf": Case(nifti(header=dict(scl_slope=np.inf, scl_inter=0)), note=None, output=NII),  # NIfTI: no scaling
    "nii_scl_slope_nan": Case(nifti(header=dict(scl_slope=np.nan, scl_inter=0)), note=None, output=NII),
    "nii_uint8": Case(nifti(_volume(dtype=np.uint8)), note=None, output=NII),
    "nii_int64": Case(nifti(_volume(dtype=np.int64)), note=None, output=NII),
    "nii_float64": Case(nifti(_volume(dtype=np.float64)), note=None, output=NII),
    "nii_complex": Case(nifti(_volume(dtype=np.complex64)), ("complex",), output=NII),
    "nii_rgb": Case(nifti(header=dict(datatype=128, bitpix=24), raw_bytes=lambda b: b[:352] + bytes(24 * 20 * 4 * 3)),
                    ("RGB",), output=NII),
    "nii_bool_dtype_code": Case(nifti(header=dict(datatype=1, bitpix=1)), ("data code 1 not supported",), output=NII),
    # NIfTI: geometry
    "nii_zero_pixdim": Case(nifti(header=dict(pixdim=[1, 0, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=0)), ("pixdim",), output=NII),
    "nii_negative_pixdim_qform": Case(nifti(header=dict(pixdim=[1, -1, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=1)), ("pixdim",), output=NII),
    "nii_nan_pixdim": Case(nifti(header=dict(pixdim=[1, np.nan, 1, 2, 1, 1, 1, 1], sform_code=0, qform_code=0)), ("not a number",), output=NII),
    "nii_nan_sform": Case(nifti(header=dict(srow_y=[0, np.nan, 0, 0], sform_code=1)), ("affine has non-finite values",), output=NII),
    "nii_singular_sform": Case(nifti(header=dict(srow_y=[0, 0, 0, 0], sform_code=1)), ("affine is singular",), output=NII),
    "nii_nan_qform": Case(nifti(header=dict(quatern_b=np.nan, sform_code=0, qform_code=1)), ("qform",), output=NII),
    "nii_sheared_sform": Case(nifti(affine=_sheared(0.6)), note=None, output=NII),  # a legal NIfTI sform
    "nii_tiny_pixdim": Case(nifti(affine=np.diag([1e-6, 1e-6, 1e-6, 1.0])), note=None, output=NII),
    # NIfTI: dimensions and sizes
    "nii_4d_two_volumes": Case(nifti(_volume((24, 20, 4, 2))), ("shape (24, 20, 4, 2)",), output=NII),
    "nii_4d_one_volume": Case(nifti(_volume((24, 20, 4, 1))), note=None, output=NII),
    "nii_5d": Case(nifti(_volume((24, 20, 4, 1, 3))), ("expected a 3D volume",), output=NII),
    "nii_2d": Case(nifti(_volume((24, 20))), note=None, output=NII),  # one slice: (24, 20, 1), enhanced
    "nii_one_voxel": Case(nifti(_volume((1, 1, 1))), note=None, output=NII),  # 2 x 2 x 1 out: tiny, yet right
    "nii_dim0_nine": Case(nifti(header=dict(dim=[9, 24, 20, 4, 1, 1, 1, 1])), ("cannot read NIfTI",), output=NII),
    "nii_negative_dim": Case(nifti(header=dict(dim=[3, 24, -20, 4, 1, 1, 1, 1])), ("shape (24, -20, 4)",), output=NII),
    "nii_declared_huge": Case(nifti(header=dict(dim=[3, 30000, 30000, 30000, 1, 1, 1, 1]), fname="in.nii"),
                              ("more than the file holds",), output=NII),
    "nii_gz_declared_huge": Case(nifti(header=dict(dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])),
                                 ("more than",), output=NII),
    "nii_truncated_voxels": Case(nifti(fname="in.nii", raw_bytes=lambda b: b[: len(b) // 2]), ("more than the file holds",), output=NII),
    "nii_header_only": Case(nifti(fname="in.nii", raw_bytes=_header_cut(352)), ("more than the file holds",), output=NII),
    "nii_header_cut": Case(nifti(fname="in.nii", raw_bytes=_header_cut(200)), ("cannot read NIfTI",), output=NII),
    "nii_vox_offset_beyond": Case(nifti(fname="in.nii", header=dict(vox_offset=1 << 20)), ("more than the file holds",), output=NII),
    "nii_bad_magic": Case(nifti(header=dict(magic=b"xyz")), ("cannot read NIfTI",), output=NII),
    "nii_gz_truncated": Case(_gz_cut(0.6), ("cannot read NIfTI",), output=NII),
    "nii_gz_header_truncated": Case(_gz_cut(0.05), ("cannot read NIfTI",), output=NII),
    "nii_gz_not_gzip": Case(_file("in.nii.gz", b"this is not gzip data at all" * 20), ("cannot read NIfTI",), output=NII),
    "nii_empty": Case(_file("in.nii", b""), ("empty",), output=NII),
    "nii_gz_empty": Case(_file("in.nii.gz", b""), ("empty",), output=NII),
    "nii_nifti2": Case(nifti(ni2=True), note=None, output=NII),
    # inputs that are not what they say
    "input_missing": Case(lambda folder, base: folder / "nothing.nii.gz", ("no such file",), output=NII),
    "input_dangling_link": Case(_link_input("dangling"), ("no such file",), output=NII),
    "input_link_loop": Case(_link_input("loop"), ("no such file",), output=NII),
    "input_folder_named_nii": Case(_dir_named("in.nii.gz"), ("not a file",), output=NII),
    "input_text_file": Case(_file("notes.txt", b"hello"), ("expected a DICOM series folder",), output=NII),
}
