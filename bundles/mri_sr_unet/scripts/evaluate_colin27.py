"""Score this bundle on the held-out Colin27 sample the way ``monai-sr demo`` does, for any checkpoint,
with or without internal learning.

Input: ``data/sample/colin27_t1_oblique_2mm`` (the Colin27 reference with in-plane k-space truncation
x2, written as a DICOM series). The bundle's inference config (same network, inferer and ``adapt``
hook) super-resolves it through :func:`monai_sr.pipeline.enhance` into a derived DICOM series, which is
read back and scored against ``colin27_t1_oblique_reference_1mm.nii.gz`` inside the head mask
(:func:`monai_sr.validation.metrics.head_mask`), data range = reference max - min, next to bicubic
(``align_corners=False``) and zero-filled k-space (sinc) interpolation of the same input.

Examples (from the repository root)::

    python bundles/mri_sr_unet/scripts/evaluate_colin27.py                       # shipped models/model.pt
    python bundles/mri_sr_unet/scripts/evaluate_colin27.py --ckpt runs/mri_sr_unet_ft/model.pt
    python bundles/mri_sr_unet/scripts/evaluate_colin27.py --internal-learning --il-steps 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monai_sr.bundles import load_inference_parts
from monai_sr.demo import sample_paths, score_sample
from monai_sr.io.dicom.reader import load_dicom_series
from monai_sr.io.nifti import load_nifti
from monai_sr.pipeline import enhance

BUNDLE = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(BUNDLE / "models" / "model.pt"), help="plain state_dict of the network")
    p.add_argument("--internal-learning", action="store_true", help="switch the bundle's internal_learning on")
    p.add_argument("--il-steps", type=int, default=None, help="override internal_learning_fit#steps")
    p.add_argument("--il-seconds", type=float, default=None, help="override internal_learning_fit#seconds")
    p.add_argument("--self-ensemble", action="store_true", help="switch the bundle's self_ensemble on (8 flips/transposes)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = {"ckpt_path": args.ckpt, "internal_learning": args.internal_learning, "self_ensemble": args.self_ensemble}
    if args.il_steps is not None:
        overrides["internal_learning_fit#steps"] = args.il_steps
    if args.il_seconds is not None:
        overrides["internal_learning_fit#seconds"] = args.il_seconds
    parts = load_inference_parts(BUNDLE, **overrides)
    series, reference = sample_paths()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sr"
        t0 = time.perf_counter()
        enhance(series, out, network=parts["network"], inferer=parts["inferer"], adapt=parts["adapt"])
        seconds = time.perf_counter() - t0
        sr = load_dicom_series(out)[0].numpy().astype(np.float64)
    ref = load_nifti(reference)[0].numpy().astype(np.float64)
    lr = load_dicom_series(series)[0].numpy().astype(np.float64)
    rows, mask, data_range = score_sample(sr, lr, ref, (2, 2))
    result = {
        "ckpt": args.ckpt,
        "internal_learning": args.internal_learning,
        "self_ensemble": args.self_ensemble,
        "enhance_seconds": round(seconds, 1),
        "mask_voxels": int(mask.sum()),
        "data_range": data_range,
    }
    for name, (_, p, s) in zip(("bicubic", "sinc", "sr"), rows):
        result[f"psnr_{name}"] = round(p, 3)
        result[f"ssim_{name}"] = round(s, 4)
    result["gain_over_bicubic_db"] = round(result["psnr_sr"] - result["psnr_bicubic"], 3)
    if parts["adapt"] is not None and parts["adapt"].last_record is not None:
        result["fit"] = parts["adapt"].last_record.as_dict()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
