"""MONAI transforms of monai_sr. Each is an array transform with a dict twin (``...d``); see the submodules:

* :mod:`~monai_sr.transforms.kspace`: k-space truncation (the in-plane resolution of MRI), k-space windows;
* :mod:`~monai_sr.transforms.lowres`: the low-resolution scan of an HR volume (k-space, slice profile);
* :mod:`~monai_sr.transforms.artefacts`: Rician noise, Gibbs ringing, bias field;
* :mod:`~monai_sr.transforms.spacing`: scale from spacing, SR geometry;
* :mod:`~monai_sr.transforms.intensity`: invertible intensity normalisation;
* :mod:`~monai_sr.transforms.noise`: noise-level estimation;
* :mod:`~monai_sr.transforms.pairs`: (LR, HR) training pairs on MetaTensors.
"""

from monai_sr.transforms.artefacts import (
    BiasField,
    BiasFieldd,
    GibbsRinging,
    GibbsRingingd,
    RandBiasField,
    RandBiasFieldd,
    RandGibbsRinging,
    RandGibbsRingingd,
    RandRicianNoise,
    RandRicianNoised,
    RicianNoise,
    RicianNoised,
    rician_noise,
)
from monai_sr.transforms.intensity import RobustNormalize, RobustNormalized, RobustScale, robust_max
from monai_sr.transforms.kspace import KSpaceTruncation, KSpaceWindow, fourier_resample
from monai_sr.transforms.lowres import (
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
    SimulateLowResolution,
    SimulateLowResolutiond,
    SliceProfile,
)
from monai_sr.transforms.pairs import MakeSRPair, MakeSRPaird, RandPatchPair, RandPatchPaird, slice_pairs
from monai_sr.transforms.spacing import (
    SLICE_THICKNESS_KEY,
    AcquisitionGeometry,
    RatioPolicy,
    SRGeometry,
    SRGeometryd,
    acquisition_geometry,
    apply_sr_geometry,
    scale_from_spacing,
)
