"""Scale-aware inference: networks run on volumes with the output geometry made right."""

from monai_sr.inference.slicewise import SliceWiseInferer, network_scale

__all__ = ["SliceWiseInferer", "network_scale"]
