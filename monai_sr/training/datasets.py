"""Training data shared by the bundles' ``train.json``: the verified training volumes, random 2D pairs
with augmentation, and whole held-out slices for validation.

Conventions:

- volumes are float32 numpy arrays ``(X, Y, Z)`` in RAS orientation, divided by
  :func:`monai_sr.transforms.intensity.robust_max` (the inference pipeline's input normalisation);
- a pair is ``{"image": (1, h, w) float32 tensor, "label": (1, H, W) float32 tensor}``: the network's
  input and its target, ``H = f h`` and ``W = f w`` for a scale factor ``f`` (``f = 1`` for a denoiser);
- patch sizes are in input (LR) pixels.

A *pair maker* is a callable ``make_pair(volume, rng, patch) -> pair`` that draws one random crop of
one slice (any of the three axes) of ``volume``; :class:`SlicePairs` is the base that does the drawing
and leaves the degradation of a whole 2D slice to a subclass. :class:`InPlaneSRPairs` is the in-plane
super-resolution one (k-space truncation of :mod:`monai_sr.training.pairs`, optional Rician noise).
A denoising bundle subclasses :class:`SlicePairs` with ``factor = 1`` and a noisy ``degrade``.

Examples::

    volumes = load_training_volumes()                       # MNI152 2009a, pydeface mean head
    train_parts, slabs = split_held_out(volumes)            # axial slab [0.60, 0.72) of each held out
    ds = RandomPairDataset(train_parts, InPlaneSRPairs(factor=2), length=1024, patch=48, seed=0)
    ds.set_epoch(3); ds.patch = 64                          # what ProgressivePatch does each epoch
    item = ds[0]                                            # image (1, 64, 64), label (1, 128, 128)
    val = SliceDataset(slabs, InPlaneSRPairs(factor=2, noise_prob=0.0), axis=2, step=2)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from monai_sr.checks import check_positive_int
from monai_sr.errors import InputError
from monai_sr.resources import DATA_SPECS, data_path, sha256_file
from monai_sr.training.crops import augment_pair, draw_crop, volume_planes
from monai_sr.training.pairs import DegradedStack, normalise_volume, split_volume
from monai_sr.transforms.artefacts import rician_noise

__all__ = [
    "TRAINING_FILES",
    "DATA_SPEC",
    "load_training_volumes",
    "split_held_out",
    "SlicePairs",
    "InPlaneSRPairs",
    "CachedInPlaneSRPairs",
    "RandomPairDataset",
    "SliceDataset",
]

TRAINING_FILES = ("mni152_2009a_t1_1mm.nii.gz", "pydeface_mean_head_t1.nii.gz")
DATA_SPEC = data_path(DATA_SPECS, "shared_data.json")  # the repository's data_specs/, shipped as package data

Pair = dict[str, torch.Tensor]
PairMaker = Callable[[np.ndarray, np.random.Generator, int], Pair]


#: Environment variable naming the folder of the shared training/evaluation volumes.
DATA_ENV = "MONAI_SR_DATA"


def shared_data_dir() -> Path:
    """The folder of the training and evaluation volumes (``data_specs/shared_data.json`` lists them and
    where each comes from): ``$MONAI_SR_DATA`` if set, else the user's data folder
    ``$XDG_DATA_HOME/monai_sr/data`` (``~/.local/share/monai_sr/data``), where ``monai-sr data fetch``
    puts them by default."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "monai_sr" / "data"


def verified_path(name: str, data_dir: str | os.PathLike | None = None, *, spec: str | os.PathLike = DATA_SPEC) -> Path:
    """``data_dir / name``, checked against its sha256 in ``spec`` (``data_specs/shared_data.json``).

    Raises :class:`InputError` naming the file when it is missing, has no entry in ``spec`` or its
    sha256 does not match."""
    spec_path = Path(spec)
    entries = {e["path"]: e for e in json.loads(spec_path.read_text())["files"]}
    path = Path(data_dir if data_dir is not None else shared_data_dir()) / name
    if name not in entries:
        raise InputError(f"no sha256 entry for {name} in {spec_path}", path=path)
    if not path.is_file():
        raise InputError(f"data file missing (see {spec_path} for its source)", path=path)
    digest = sha256_file(path)
    if digest != entries[name]["sha256"]:
        raise InputError(f"sha256 {digest} does not match {entries[name]['sha256']} in {spec_path}", path=path)
    return path


