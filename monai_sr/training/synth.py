"""Contrast-agnostic training volumes by domain randomisation (the SynthSR / SynthSeg recipe, Billot et
al., 2023), for networks that must work on contrasts they never saw.

Two sources, both on 1 mm grids, both returned as float32 ``(X, Y, Z)`` volumes divided by
:func:`monai_sr.transforms.intensity.robust_max` (the inference pipeline's normalisation):

* :meth:`ContrastRandomiser.from_tissue_maps`: grey- and white-matter probability maps (nilearn's MNI152
  2009a ``gm`` / ``wm``) with a random mean per tissue, and everything else (CSF, skull, scalp, air) from
  a random remap of the T1 on the same grid: ``v = p_gm mu_gm + p_wm mu_wm + (1 - p_gm - p_wm) lut(t1)``.
  A T1-, T2-, PD-, FLAIR-like or arbitrary contrast is one draw of ``(mu_gm, mu_wm, lut)``.
* :meth:`ContrastRandomiser.remap`: a real volume under a random intensity remap ``lut(t1)`` (one in
  three draws keeps it as it is).

Each draw then gets a within-tissue texture (multiplicative, smooth Gaussian noise at 1-2 voxels, a
few per cent) that population templates lack, and a smooth bias field
(:class:`monai_sr.transforms.artefacts.BiasField`). Resolution, noise and k-space truncation are left
to the pair makers (:mod:`monai_sr.training.pairs`), which degrade whatever volume they are given.

``lut`` is piecewise linear on the T1 normalised by its 99th percentile: knots at
:data:`LUT_KNOTS`, values drawn in ``[0, 1]`` (air near 0), so it may be monotonic (T1-like), inverted
(T2-like: CSF bright) or anything in between.

Examples::

    rnd = ContrastRandomiser(seed=0)
    vol, drawn = rnd.from_tissue_maps(gm, wm, t1)       # drawn: {'mu_gm': ..., 'mu_wm': ..., 'lut': [...]}
    vol2, _ = rnd.remap(pydeface_t1)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_sr.transforms.artefacts import BiasField, bias_exponents
from monai_sr.transforms.intensity import robust_max

__all__ = ["LUT_KNOTS", "ContrastRandomiser", "Draw", "SynthSources", "load_sources"]

#: Knots of the random intensity remap, in units of the T1's 99th percentile.
LUT_KNOTS = np.array([0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.5])


@dataclass
class Draw:
    """What one randomised volume was made with (for logs and tests)."""

    mu_gm: float | None = None
    mu_wm: float | None = None
    lut: list[float] = field(default_factory=list)
    texture: float = 0.0
    bias: list[float] = field(default_factory=list)


class ContrastRandomiser:
    """Draw randomised-contrast volumes; see the module docstring.

    Args:
        seed: seed of this instance's generator.
        texture: upper bound of the texture amplitude (relative standard deviation), drawn uniformly.
        bias: upper bound of the bias-field coefficients' magnitude (order 2), drawn uniformly.
        keep_prob: probability that :meth:`remap` keeps the real volume's own contrast.
    """

    def __init__(self, *, seed: int = 0, texture: float = 0.06, bias: float = 0.25, keep_prob: float = 1 / 3) -> None:
        if texture < 0 or bias < 0 or not 0 <= keep_prob <= 1:
            raise ValueError(f"texture and bias must be >= 0 and keep_prob in [0, 1], got {texture}, {bias}, {keep_prob}")
        self.rng = np.random.default_rng(seed)
        self.texture, self.bias, self.keep_prob = float(texture), float(bias), float(keep_prob)

    def draw_lut(self) -> np.ndarray:
        """Values of a random remap at :data:`LUT_KNOTS`: air in ``[0, 0.05]``, the rest in ``[0.05, 1]``."""
        values = self.rng.uniform(0.05, 1.0, LUT_KNOTS.size)
        values[0] = self.rng.uniform(0.0, 0.05)
        return values

    @staticmethod
    def apply_lut(t1: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``lut(t1)``: piecewise-linear remap of ``t1`` (normalised by its 99th percentile) through ``values``."""
        t1 = np.asarray(t1, np.float32)
        p99 = float(np.percentile(t1, 99))
        if not p99 > 0:
            raise ValueError("the volume to remap has no positive intensities")
        return np.interp(t1 / p99, LUT_KNOTS, values).astype(np.float32)

    def from_tissue_maps(self, gm: np.ndarray, wm: np.ndarray, t1: np.ndarray, *, finish: bool = True) -> tuple[np.ndarray, Draw]:
        """A random contrast from tissue probability maps ``gm``, ``wm`` and a T1 ``t1`` on one grid.

        ``finish=False`` skips texture, bias and normalisation (the raw mixture, for tests).
        """
        gm = np.clip(np.asarray(gm, np.float32), 0, 1)
        wm = np.clip(np.asarray(wm, np.float32), 0, 1)
        if not gm.shape == wm.shape == np.shape(t1):
            raise ValueError(f"tissue maps and T1 must share one grid, got {gm.shape}, {wm.shape}, {np.shape(t1)}")
        rest = np.clip(1.0 - gm - wm, 0, 1)
        mu_gm, mu_wm = (float(v) for v in self.rng.uniform(0.05, 1.0, 2))
        lut = self.draw_lut()
        vol = gm * np.float32(mu_gm) + wm * np.float32(mu_wm) + rest * self.apply_lut(t1, lut)
        draw = Draw(mu_gm=mu_gm, mu_wm=mu_wm, lut=[float(v) for v in lut])
        return (self._finish(vol, draw) if finish else vol), draw

    def remap(self, volume: np.ndarray) -> tuple[np.ndarray, Draw]:
        """A real ``volume`` under a random remap (kept as it is with probability ``keep_prob``)."""
        vol = np.asarray(volume, np.float32)
        draw = Draw()
        if self.rng.random() >= self.keep_prob:
            lut = self.draw_lut()
            vol = self.apply_lut(vol, lut)
            draw.lut = [float(v) for v in lut]
        return self._finish(vol, draw), draw

    def draw(self, sources: SynthSources) -> tuple[np.ndarray, str]:
        """One training volume from ``sources`` and what it is: half the draws a random contrast from the
        tissue maps, a quarter each a remap of one of the two real T1s (:data:`REAL_FILES`)."""
        u = self.rng.random()
        if u < 0.5:
            return self.from_tissue_maps(sources.gm, sources.wm, sources.t1)[0], "tissue maps"
        name = REAL_FILES[0] if u < 0.75 else REAL_FILES[1]
        return self.remap(sources.real[name])[0], f"remap {name}"

    def _finish(self, vol: np.ndarray, draw: Draw) -> np.ndarray:
        rng = self.rng
        draw.texture = float(rng.uniform(0.0, self.texture))
        if draw.texture > 0:
            noise = ndimage.gaussian_filter(rng.standard_normal(vol.shape).astype(np.float32), rng.uniform(0.7, 2.0))
            noise /= max(float(noise.std()), 1e-6)
            vol = vol * (1.0 + draw.texture * noise)
        if self.bias > 0:
            coefficients = rng.uniform(-self.bias, self.bias, len(bias_exponents(vol.ndim, 2)))
            coefficients[0] = 0.0
            draw.bias = [float(c) for c in coefficients]
            vol = vol * BiasField(coefficients, order=2).field(vol.shape).astype(np.float32)
        vol = np.clip(vol, 0, None)
        return (vol / np.float32(robust_max(vol))).astype(np.float32)


