"""Other runtimes for a network: ONNX export, ONNX Runtime, int8 quantisation (torch's own settings, threads
included, live in :mod:`monai_sr.inference.batching`).

* :func:`export_onnx` writes a network as ONNX (``torch.onnx.export(dynamo=False)``) with dynamic batch
  and spatial axes; :class:`OnnxRuntimeNetwork` runs such a file as a drop-in ``nn.Module`` that keeps the
  network's declared ``scale``, so every inferer takes it.
* :func:`quantize_onnx_int8` makes an int8 model with ONNX Runtime's quantiser: static (QDQ, per-channel
  weights, activations calibrated on real slices) when a calibration set is given, else dynamic.

onnxruntime is imported lazily (an optional dependency, the ``test`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monai_sr.errors import ModelError
from monai_sr.inference.base import network_device, network_scale

__all__ = ["export_onnx", "OnnxRuntimeNetwork", "quantize_onnx_int8", "network_device"]


def export_onnx(
    network: nn.Module,
    path: str | os.PathLike,
    *,
    spatial_dims: int = 2,
    in_channels: int | None = None,
    sample_size: int = 61,
    opset: int = 17,
) -> Path:
    """Write ``network`` (in eval mode, on CPU) as ONNX with dynamic batch and spatial axes.

    Args:
        network: a network with a declared ``scale``; ``in_channels`` is read from it when not given.
        path: the ``.onnx`` file to write.
        spatial_dims: 2 (slices) or 3 (volumes).
        sample_size: edge of the sample used for tracing; odd, so that size-dependent branches (padding
            to a multiple of the U-Net stride) are traced on their general path and any size works after.
        opset: ONNX opset.
    """
    network_scale(network)  # refuse a network without a declared scale now
    channels = int(in_channels if in_channels is not None else getattr(network, "in_channels", 1))
    sample = torch.zeros((1, channels, *([sample_size] * spatial_dims)))
    names = ["batch", *("xyz"[:spatial_dims])]
    axes = {i: n for i, n in enumerate(names[:1] + ["channel"] + names[1:]) if n != "channel"}
    path = Path(path)
    was_training = network.training
    network.eval()
    try:
        torch.onnx.export(
            network.to("cpu"), (sample,), str(path), input_names=["input"], output_names=["output"],
            dynamic_axes={"input": axes, "output": axes}, opset_version=opset, dynamo=False,
        )
    finally:
        network.train(was_training)
    return path


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX model run by ONNX Runtime (CPU), as an ``nn.Module`` with the network's ``scale``.

    Args:
        model: path of the ``.onnx`` file (or its bytes).
        scale: the scale the exported network declared (one factor per spatial axis).
        in_channels: channels the model takes (for the inferers' checks).
        threads: intra-op threads of the session (None: ONNX Runtime's default, one per core).
        providers: execution providers (default CPU).

    Examples::

        export_onnx(net, "net.onnx")
        onnx_net = OnnxRuntimeNetwork("net.onnx", scale=net.scale)
        hr = SliceWiseInferer()(volume, onnx_net)
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        scale: Sequence[int],
        in_channels: int = 1,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        src = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(src, sess_options=opts, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
            raise ModelError(f"ONNX Runtime cannot load the model ({type(exc).__name__}: {exc})") from exc
        self.scale = tuple(int(s) for s in scale)
        self.in_channels = int(in_channels)
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (out,) = self.session.run([self._output], {self._input: arr})
        return torch.from_numpy(out)


class _SliceReader:
    """onnxruntime.quantization.CalibrationDataReader over batches of calibration samples."""

    def __init__(self, name: str, samples: Iterable[np.ndarray]) -> None:
        self._it = ({name: np.ascontiguousarray(s, dtype=np.float32)} for s in samples)

    def get_next(self):
        return next(self._it, None)


def quantize_onnx_int8(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    calibration: Iterable[np.ndarray] | None = None,
    per_channel: bool = True,
) -> Path:
    """Quantise an ONNX model to int8 with ONNX Runtime.

    Args:
        source: the float ONNX model (:func:`export_onnx`).
        target: the int8 model to write.
        calibration: input batches ``(N, C, *spatial)`` float32 (real, normalised slices) for static
            quantisation (QDQ format, int8 weights per channel, uint8 activations, MinMax calibration);
            None: dynamic quantisation (weights int8, activations quantised per call).
        per_channel: per-output-channel weight scales (static only).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = Path(source), Path(target)
    pre = target.with_name(target.stem + ".pre.onnx")
    try:
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        model_in = str(pre)
    except Exception:  # pre-processing is an optimisation; quantise the model as exported if it fails
        model_in = str(source)
    try:
        if calibration is None:
            quantize_dynamic(model_in, str(target), weight_type=QuantType.QInt8)
        else:
            import onnx

            name = onnx.load(model_in, load_external_data=False).graph.input[0].name
            quantize_static(
                model_in, str(target), _SliceReader(name, calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                calibrate_method=CalibrationMethod.MinMax,
            )
    finally:
        pre.unlink(missing_ok=True)
    return target
