"""Helpers shared by the tests (importable: setup.cfg puts tests/ on pytest's pythonpath)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SERIES = REPO / "data" / "sample" / "colin27_t1_oblique_2mm"
SAMPLE_REFERENCE = REPO / "data" / "sample" / "colin27_t1_oblique_reference_1mm.nii.gz"
MONAI_SR = Path(sys.executable).with_name("monai-sr")


def load_script(name: str):
    """The module of ``scripts/NAME.py`` (the scripts folder is not a package), freshly executed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_tool(name: str) -> str:
    """Path of an external tool; skip the test when it is missing (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real ``monai-sr`` entry point."""
    return subprocess.run([str(MONAI_SR), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def tree_digest(path: Path) -> str:
    """sha256 over names and bytes of every file under ``path`` (or of the file itself)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def crop_series(folder: Path, *, style: str, quirks=(), n_slices: int = 6, seed: int = 1) -> Path:
    """A small real series: a central crop of the sample (real Colin27 data, oblique geometry)."""
    from monai_sr.geometry import check_affine
    from monai_sr.io.dicom.reader import load_dicom_series
    from monai_sr.io.scanner_series import write_original_mr_series

    vol = load_dicom_series(SAMPLE_SERIES)
    a = vol.affine.numpy().astype(np.float64)
    i0, j0, k0 = 25, 30, vol.shape[3] // 2 - n_slices // 2
    data = vol[0, i0 : i0 + 40, j0 : j0 + 48, k0 : k0 + n_slices].numpy()
    shift = np.eye(4)
    shift[:3, 3] = [i0, j0, k0]
    write_original_mr_series(data, check_affine(a @ shift), folder, style=style, quirks=quirks, seed=seed)
    return folder


def assert_onnx_matches_onnxruntime(net, x, *, atol: float = 1e-4) -> None:
    """Export ``net`` (eval mode) to ONNX with the TorchScript-based exporter (fast), check the model, run
    it in onnxruntime on ``x`` and compare with PyTorch (max abs difference < ``atol``)."""
    import io

    import torch

    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    y = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert abs(y - net(x).numpy()).max() < atol