#: The real training T1s (``data_specs/shared_data.json``); the first is the tissue maps' grid.
REAL_FILES = ("mni152_2009a_t1_1mm.nii.gz", "pydeface_mean_head_t1.nii.gz")
#: nilearn's MNI152 2009a grey- and white-matter maps (``data_specs/tissue_maps.json``).
TISSUE_FILES = ("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")


@dataclass
class SynthSources:
    """What the randomisation draws from: ``real`` T1s by file name and the ``gm`` / ``wm`` maps on the
    grid of ``real[REAL_FILES[0]]`` (all float32 ``(X, Y, Z)``, RAS)."""

    real: dict[str, np.ndarray]
    gm: np.ndarray
    wm: np.ndarray

    @property
    def t1(self) -> np.ndarray:
        """The T1 on the tissue maps' grid (MNI152 2009a)."""
        return self.real[REAL_FILES[0]]


def load_sources(data_dir: str | os.PathLike | None = None, maps_dir: str | os.PathLike | None = None) -> SynthSources:
    """Load the training T1s and the tissue maps, each checked against its sha256 in ``data_specs/``
    (:func:`monai_sr.training.datasets.verified_path`), reoriented to RAS. ``data_dir`` defaults to
    :func:`~monai_sr.training.datasets.shared_data_dir`, ``maps_dir`` to ``data_dir`` (where
    ``monai-sr data fetch`` puts them)."""
    import nibabel as nib

    from monai_sr.resources import DATA_SPECS, data_path
    from monai_sr.training.datasets import shared_data_dir, verified_path

    data = Path(data_dir) if data_dir else shared_data_dir()
    maps = Path(maps_dir) if maps_dir else data

    def load(name: str, folder: Path, spec: str) -> np.ndarray:
        path = verified_path(name, folder, spec=data_path(DATA_SPECS, spec))
        return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, dtype=np.float32)

    real = {name: load(name, data, "shared_data.json") for name in REAL_FILES}
    gm, wm = (load(name, maps, "tissue_maps.json") for name in TISSUE_FILES)
    return SynthSources(real=real, gm=gm, wm=wm)
