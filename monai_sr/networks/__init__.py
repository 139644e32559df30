"""Networks: super-resolution and denoising models following the MONAI network contract."""

from monai_sr.networks.blocks import pixel_shuffle
from monai_sr.networks.srunet import SRUNet

__all__ = ["SRUNet", "pixel_shuffle"]
