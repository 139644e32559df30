#!/usr/bin/env bash
# Install the wheel in dist/ into a fresh virtual environment in a temporary folder far from the checkout
# (no editable install, no PYTHONPATH) and run there: monai-sr demo, one enhance per bundle, validate,
# and MONAI's bundle runner on an installed config. Non-zero on any failure. Used by `make wheel-check`.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WHEEL="$(ls "$REPO"/dist/monai_sr-*.whl | tail -n 1)"
TORCH="${TORCH:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
unset PYTHONPATH MONAI_SR_BUNDLES
echo "wheel: $WHEEL ($(du -k "$WHEEL" | cut -f1) KiB); fresh venv in $WORK"
"$PYTHON" -m venv "$WORK/venv"
B="$WORK/venv/bin"
"$B/pip" install --quiet $TORCH
"$B/pip" install --quiet "$WHEEL"
cd "$WORK"
"$B/monai-sr" --version
"$B/python" -m monai_sr --version
"$B/monai-sr" demo "$WORK/demo" --quiet
"$B/python" - <<'PY'
import nibabel as nib, numpy as np
from monai_sr.demo import sample_paths
ref = nib.load(str(sample_paths()[1]))
a = np.asarray(ref.dataobj)[58:122, 76:140, 24:36].astype(np.float32)
nib.save(nib.Nifti1Image(a, ref.affine), "small.nii.gz")
PY
"$B/monai-sr" enhance small.nii.gz sr_unet.nii.gz --bundle mri_sr_unet --quiet
"$B/monai-sr" enhance small.nii.gz dn_dncnn.nii.gz --bundle mri_denoise_dncnn --quiet
"$B/monai-sr" enhance small.nii.gz sr_ss.nii.gz --bundle mri_sr_selfsupervised --fast --quiet
REF="$("$B/python" -c "from monai_sr.demo import sample_paths; print(sample_paths()[1])")"
"$B/monai-sr" validate "$WORK/demo" --reference "$REF" --out report --quiet
CFG="$("$B/python" -c "from monai_sr.bundles import find_bundle; print(find_bundle('mri_denoise_dncnn'))")/configs/inference.json"
"$B/python" -m monai.bundle run --config_file "$CFG" --input_path small.nii.gz --output_path bundle_run > /dev/null
test -f bundle_run/small.nii.gz
# pytorch-ignite is the train extra's, not a plain install's (MONAI imports it eagerly: start-up time)
"$B/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('ignite') is not None)" \
    || { echo "pytorch-ignite came with a plain install; it belongs to the train extra"; exit 1; }
"$B/pip" install --quiet "$WHEEL[train]"
"$B/python" -c "from monai.utils import optional_import; assert optional_import('ignite.engine', '0.4.11', name='Events')[1]; import monai_sr.training.trainer"
echo "wheel check passed"
