"""Every crash the fuzzer (tests/fuzz/fuzzer.py) found, replayed from its recipe, and a short seeded fuzz.

A recipe is the seed series' name and the concrete edits the fuzzer made (element edits through pydicom,
then byte edits; see :func:`fuzzer.build_case`), exactly as the fuzzer saved it when the case crashed.
Each case must now be refused with one clear line (a :class:`MonaiSRError` naming a file of the case and
the cause) or, where the file is readable and only the code was at fault, read; what it raised before the
fix is in its comment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monai_sr.errors import MonaiSRError

sys.path.insert(0, str(Path(__file__).parent))
import fuzzer  # noqa: E402

FUZZER = Path(__file__).with_name("fuzzer.py")

READ = None  # the case is read now: what crashed on it was a bug, the file itself is readable

# name: (recipe as the fuzzer saved it, a part of the one-line error it must give now, or READ)
REGRESSIONS = {
    # PanicException (a BaseException) from the Rust RLE decoder escaped every `except Exception`
    "rle_decoder_panic": ({"seed": "pydicom_MR_small_RLE", "resample": False, "ops": [
        ["del", 0, ["StudyInstanceUID"]], ["del", 0, ["InstanceCreationDate"]], ["cut", 0, 4988, 51]]},
        "PanicException"),
    # AttributeError: 'FileDataset' object has no attribute 'Columns' (stack.series_shape)
    "columns_gone": ({"seed": "pydicom_MR_small_padded", "resample": False, "ops": [
        ["del", 0, ["ContrastBolusAgent"]], ["put", 0, 4493, "554e"], ["put", 0, 1363, "7fffffff"]]},
        "(0028,0011)"),
    # AttributeError: no attribute 'BitsAllocated' (pixels._native_frame)
    "bits_allocated_missing": ({"seed": "pydicom_MR_small_jpeg_ls_lossless", "resample": False, "ops": [
        ["del", 0, ["ImagedNucleus"]], ["del", 0, ["BitsAllocated"]], ["del", 0, ["meta", "ImplementationVersionName"]],
        ["del", 0, ["StudyTime"]]]},
        "BitsAllocated (0028,0100) is missing"),
    # TypeError: float() argument must be ... not 'MultiValue' (stack.series_affine, one slice)
    "single_slice_thickness_two_values": ({"seed": "pydicom_MR_small_implicit", "resample": False, "ops": [
        ["del", 0, ["SamplesPerPixel"]], ["del", 0, ["SeriesNumber"]], ["set", 0, ["meta", "SourceApplicationEntityTitle"], "AE", "fffefd"],
        ["set", 0, ["SliceThickness"], "DS", "2d315c31"]]},
        "SliceThickness (0018,0050)"),
    # TypeError: int() argument must be ... not 'list' (stack.series_shape: Rows with three values)
    "rows_three_values": ({"seed": "pydicom_MR_small", "resample": False, "ops": [
        ["del", 0, ["SeriesNumber"]], ["del", 0, ["EchoTime"]], ["del", 0, ["SeriesInstanceUID"]],
        ["set", 0, ["Rows"], "US", "ff00ff00ff00"]]},
        "Rows (0028,0010) holds 3 values"),
    # TypeError: unhashable type: 'MultiValue' (discover._split_stacks)
    "temporal_position_two_values": ({"seed": "pydicom_MR_small_padded", "resample": False, "ops": [
        ["set", 0, ["TemporalPositionIdentifier"], "IS", "315c32"], ["del", 0, ["SOPInstanceUID"]],
        ["del", 0, ["WindowWidth"]], ["ins", 0, 4680, "7649a887eda639254b"]]},
        "declares 4345855 bytes"),
    # TypeError: int() argument must be ... not 'list' (pixels._native_frame: BitsStored with two values)
    "bits_stored_two_values": ({"seed": "pydicom_MR_small_implicit", "resample": False, "ops": [
        ["set", 0, ["BitsStored"], "US", "00100010"]]},
        "BitsStored (0028,0101) holds 2 values"),
    # AttributeError: 'str' object has no attribute 'name' (discover._syntax_name, the series listing)
    "transfer_syntax_nul": ({"seed": "pydicom_MR_small_padded", "resample": False, "ops": [
        ["set", 0, ["meta", "TransferSyntaxUID"], "UI", "00"], ["del", 0, ["HighBit"]]]},
        READ),
    # IndexError: tuple index out of range (discover._split_stacks: one- and multi-frame keys of one series)
    "single_and_multi_frame_in_one_series": ({"seed": "sample_siemens", "resample": False, "ops": [
        ["set", 0, ["SharedFunctionalGroupsSequence"], "SQ", "1b2442"], ["del", 0, ["EchoNumbers"]],
        ["del", 0, ["SOPClassUID"]], ["set", 0, ["meta", "FileMetaInformationVersion"], "OB", ""],
        ["put", 0, 1735, "4f420000"]]},
        READ),
    # NotImplementedError: Unknown Value Representation '0x55 0x00' (pydicom, on first use of the element)
    "unknown_value_representation": ({"seed": "pydicom_MR_small_RLE", "resample": False, "ops": [
        ["del", 0, ["Columns"]], ["put", 0, 443, "00000000"]]},
        "unknown value representation"),
    # OverflowError: cannot convert float infinity to integer (discover._stack_keys)
    "dimension_index_pointer_infinite": ({"seed": "sample_enhanced", "resample": False, "ops": [
        ["set", 0, ["DimensionIndexSequence", 1, "DimensionIndexPointer"], "FL", "0000807f"],
        ["del", 0, ["PixelRepresentation"]],
        ["del", 0, ["SharedFunctionalGroupsSequence", 0, "PixelValueTransformationSequence"]]]},
        "DimensionIndexPointer (0020,9165)"),
    # TypeError: int() argument must be ... not 'NoneType' (frames.check_decodable: empty SamplesPerPixel)
    "samples_per_pixel_empty": ({"seed": "pydicom_MR_small_implicit", "resample": False, "ops": [
        ["del", 0, ["SequenceVariant"]], ["set", 0, ["SamplesPerPixel"], "US", ""], ["del", 0, ["ImageComments"]],
        ["del", 0, ["StudyInstanceUID"]], ["put", 0, 3329, "279cf6"]]},
        READ),
    # MemoryError: a deferred element's length (4 GB) past the end of an 11 kB file, read back blindly
    "deferred_length_past_end": ({"seed": "pydicom_MR_small_jp2klossless", "resample": False, "ops": [
        ["cut", 0, 1527, 18]]},
        "the file has"),
    # BytesLengthException: an FD value of 4 bytes (pydicom, on first use of ImagePositionPatient)
    "position_wrong_length": ({"seed": "pydicom_MR_small_bigendian", "resample": False, "ops": [
        ["set", 0, ["ImagePositionPatient"], "FD", "010203"]]},
        "ImagePositionPatient (0020,0032)"),
    # BytesLengthException in the series listing (MRAcquisitionType as FD of 4 bytes)
    "listing_wrong_length": ({"seed": "pydicom_MR_small_bigendian", "resample": False, "ops": [
        ["set", 0, ["MRAcquisitionType"], "FD", "010203"], ["del", 0, ["WindowCenter"]],
        ["del", 0, ["SmallestImagePixelValue"]], ["set", 0, ["PerFrameFunctionalGroupsSequence"], "SQ", "1b2442"]]},
        READ),
    # TypeError: 'BaseTag' object is not iterable (frames.check_decodable: ImageType as one AT value)
    "image_type_a_tag": ({"seed": "sample_enhanced", "resample": False, "ops": [
        ["set", 0, ["EchoNumbers"], "IS", "3939393939393939"], ["del", 0, ["StudyInstanceUID"]],
        ["set", 0, ["ImageType"], "AT", "ffffff7f"], ["put", 0, 4313, "a984de"]]},
        READ),
    # TypeError: unhashable type: 'Sequence' (discover._split_stacks: EchoNumbers as a sequence)
    "echo_numbers_a_sequence": ({"seed": "pydicom_MR_small", "resample": False, "ops": [
        ["del", 0, ["SOPInstanceUID"]], ["set", 0, ["EchoNumbers"], "SQ", "78" * 300]]},
        READ),
    # ValueError: could not convert string to float (headers.HeaderJSON.frame: a damaged DS of one frame)
    "frame_header_value_garbled": ({"seed": "sample_enhanced", "resample": False, "ops": [
        ["del", 0, ["PerFrameFunctionalGroupsSequence", 2, "FrameContentSequence", 0, "InStackPositionNumber"]],
        ["del", 0, ["StudyInstanceUID"]], ["put", 0, 3056, "7fffffff"]]},
        READ),
    # NotImplementedError: Unknown Value Representation inside a functional group item (first use: the listing)
    "unknown_value_representation_nested": ({"seed": "sample_enhanced", "resample": False, "ops": [
        ["put", 0, 3061, "f081"]]},
        "an element inside a sequence item (0028,0030) has an unknown value representation"),
    # MemoryError: a deflated file was parsed a second time from its path, where a 2 GB length in the file
    # meta made the read allocate 2 GB (now parsed from memory, as the first time)
    "deflated_meta_length_huge": ({"seed": "pydicom_MR_small_deflated", "resample": False, "ops": [
        ["put", 0, 152, "ffffff7f"]]},
        "no DICOM image files found"),
    # NotImplementedError: Unknown Value Representation in the file meta (0002,0002), first used by find_series
    "unknown_value_representation_file_meta": ({"seed": "pydicom_MR_small_RLE", "resample": False, "ops": [
        ["del", 0, ["SequenceVariant"]], ["del", 0, ["SliceLocation"]], ["cut", 0, 1360, 43],
        ["put", 0, 163, "feffdde0"], ["put", 0, 6206, "feffdde0"]]},
        "(0002,0002) has an unknown value representation"),
    # MemoryError: parsing a sequence made pydicom read Pixel Representation, deferred with a 4 GB length
    "sequence_parse_reads_damaged_length": ({"seed": "pydicom_MR_small_padded", "resample": False, "ops": [
        ["set", 0, ["DimensionIndexSequence"], "SQ", "fffefd"], ["trunc", 0, 5104], ["put", 0, 1458, "7fffffff"],
        ["put", 0, 8895, "4f420000"]]},
        "element (0028,0103) declares 4294967167 bytes"),
    # IndexError in the series listing: PixelSpacing as an empty sequence (case 87539 of the 100,000-case run)
    "pixel_spacing_an_empty_sequence": ({"seed": "pydicom_MR_small_bigendian", "resample": True, "ops": [
        ["set", 0, ["PixelSpacing"], "SQ", ""]]},
        "PixelSpacing (0028,0030)"),
    # OverflowError: cannot convert float infinity to integer (discover._stack_keys: EchoNumbers as DS 'inf'); seed-1 run, case 93966
    "echo_numbers_infinite": ({"seed": "pydicom_MR_small_implicit", "resample": False, "ops": [["set", 0, ["EchoNumbers"], "DS", "696e66"], ["del", 0, ["FrameOfReferenceUID"]], ["put", 0, 255, "959c"], ["put", 0, 4099, "00000000"]]},
        "EchoNumbers (0018,0086) or TemporalPositionIdentifier (0020,0100)"),
    # TypeError: Sequence contents must be 'Dataset' instances (frames.Frame.group_items); seed-1 run, case 91941
    "functional_group_not_items": ({"seed": "sample_enhanced", "resample": False, "ops": [["set", 0, ["SharedFunctionalGroupsSequence", 0, "RealWorldValueMappingSequence", 0, "MeasurementUnitsCodeSequence", 0, "CodeMeaning"], "CS", "5c5c5c"], ["del", 0, ["SourceImageEvidenceSequence", 0, "ReferencedSeriesSequence", 0, "SeriesInstanceUID"]], ["put", 0, 3017, "5351"]]},
        "FrameVOILUTSequence of MR_ENHANCED.dcm frame 1 is damaged"),
    # TypeError: 'Dataset' object cannot be interpreted as an integer (pixels._native_frame: Pixel Data read as SQ); seed-1 run, case 42074
    "pixel_data_a_sequence": ({"seed": "sample_siemens", "resample": False, "ops": [["del", 2, ["FrameOfReferenceUID"]], ["del", 2, ["BitsStored"]], ["del", 2, ["Modality"]], ["put", 2, 1932, "5351"]]},
        "Pixel Data (7FE0,0010) of IM0003.dcm holds no pixel bytes"),
    # ValueError: could not convert string to float (frames._syntax: an empty TransferSyntaxUID of VR IS replaced); seed-1 run, case 62541
    "transfer_syntax_empty_of_vr_is": ({"seed": "pydicom_MR_small_padded", "resample": False, "ops": [["set", 0, ["meta", "TransferSyntaxUID"], "IS", ""], ["set", 0, ["SOPInstanceUID"], "UI", "00"], ["del", 0, ["SeriesNumber"]], ["del", 0, ["ScanningSequence"]], ["put", 0, 1543, "7fffffff"]]},
        READ),
}


@pytest.fixture(scope="module")
def seeds() -> dict[str, fuzzer.Seed]:
    return {s.name: s for s in fuzzer.make_seeds()}


def test_seed_corpus_is_read(seeds, tmp_path):
    """Every seed, unmutated, is read (the sample crops, the Enhanced MR object, pydicom's MR files)."""
    assert {"sample_siemens", "sample_philips_quirks", "sample_enhanced", "pydicom_MR_small"} <= set(seeds)
    with fuzzer.quiet_defaults():
        outcomes = {name: fuzzer.run_one(fuzzer.build_case(seed, []), tmp_path, 30)[0] for name, seed in seeds.items()}
    assert set(outcomes.values()) == {"read"}, outcomes


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_crash_found_by_fuzzing_is_refused(seeds, tmp_path, name):
    recipe, cause = REGRESSIONS[name]
    with fuzzer.quiet_defaults():
        case = fuzzer.build_case(seeds[recipe["seed"]], recipe["ops"], recipe["resample"])
        assert case.ops == recipe["ops"], "the recipe no longer replays as it was saved"
        outcome, exc = fuzzer.run_one(case, tmp_path, 30)
    if cause is READ:
        assert outcome == "read", f"{outcome}: {exc!r}"
        return
    assert outcome == "refused", f"{outcome}: {exc!r}"
    assert isinstance(exc, MonaiSRError) and "\n" not in str(exc)
    assert exc.path is not None and tmp_path in (Path(exc.path), Path(exc.path).parent), exc.path
    assert cause in exc.cause, exc.cause
    assert not isinstance(exc.__cause__, MemoryError)


def test_a_large_file_with_a_huge_length_is_read_without_allocating_it(tmp_path, seeds):
    """A file over the in-memory limit (2 MB) is parsed from disk: a 2 GB length in its file meta must not
    make a read allocate 2 GB (a plain file's read(n) allocates n bytes first)."""
    import tracemalloc

    from monai_sr.io.dicom.discover import find_series

    data = bytearray(seeds["pydicom_MR_small"].files["IM0001.dcm"])
    at = data.index(b"\x02\x00\x01\x00OB") + 8  # FileMetaInformationVersion: OB, a 4-byte length
    data[at : at + 4] = b"\xff\xff\xff\x7f"
    (tmp_path / "IM0001.dcm").write_bytes(bytes(data) + bytes(3 << 20))
    tracemalloc.start()
    try:
        with fuzzer.quiet_defaults(), pytest.raises(MonaiSRError) as err:
            find_series(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated"
    assert "\n" not in str(err.value)


def test_short_fuzz_finds_no_crash_or_hang(tmp_path):
    """The CI fuzz: 3000 seeded cases (deterministic) in the fuzzer's own process, as `make fuzz` runs it."""
    out = tmp_path / "crashes"
    proc = subprocess.run([sys.executable, str(FUZZER), "--cases", "3000", "--seed", "0", "--json", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["crashes"] == 0 and summary["hangs"] == 0, json.dumps(summary["signatures"], indent=1)[:3000]
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the mutations reach every stage: some cases still read whole, most are refused; every seed is used
    assert summary["outcomes"]["read"] > 300 and summary["outcomes"]["refused"] > 1500, summary["outcomes"]
    assert len(summary["seeds"]) >= 12, summary["seeds"]
    assert not out.exists()
