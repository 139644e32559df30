"""Helpers of the transform tests: an oblique RAS affine, MetaTensors, and the SimpleITK round trip
(written out here to stay independent of monai_sr's own geometry)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS


def oblique_affine(spacing=(0.9, 1.1, 1.25)) -> np.ndarray:
    theta = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = [-80.0, 12.5, -33.0]
    return a


def meta(data: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(data, dtype=torch.float32), affine=torch.as_tensor(affine, dtype=torch.float64))


def to_sitk(vol: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    lps = FLIP @ affine_ras
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)).astype(np.float32))
    img.SetSpacing(sp.tolist())
    img.SetDirection((lps[:3, :3] / sp).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def affine_from_sitk(img: sitk.Image) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return FLIP @ lps


def oblique_image() -> MetaTensor:
    """A random positive (1, 16, 16, 8) MetaTensor on :func:`oblique_affine` (twin and randomness tests)."""
    rng = np.random.default_rng(5)
    return meta(rng.random((1, 16, 16, 8)) + 0.5, oblique_affine())


def assert_dict_twin_equals_array(array_cls, dict_cls, args, kwargs) -> None:
    """The dict twin gives what the array transform gives (data and affine) and leaves other keys alone."""
    img = oblique_image()
    a = array_cls(*args, **kwargs)(img)
    d = dict_cls("image", *args, **kwargs)({"image": img, "other": 1})
    assert isinstance(a, MetaTensor) and isinstance(d["image"], MetaTensor) and d["other"] == 1
    torch.testing.assert_close(d["image"].as_tensor(), a.as_tensor())
    np.testing.assert_allclose(np.asarray(d["image"].affine), np.asarray(a.affine))


def assert_random_reproducible(array_cls, dict_cls, args, kwargs) -> None:
    """Same seed, same output; a second call draws anew; the sampled parameters name the deterministic
    transform that gives the same output; the dict twin draws the same."""
    img = oblique_image()
    t = array_cls(*args, **kwargs).set_random_state(7)
    first = t(img)
    first_params = dict(t.params)
    second = t(img)
    again = array_cls(*args, **kwargs).set_random_state(7)(img)
    torch.testing.assert_close(again.as_tensor(), first.as_tensor())
    assert not torch.allclose(second.as_tensor(), first.as_tensor())
    # the sample then the deterministic transform it names
    det = t._deterministic(**first_params)(img)
    torch.testing.assert_close(det.as_tensor(), first.as_tensor())
    d = dict_cls("image", *args, **kwargs).set_random_state(7)({"image": img})
    torch.testing.assert_close(d["image"].as_tensor(), first.as_tensor())
