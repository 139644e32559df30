"""DICOM read and write speed against SimpleITK's GDCM series reader, in the same run.

Writes a 200-slice 256x256 MR series with :func:`monai_sr.io.scanner_series.write_original_mr_series`
(Siemens style, uint16, Explicit VR Little Endian), then, alternating so that both see the same machine
load, reads it ``--repeats`` times with

* ours: :func:`monai_sr.io.dicom.reader.load_dicom_series` (scan, checks, pixels, RAS affine, headers);
* SimpleITK: ``ImageSeriesReader`` with ``GetGDCMSeriesFileNames`` (file listing and sorting included);

and writes the volume as a derived series (classic, one file per slice) two ways:

* whole volume: :func:`monai_sr.io.dicom.writer.write_derived_series` (one rescale for all slices);
* streamed: :class:`monai_sr.io.dicom.writer.DerivedSeriesWriter` fed slice by slice, as ``enhance``
  does (per-slice rescale, window given by the caller).

Each reader and writer runs once before timing (imports, page cache). Prints the best and median time of
each and the ratios: ours / SimpleITK (goal: <= 1) and write / our read (goal: <= 1.5), best against best.

Run::

    .venv/bin/python benchmarks/read_write_speed.py [--slices 200] [--size 256] [--repeats 5] [--profile]

``--profile`` prints a cProfile of one of our reads and one whole-volume write (the 25 most expensive
functions by own time).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from monai_sr.io.dicom.derived import estimate_window
from monai_sr.io.dicom.headers import source_headers
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.dicom.writer import DerivedSeriesWriter, write_derived_series
from monai_sr.io.scanner_series import write_original_mr_series


def make_series(folder: Path, slices: int, size: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (0.4 * size) ** 2).astype(np.float64)
    vol = np.repeat((disc * 800.0)[:, :, None], slices, axis=2) + rng.normal(0, 20, (size, size, slices))
    affine = np.diag([0.9, 0.9, 1.2, 1.0])
    affine[:3, 3] = [-115.0, -115.0, -120.0]
    write_original_mr_series(np.clip(vol, 0, 4095), affine, folder, style="siemens")


def read_ours(folder: Path):
    return load_dicom_series(folder)


def read_sitk(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def write_streamed(volume, affine, folder: Path, headers, window) -> None:
    with DerivedSeriesWriter(folder, affine=affine, shape=volume.shape, source_headers=headers,
                             derivation="benchmark", window=window) as writer:
        for k in range(volume.shape[2]):
            writer.write_slice(k, volume[:, :, k])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="monai_sr_bench_"))
    try:
        src = root / "series"
        t0 = time.perf_counter()
        make_series(src, args.slices, args.size)
        print(f"series: {args.slices} slices {args.size}x{args.size} uint16, written by scanner_series in "
              f"{time.perf_counter() - t0:.2f} s")
        ours_img, sitk_img = read_ours(src), read_sitk(src)  # warm up; check they agree
        same = np.array_equal(ours_img[0].numpy(), sitk.GetArrayFromImage(sitk_img).transpose(2, 1, 0))
        print(f"voxels equal to SimpleITK's: {same}")
        headers = source_headers(ours_img.meta)
        # the pipeline hands the writer a C-ordered network output; the reader's array is slice-contiguous
        volume, affine = np.ascontiguousarray(ours_img[0].numpy()), ours_img.affine.numpy()
        window = estimate_window(ours_img[0].numpy())
        write_derived_series(volume, affine, root / "warm", source_headers=headers, derivation="benchmark")
        shutil.rmtree(root / "warm")

        t_ours, t_sitk, t_write, t_stream = [], [], [], []
        for r in range(args.repeats):
            for name, fn, store in (("ours", read_ours, t_ours), ("sitk", read_sitk, t_sitk)):
                t = time.perf_counter()
                fn(src)
                store.append(time.perf_counter() - t)
            out = root / f"derived{r}"
            t = time.perf_counter()
            write_derived_series(volume, affine, out, source_headers=headers, derivation="benchmark")
            t_write.append(time.perf_counter() - t)
            shutil.rmtree(out)
            t = time.perf_counter()
            write_streamed(volume, affine, out, headers, window)
            t_stream.append(time.perf_counter() - t)
            shutil.rmtree(out)

        def fmt(name, ts):
            return f"{name:<38s} best {min(ts):.3f} s   median {statistics.median(ts):.3f} s"

        print(f"machine: {platform.processor() or platform.machine()}, {platform.python_implementation()} "
              f"{platform.python_version()}, SimpleITK {sitk.Version.VersionString()}")
        print(fmt("read, ours (load_dicom_series)", t_ours))
        print(fmt("read, SimpleITK (GDCM series)", t_sitk))
        print(fmt("write, ours (write_derived_series)", t_write))
        print(fmt("write, streamed (DerivedSeriesWriter)", t_stream))
        print(f"ratio read ours / SimpleITK:  {min(t_ours) / min(t_sitk):.2f}  (goal <= 1)")
        print(f"ratio write / our read:       {min(t_write) / min(t_ours):.2f}  (goal <= 1.5)")
        print(f"ratio streamed / our read:    {min(t_stream) / min(t_ours):.2f}  (goal <= 1.5)")
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(read_ours, src)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            prof = cProfile.Profile()
            prof.runcall(write_derived_series, volume, affine, root / "profiled", source_headers=headers,
                         derivation="benchmark")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
