"""Strict JAX settings for the whole suite, and the cells every test runs over.

float64 is enabled so that references can be compared to the last digits
(float32 and bfloat16 tests ask for their dtype explicitly), and implicit rank
promotion raises, so a silent broadcasting bug fails here instead of
producing a plausible wrong number.
"""

import jax
import pytest

from helpers import CELL_NAMES

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(params=CELL_NAMES)
def cell_name(request) -> str:
    return request.param
