"""Argument checks shared by the public functions.

Every check runs at trace time on static information (Python values, shapes and
dtypes), so it costs nothing when the compiled function runs. Messages name the
argument, what was expected and what was received.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import numpy as np


def positive_int(name: str, value: Any) -> int:
    """Returns `value` as an `int`, or raises if it is not a positive integer."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer, got the bool {value!r}")
    try:
        as_int = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a positive integer, got {type(value).__name__} {value!r}"
        ) from None
    if as_int <= 0:
        raise ValueError(f"{name} must be a positive integer, got {as_int}")
    return as_int


def floating_dtype(name: str, dtype: Any) -> np.dtype:
    """Returns `dtype` as a NumPy dtype, or raises if it is not a float dtype."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype!r}") from None
    if not jax.dtypes.issubdtype(resolved, np.floating):
        raise TypeError(f"{name} must be a floating-point dtype, got {resolved}")
    return resolved


def shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
