"""How well the uncertainty map ranks the real error, on the held-out scans of ``generalization.py``.

For each volume of :func:`benchmarks.generalization.held_out` (real and synthetic contrasts; since
mri_sr_unet 0.5.0 its weights train on S1, the shoulder and the abdomen, see that module), the
k-space-truncated x2 input goes through ``monai_sr.enhance(..., uncertainty=True)`` (the default bundle;
the guarded fit was part of it until 0.5.0) and, inside the foreground (planar head
mask), the map is compared with the absolute error of the result against the reference:

* Spearman rank correlation per volume between the map and the absolute error (0: no ranking);
* the share of the voxels with the 10 % largest errors that lie in the map's top decile (10 %: chance);
* both again for a map anyone could draw without the ensemble, the in-plane gradient magnitude of the
  result (Gaussian, sigma 1 voxel): the ensemble spread earns its keep only where it beats that.

Example::

    python -m benchmarks.uncertainty --json runs/uncertainty.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

import monai_sr
from benchmarks.generalization import held_out
from monai_sr.training.datasets import shared_data_dir
from monai_sr.transforms.kspace import KSpaceTruncation
from monai_sr.validation.metrics import head_mask
from monai_sr.validation.uncertainty import rank_agreement


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="shared data folder (default $MONAI_SR_DATA)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    bundle = monai_sr.load_bundle("mri_sr_unet")
    rows = []
    for name, kind, hr, affine in held_out(Path(args.data_dir) if args.data_dir else shared_data_dir()):
        lr = KSpaceTruncation(factors=(2, 2), axes=(0, 1))(MetaTensor(torch.from_numpy(hr[None]), affine=torch.as_tensor(affine)))
        result, spread = monai_sr.enhance(lr, bundle=bundle, uncertainty=True)
        mask = head_mask(hr.astype(np.float64), planar=True)
        err = np.abs(result[0].numpy().astype(np.float64) - hr)[mask]
        unc = spread[0].numpy().astype(np.float64)[mask]
        grad = ndimage.gaussian_gradient_magnitude(result[0].numpy().astype(np.float64), (1, 1, 0))[mask]
        row = {"volume": name, "kind": kind}
        for key, m in (("", unc), ("gradient_", grad)):
            row.update({key + k: round(v, 3) for k, v in rank_agreement(m, err).items()})  # what validate reports
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| volume | kind | Spearman: spread | Spearman: gradient | top-decile errors caught: spread | by gradient |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['volume']} | {r['kind']} | {r['spearman']:.2f} | {r['gradient_spearman']:.2f} | "
              f"{100 * r['top_decile_share']:.0f} % | {100 * r['gradient_top_decile_share']:.0f} % |" for r in rows]
    cols = [np.array([r[k] for r in rows]) for k in ("spearman", "gradient_spearman", "top_decile_share", "gradient_top_decile_share")]
    lines.append(f"| mean (min) | | {cols[0].mean():.2f} ({cols[0].min():.2f}) | {cols[1].mean():.2f} ({cols[1].min():.2f}) | "
                 f"{100 * cols[2].mean():.0f} % ({100 * cols[2].min():.0f} %) | {100 * cols[3].mean():.0f} % ({100 * cols[3].min():.0f} %) |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
