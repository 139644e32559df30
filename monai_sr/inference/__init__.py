"""Scale-aware inference: networks run on volumes with the output geometry made right.

One family (:class:`ScaleAwareInferer`), each a MONAI ``Inferer`` usable in bundle configs, each taking a
channel-first MetaTensor and a network with a declared ``scale`` and returning a MetaTensor with the
geometry of :func:`monai_sr.transforms.spacing.apply_sr_geometry`; each can also stream finished output
slices (:meth:`ScaleAwareInferer.stream`):

* :class:`SliceWiseInferer`: 2D slices along any axis, batched; 2.5D with ``context`` neighbours.
* :class:`SlidingWindowSRInferer`: MONAI's ``sliding_window_inference`` with a zooming 2D or 3D network.
* :class:`OrthogonalPlanesInferer`: through-plane SR from a 2D network on the two orthogonal planes.

Beside the family, :class:`PlaneMeanInferer` (a plain MONAI ``Inferer``, not streaming) averages a 2D
denoiser run slice-wise along several axes, and :class:`SureBlendInferer` blends a denoiser's result with
non-local means and the input as Stein's unbiased risk estimate says (:mod:`~monai_sr.inference.sure`).

Beside them: :mod:`~monai_sr.inference.consistency` (the acquired k-space band put back, the
``data_consistency`` option of :class:`SliceWiseInferer`), :mod:`~monai_sr.inference.baselines`
(zero-filled k-space and bicubic interpolation as networks), :mod:`~monai_sr.inference.batching` (batch
from a memory budget, threads) and :mod:`~monai_sr.inference.backends` (ONNX export, ONNX Runtime, int8).
"""

from monai_sr.inference.base import ScaleAwareInferer, SelfEnsemble, network_device, network_scale
from monai_sr.inference.baselines import BicubicInterpolation, ZeroFilledInterpolation
from monai_sr.inference.batching import batch_for_budget, measure_peak_bytes, parse_bytes
from monai_sr.inference.orthogonal import OrthogonalPlanesInferer
from monai_sr.inference.planes import PlaneMeanInferer
from monai_sr.inference.sliding import SlidingWindowSRInferer
from monai_sr.inference.sure import SureBlendInferer
from monai_sr.inference.slicewise import SliceWiseInferer

__all__ = [
    "ScaleAwareInferer",
    "SliceWiseInferer",
    "SlidingWindowSRInferer",
    "OrthogonalPlanesInferer",
    "PlaneMeanInferer",
    "SureBlendInferer",
    "SelfEnsemble",
    "ZeroFilledInterpolation",
    "BicubicInterpolation",
    "network_scale",
    "network_device",
    "batch_for_budget",
    "measure_peak_bytes",
    "parse_bytes",
]