def held_out_files() -> set[str]:
    """The files whose role in ``data_specs/shared_data.json`` is "held out" (Colin27): never trained on."""
    return {e["path"] for e in json.loads(Path(DATA_SPEC).read_text())["files"] if e["role"].startswith("held out")}


def parse_shares(specs: list[str]) -> dict[str, float | None]:
    """Training-file specs ``["NAME", "NAME:0.2", ...]`` -> ``{NAME: None, NAME: 0.2}`` (a fixed share of
    the draws; None: drawn by crop positions). Raises ValueError for a held-out file (:func:`held_out_files`),
    a name given twice or a share that is not a number."""
    out: dict[str, float | None] = {}
    held_out = held_out_files()
    for spec in specs:
        name, sep, share = spec.partition(":")
        if name in held_out:
            raise ValueError(f"{name} is held out (demo, tests and reports) and is never trained on")
        if name in out:
            raise ValueError(f"{name} is named twice")
        try:
            out[name] = float(share) if sep else None
        except ValueError:
            raise ValueError(f"{spec!r}: the share after ':' must be a number") from None
    return out


def load_training_volumes(
    names: Sequence[str] = TRAINING_FILES,
    data_dir: str | os.PathLike | None = None,
    *,
    spec: str | os.PathLike = DATA_SPEC,
) -> list[np.ndarray]:
    """Load the named volumes of ``data_dir`` (default :func:`shared_data_dir`), each checked by
    :func:`verified_path`.

    Returns float32 arrays ``(X, Y, Z)``, reoriented to RAS (``nib.as_closest_canonical``: axis 2 runs
    inferior -> superior) and divided by their robust maximum. Raises :class:`InputError` naming the file
    when it is missing, has no entry in ``spec`` or its sha256 does not match. The held-out Colin27 is
    not among the defaults: name it only to evaluate (``evaluate.json``), never to train.
    """
    volumes = []
    for name in names:
        path = verified_path(name, data_dir, spec=spec)
        img = nib.as_closest_canonical(nib.load(str(path)))
        volumes.append(normalise_volume(np.asarray(img.dataobj, dtype=np.float32)))
    return volumes


