"""W2: x4 through-plane SR of a 256 x 256 x 40 series (4 mm slices -> 1 mm) with a 2D network on the two
orthogonal planes that hold the slice axis (``OrthogonalPlanesInferer``, mean fusion), DICOM in -> out.

Network: ``SRUNet(2, scale=(1, 4))`` **untrained** (its last convolution starts at zero, so the output is
the bicubic interpolation plus a zero body; the compute is that of a trained one). Ratios against, in the
same process: the FLOP limit (``count_flops`` of all planes over the measured conv2d peak), and the
streamed variant (blocks of 8 slices with a halo of 8 input slices) against the whole-volume block.

    .venv/bin/python -m benchmarks.inference_w2
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from benchmarks.inference_common import conv_peak_gflops, machine, make_series, timed

from monai_sr.inference import OrthogonalPlanesInferer
from monai_sr.networks import SRUNet
from monai_sr.networks.complexity import count_flops
from monai_sr.pipeline import enhance, load_volume


def main() -> None:
    work = Path("/tmp/monai_sr_bench")
    print(machine())
    series = make_series(work / "series_40x4mm", 40, slice_step=4.0)
    net = SRUNet(2, 1, 1, scale=(1, 4)).eval()
    vol = load_volume(series)
    vol = vol / float(vol.max())
    whole = OrthogonalPlanesInferer(lr_axis=2, batch_size=2)
    blocks = OrthogonalPlanesInferer(lr_axis=2, batch_size=2, halo=8, slab=8)
    _, t_whole = timed(lambda: [None for _ in whole.stream(vol, net)])
    _, t_blocks = timed(lambda: [None for _ in blocks.stream(vol, net)])
    out = work / "w2_out"
    shutil.rmtree(out, ignore_errors=True)
    res, t_e2e = timed(enhance, series, out, network=net, inferer=whole)
    flops = 2 * 256 * count_flops(net, (1, 1, 256, 40))
    peak = conv_peak_gflops()
    t_limit = flops / (peak * 1e9)
    print(f"W2: 256x256x40 (4 mm) -> 256x256x160 (1 mm), 2 x 256 planes 256x40 -> 256x160, untrained SRUNet(1, 4)")
    print(f"  inference, whole volume as one block        {t_whole:6.2f} s ({flops / t_whole / 1e9:.0f} GFLOP/s)")
    print(f"  inference, streamed blocks (8 + 2 x 8 halo) {t_blocks:6.2f} s ({t_blocks / t_whole:.2f} x the whole-volume time)")
    print(f"  end to end DICOM -> DICOM (whole block)     {t_e2e:6.2f} s, {len(res.files)} files, spacing {res.output_spacing}")
    print(f"  FLOPs {flops / 1e9:.0f} GFLOP, conv2d peak {peak:.0f} GFLOP/s, limit {t_limit:.2f} s: "
          f"{t_limit / t_whole:.0%} of it (inference), {t_limit / t_e2e:.0%} end to end")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
