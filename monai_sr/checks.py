"""Argument checks shared by geometry, networks, transforms and training: one place, one signature each.

Every check takes the argument's *name first*, then its value, and either returns the value in its
canonical form or raises a ``ValueError`` that names the argument and the value it got, e.g.
``features must be a positive integer, got 0``.

* :func:`check_positive_int`: an integer ``>= minimum`` (Python or numpy integers; not bools, not floats).
* :func:`check_scale`: integer factors ``>= 1``, one per spatial axis (or any number when ``spatial_dims``
  is None); whole floats such as ``2.0`` are accepted (configs and spacing ratios give them).
* :func:`check_range`: a ``(low, high)`` pair of finite numbers with ``low <= high`` inside given bounds.
* :func:`check_spatial_dims`, :func:`check_axis`: 2 or 3 spatial dimensions; a spatial axis index.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["check_positive_int", "check_scale", "check_range", "check_spatial_dims", "check_axis"]


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``int(value)`` if it is an integer ``>= minimum``, else a ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return int(value)


def check_scale(scale: Any, spatial_dims: int | None = None, *, name: str = "scale") -> tuple[int, ...]:
    """One positive integer factor per spatial axis, from one factor for all axes or a sequence.

    With ``spatial_dims`` None a single factor gives a 1-tuple and a sequence may have any length (the
    caller broadcasts it). Raises a ``ValueError`` on the wrong number of factors or on a factor that is
    not a positive whole number, naming the factor and the whole ``scale``.
    """
    scalar = isinstance(scale, Real) or np.isscalar(scale)
    values = tuple([scale] * (spatial_dims or 1) if scalar else list(scale))
    if spatial_dims is not None and len(values) != spatial_dims:
        raise ValueError(f"{name} {values} must have {spatial_dims} factors (one per spatial axis)")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, Real) or int(s) != s or s < 1:
            raise ValueError(f"factors of {name} must be positive integers, got {s!r} in {values}")
    return tuple(int(s) for s in values)


def check_range(
    name: str, value: Sequence[float], *, low: float = -np.inf, high: float = np.inf, open_low: bool = False
) -> tuple[float, float]:
    """``(lo, hi)`` as floats if ``value`` is a pair of finite numbers with ``low <= lo <= hi <= high``
    (``low < lo`` when ``open_low``), else a ``ValueError`` naming ``name``, the bounds and the value."""
    try:
        v = tuple(float(x) for x in value)
    except (TypeError, ValueError):
        v = ()
    ok_low = len(v) == 2 and (v[0] > low if open_low else v[0] >= low)
    if not (ok_low and v[0] <= v[1] <= high and np.all(np.isfinite(v))):
        raise ValueError(
            f"{name} must be (low, high) with low <= high inside {'(' if open_low else '['}{low}, {high}], got {value!r}"
        )
    return v[0], v[1]


def check_spatial_dims(spatial_dims: Any) -> int:
    """``spatial_dims`` if it is 2 or 3, else a ``ValueError`` naming it."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def check_axis(name: str, axis: Any, ndim: int = 3) -> int:
    """``axis`` if it is a spatial axis index ``0 .. ndim - 1``, else a ``ValueError`` naming ``name``."""
    if isinstance(axis, bool) or not isinstance(axis, Integral) or not 0 <= axis < ndim:
        raise ValueError(f"{name} must be {', '.join(map(str, range(ndim - 1)))} or {ndim - 1}, got {axis!r}")
    return int(axis)
