"""MONAI transforms of monai_sr: low-resolution / noise simulation, SR geometry, intensity normalisation,
training pairs. Each is an array transform with a dict twin (``...d``); see the submodules."""

from monai_sr.transforms.degradation import (
    BiasField,
    BiasFieldd,
    GibbsRinging,
    GibbsRingingd,
    KSpaceTruncation,
    KSpaceWindow,
    RandBiasField,
    RandBiasFieldd,
    RandGibbsRinging,
    RandGibbsRingingd,
    RandRicianNoise,
    RandRicianNoised,
    RandSimulateLowResolution,
    RandSimulateLowResolutiond,
    RicianNoise,
    RicianNoised,
    SimulateLowResolution,
    SimulateLowResolutiond,
    SliceProfile,
    fourier_resample,
)
from monai_sr.transforms.intensity import RobustNormalize, RobustNormalized, RobustScale, robust_max
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