def split_held_out(
    volumes: Sequence[np.ndarray], *, axis: int = 2, slab: Sequence[float] = (0.60, 0.72), gap: int = 4
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each volume into training parts and a held-out slab (fractions ``slab`` of ``axis``).

    Returns ``(train_parts, slabs)``; see :func:`monai_sr.training.pairs.split_volume` (``gap`` slices on
    each side of the slab are used by neither).
    """
    train, held = [], []
    for vol in volumes:
        n = vol.shape[axis]
        parts, s = split_volume(vol, axis=axis, start=int(round(slab[0] * n)), stop=int(round(slab[1] * n)), gap=gap)
        train.extend(parts)
        held.append(s)
    return train, held


class SlicePairs:
    """Base pair maker: draws a random crop of a random slice; subclasses degrade a whole 2D slice.

    Drawing: an axis (among those whose slices hold an HR crop of ``factor * patch``), a slice and an
    LR position, uniformly; a draw whose HR crop has less than ``min_foreground`` of its pixels above
    ``foreground_level`` is redrawn (up to ``max_tries`` times). The whole slice is then degraded and
    the aligned crops cut, so the degradation sees the slice as the scanner would, not a crop.

    Subclasses set ``factor`` (HR pixels per input pixel) and implement :meth:`degrade`.
    """

    factor: int = 1

    def __init__(self, *, min_foreground: float = 0.3, foreground_level: float = 0.1, max_tries: int = 50) -> None:
        self.min_foreground = float(min_foreground)
        self.foreground_level = float(foreground_level)
        self.max_tries = int(max_tries)

    def degrade(self, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(input, target)`` of a whole slice ``hr`` ``(a, b)``: input ``(a // f, b // f)``, target
        ``(f (a // f), f (b // f))`` (trailing rows/columns dropped where ``f`` does not divide)."""
        raise NotImplementedError

    def slice_pair(self, hr: np.ndarray, rng: np.random.Generator) -> Pair:
        """The pair of a whole 2D slice ``(a, b)`` (validation)."""
        x, y = self.degrade(np.asarray(hr, np.float32), rng)
        return _as_pair(x, y)

    def draw(self, volume: np.ndarray, rng: np.random.Generator, patch: int) -> tuple[int, int, int, int]:
        """A random crop position ``(axis, k, i, j)``: slice ``k`` along ``axis``, LR corner ``(i, j)`` of a
        ``patch`` x ``patch`` input crop (HR corner ``(f i, f j)``), redrawn while the HR crop has less
        than ``min_foreground`` foreground (see the class docstring)."""
        f, p = self.factor, int(patch)
        if p < 1:
            raise ValueError(f"patch must be a positive number of input pixels, got {patch}")
        axes = [a for a in range(3) if min(volume.shape[b] for b in range(3) if b != a) >= f * p]
        if not axes:
            raise ValueError(f"a volume of shape {volume.shape} has no slice that holds a {f * p}x{f * p} crop")
        planes = [volume_planes(volume, a, *(b for b in range(3) if b != a)) for a in axes]  # views
        c = draw_crop(
            rng, planes, (p, p), (f, f),
            min_foreground=self.min_foreground, foreground_level=self.foreground_level, max_tries=self.max_tries,
        )
        return axes[c.source], c.k, c.i, c.j

    def __call__(self, volume: np.ndarray, rng: np.random.Generator, patch: int) -> Pair:
        f, p = self.factor, int(patch)
        axis, k, i, j = self.draw(volume, rng, p)
        x, y = self.degrade(volume[(slice(None),) * axis + (k,)], rng)
        return _as_pair(x[i : i + p, j : j + p], y[f * i : f * (i + p), f * j : f * (j + p)])


class InPlaneSRPairs(SlicePairs):
    """In-plane x``factor`` SR pairs: the slice's k-space truncated (:class:`DegradedStack`), then with
    probability ``noise_prob`` Rician noise of ``sigma ~ U[0, noise_sigma]`` (normalised units) on the
    input only.

    Examples::

        make_pair = InPlaneSRPairs(factor=2, noise_prob=0.2, noise_sigma=0.02)
        pair = make_pair(volume, np.random.default_rng(0), 48)   # image (1, 48, 48), label (1, 96, 96)
    """

    def __init__(self, factor: int = 2, *, noise_prob: float = 0.2, noise_sigma: float = 0.02, **kwargs) -> None:
        super().__init__(**kwargs)
        self.factor = check_positive_int("factor", factor)
        if not 0.0 <= noise_prob <= 1.0 or noise_sigma < 0:
            raise ValueError(f"need 0 <= noise_prob <= 1 and noise_sigma >= 0, got {noise_prob}, {noise_sigma}")
        self.noise_prob = float(noise_prob)
        self.noise_sigma = float(noise_sigma)

    def noise(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``lr`` with probability ``noise_prob`` given Rician noise of ``sigma ~ U[0, noise_sigma]``."""
        if self.noise_prob > 0 and rng.random() < self.noise_prob:
            lr = rician_noise(lr, float(rng.uniform(0.0, self.noise_sigma)), rng)
        return lr

    def degrade(self, hr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        stack = DegradedStack.from_volume(hr[None], axis=0, factor=self.factor)
        return self.noise(stack.lr[0], rng), stack.hr[0]


class CachedInPlaneSRPairs(InPlaneSRPairs):
    """:class:`InPlaneSRPairs` with every slice of a volume degraded once per axis (a
    :class:`~monai_sr.training.pairs.DegradedStack`, kept for the life of the pair maker) instead of once
    per draw.

    Same draws (the same calls on ``rng`` in the same order), same k-space truncation of the whole slice,
    same crops; the Rician noise is drawn on the LR crop instead of the whole LR slice (i.i.d. per pixel,
    so the same distribution). Without noise the pairs are bit-identical to :class:`InPlaneSRPairs`'.
    The shared class spends ~0.1 s of CPU per 32 x 32 item (a whole-slice FFT per draw), more than a
    small network's training step per batch; this one a few milliseconds. Memory: one degraded copy of
    each volume per axis drawn.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stacks: dict[tuple[int, int], tuple[np.ndarray, DegradedStack]] = {}

    def stack(self, volume: np.ndarray, axis: int) -> DegradedStack:
        """The degraded slices of ``volume`` along ``axis`` (made on first use)."""
        key = (id(volume), axis)
        if key not in self._stacks:  # the volume is kept in the entry, so its id stays its own
            self._stacks[key] = (volume, DegradedStack.from_volume(volume, axis, self.factor))
        return self._stacks[key][1]

    def __call__(self, volume: np.ndarray, rng: np.random.Generator, patch: int) -> Pair:
        p = int(patch)
        axis, k, i, j = self.draw(volume, rng, p)
        lr, hr = self.stack(volume, axis).crop(k, i, j, p)
        return _as_pair(self.noise(lr, rng), hr)


def _as_pair(x: np.ndarray, y: np.ndarray) -> Pair:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)[None]),
        "label": torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)[None]),
    }


