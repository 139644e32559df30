"""ONNX Runtime backend equals the torch network; int8 quantisation makes a working, close model;
thread settings come back after a call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sr_helpers import ramp_volume

from monai_sr.inference import SliceWiseInferer
from monai_sr.inference.backends import OnnxRuntimeNetwork, export_onnx, quantize_onnx_int8
from monai_sr.inference.batching import torch_threads
from monai_sr.networks import SRUNet

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = SRUNet(2, scale=2, channels=(8, 16, 32))
    torch.nn.init.normal_(net.head.weight, std=0.05)  # the head starts at zero; make the body count
    return net.eval()


@pytest.fixture(scope="module")
def onnx_file(net, tmp_path_factory):
    return export_onnx(net, tmp_path_factory.mktemp("onnx") / "net.onnx")


def volume():
    v = ramp_volume((31, 27, 5))  # odd sizes: the padding path of the U-Net
    return (v - v.min()) / (v.max() - v.min()) + 0.1 * torch.rand(v.shape)


def test_onnx_runtime_equals_torch(net, onnx_file):
    src = volume()
    ort_net = OnnxRuntimeNetwork(onnx_file, scale=net.scale)
    assert ort_net.scale == (2, 2)
    ref = SliceWiseInferer(batch_size=2, channels_last=False)(src, net)
    out = SliceWiseInferer(batch_size=3)(src, ort_net)  # another batch and odd sizes: dynamic axes
    np.testing.assert_allclose(out.as_tensor(), ref.as_tensor(), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out.affine), np.asarray(ref.affine))


def test_int8_static_and_dynamic(net, onnx_file, tmp_path):
    src = volume()
    ref = SliceWiseInferer()(src, net).as_tensor()
    calib = [src[0, :, :, k][None, None].numpy() for k in range(src.shape[3])]
    for name, cal in (("static", calib), ("dynamic", None)):
        q = quantize_onnx_int8(onnx_file, tmp_path / f"{name}.onnx", calibration=cal)
        out = SliceWiseInferer()(src, OnnxRuntimeNetwork(q, scale=net.scale)).as_tensor()
        err = (out - ref).abs().max().item()
        assert err < 0.05 * float(ref.abs().max()), (name, err)
        assert not (tmp_path / f"{name}.pre.onnx").exists()


def test_threads_restored_and_channels_last_same_result(net):
    src = volume()
    before = torch.get_num_threads()
    a = SliceWiseInferer(threads=1, channels_last=True)(src, net)
    assert torch.get_num_threads() == before
    b = SliceWiseInferer(channels_last=False)(src, net)
    np.testing.assert_allclose(a.as_tensor(), b.as_tensor(), atol=1e-5)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_amp_on_cpu_bf16_runs(net):
    """The GPU path (autocast) is the same code; bf16 autocast also exists on CPU, so it is exercised here."""
    src = volume()
    out = SliceWiseInferer(amp="bf16", channels_last=False)(src, net)
    ref = SliceWiseInferer(channels_last=False)(src, net)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.as_tensor(), ref.as_tensor(), atol=0.05)
