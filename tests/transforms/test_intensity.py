"""Intensity normalisation that records what it did and inverts exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_sr.transforms.intensity import RobustNormalize, RobustNormalized, RobustScale, robust_max
from monai_sr.transforms.spacing import SRGeometry


def _img(dtype=torch.float32) -> MetaTensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 12, 10, 6, generator=g, dtype=torch.float64) * 1234.5 + 17.0
    return MetaTensor(x.to(dtype), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0], dtype=torch.float64)))


@pytest.mark.parametrize("lower", [None, 1.0])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_inverse_is_exact_to_float_precision(lower, dtype, rtol):
    x = _img(dtype)
    norm = RobustNormalize(lower=lower)
    y = norm(x)
    rec = y.meta["intensity_normalisation"]
    assert y.dtype == dtype and len(y.applied_operations) == 1
    assert 0.9 < float(y.max()) < 1.1 and (lower is None or abs(float(np.percentile(y.numpy(), 1.0))) < 1e-6)
    back = norm.inverse(y)
    torch.testing.assert_close(back.as_tensor(), x.as_tensor(), rtol=rtol, atol=0)
    assert "intensity_normalisation" not in back.meta and not back.applied_operations
    np.testing.assert_array_equal(np.asarray(back.affine), np.asarray(x.affine))
    # the plain-tensor door with an explicit record
    torch.testing.assert_close(norm.inverse(y.as_tensor(), record=rec), x.as_tensor(), rtol=rtol, atol=0)


def test_default_matches_the_pipeline_normalisation():
    x = _img()
    y = RobustNormalize()(x)
    assert y.meta["intensity_normalisation"] == {"offset": 0.0, "scale": robust_max(x), "lower": None, "upper": 99.5}
    torch.testing.assert_close(y.as_tensor(), RobustScale()(x.as_tensor()))


def test_inverse_from_meta_after_the_network_lost_applied_operations():
    """An SR output gets the input's meta dict but not its applied_operations: the meta record suffices."""
    x = _img()
    norm = RobustNormalize()
    y = norm(x)
    sr = SRGeometry((1, 1, 2))(torch.nn.functional.interpolate(y.as_tensor()[None], scale_factor=(1, 1, 2))[0], y)
    assert not sr.applied_operations and "intensity_normalisation" in sr.meta
    back = norm.inverse(sr)
    torch.testing.assert_close(back.as_tensor()[..., ::2], x.as_tensor(), rtol=1e-6, atol=0)


def test_dict_twin_and_compose_inverse():
    x = _img()
    d = RobustNormalized("image")({"image": x, "label": 3})
    torch.testing.assert_close(d["image"].as_tensor(), RobustNormalize()(x).as_tensor())
    pipeline = Compose([RobustNormalized("image")])
    out = pipeline({"image": x})
    back = pipeline.inverse(out)
    torch.testing.assert_close(back["image"].as_tensor(), x.as_tensor(), rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RobustNormalize(0), "got 0"),
        (lambda: RobustNormalize(101), "got 101"),
        (lambda: RobustNormalize(90, lower=95), "got 95"),
        (lambda: RobustNormalize()(np.ones((1, 4, 4))), "ndarray"),
        (lambda: RobustNormalize().inverse(torch.ones(1, 4, 4)), "no 'intensity_normalisation' record"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