class RandomPairDataset(Dataset):
    """``length`` random augmented pairs per epoch, reproducible from ``(seed, epoch, index)``.

    Item ``i`` draws with ``np.random.default_rng([seed, epoch, i])`` a volume (probability proportional
    to its voxel count), calls ``make_pair(volume, rng, patch)`` and applies to image and label alike:
    a random flip of each spatial axis, a transpose when both are square (the eight symmetries of the
    square; they keep the field-of-view alignment of an SR pair), and an intensity gain in
    ``[1 - jitter, 1 + jitter]``. Items do not depend on the order they are asked in, so any sampler
    (``DistributedSampler`` included) and a resumed run see the same data; call :meth:`set_epoch` each
    epoch (:class:`monai_sr.training.trainer.ProgressivePatch` does) or every epoch repeats the first.

    ``patch`` is settable between epochs (progressive training); a DataLoader must then not keep worker
    processes across epochs (``persistent_workers=False``, or ``num_workers=0`` as in the bundles).
    """

    def __init__(
        self,
        volumes: Sequence[np.ndarray],
        make_pair: PairMaker,
        length: int,
        patch: int,
        seed: int = 0,
        *,
        flips: bool = True,
        jitter: float = 0.15,
    ) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        check_positive_int("length", length)
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.volumes = [np.asarray(v, dtype=np.float32) for v in volumes]
        if any(v.ndim != 3 for v in self.volumes):
            raise ValueError(f"volumes must be 3D (X, Y, Z), got shapes {[v.shape for v in self.volumes]}")
        sizes = np.array([v.size for v in self.volumes], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.make_pair = make_pair
        self.length = int(length)
        self.patch = int(patch)
        self.seed = int(seed)
        self.flips = bool(flips)
        self.jitter = float(jitter)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Pair:
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        volume = self.volumes[int(rng.choice(len(self.volumes), p=self.weights))]
        pair = self.make_pair(volume, rng, self.patch)
        x, y = augment_pair(rng, pair["image"], pair["label"], flips=self.flips, transpose=self.flips, jitter=self.jitter)
        return {**pair, "image": x.contiguous(), "label": y.contiguous()}


class SliceDataset(Dataset):
    """Whole 2D slices along ``axis`` (every ``step``-th) of held-out volumes as pairs, for validation.

    Item ``n`` is ``make_pair.slice_pair(slice, np.random.default_rng([seed, n]))`` plus ``"slice_id"``
    (``"volume{v}_axis{axis}_slice{k}"``, for per-slice metric tables): fixed across epochs and runs.
    Slices differ in size between volumes, so use ``batch_size=1``.
    """

    def __init__(
        self, volumes: Sequence[np.ndarray], make_pair: SlicePairs, *, axis: int = 2, step: int = 2, seed: int = 0
    ) -> None:
        check_positive_int("step", step)
        self.volumes = [np.asarray(v, dtype=np.float32) for v in volumes]
        self.index = [(v, k) for v in range(len(self.volumes)) for k in range(0, self.volumes[v].shape[axis], step)]
        if not self.index:
            raise ValueError("no slices to validate on")
        self.make_pair = make_pair
        self.axis = int(axis)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, n: int) -> Pair:
        v, k = self.index[n]
        pair = self.make_pair.slice_pair(self.volumes[v][(slice(None),) * self.axis + (k,)], np.random.default_rng([self.seed, n]))
        return {**pair, "slice_id": f"volume{v}_axis{self.axis}_slice{k:03d}"}
