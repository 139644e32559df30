"""Networks: super-resolution and denoising models following the MONAI network contract."""

from monai_sr.networks.blocks import pixel_shuffle
from monai_sr.networks.cbam import CBAM
from monai_sr.networks.complexity import count_flops, count_parameters
from monai_sr.networks.dncnn import DnCNN
from monai_sr.networks.mobile_sr import MobileSR
from monai_sr.networks.rcan import RCAN
from monai_sr.networks.rrdb import RRDBNet
from monai_sr.networks.srunet import SRUNet
from monai_sr.networks.swinir import SwinIRLight
from monai_sr.networks.zero_dce import ZeroDCE

__all__ = [
    "SRUNet",
    "pixel_shuffle",
    "CBAM",
    "DnCNN",
    "MobileSR",
    "RCAN",
    "RRDBNet",
    "SwinIRLight",
    "ZeroDCE",
    "count_flops",
    "count_parameters",
]
