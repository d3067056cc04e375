"""Strict JAX settings for the whole suite, and the cells every test runs over.

float64 is enabled so that references can be compared to the last digits
(float32 and bfloat16 tests ask for their dtype explicitly), and implicit rank
promotion raises, so a silent broadcasting bug fails here instead of
producing a plausible wrong number.

XLA compiles the suite's many small programs with most optimizations off: compilation,
not running, is where a test's time goes, and the programs compute the same
mathematics (the tolerances below hold either way).

float32 matrix products run in true float32 on every backend: JAX's default
lets recent NVIDIA GPUs compute them in TensorFloat-32 (10 mantissa bits),
which is a different arithmetic from the one the float32-against-float64 tests
bound (seen on an H200: errors near 1e-3 where float32 gives 1e-6). CPU
backends compute float32 products in float32 either way.
"""

import jax
import pytest

from helpers import CELL_NAMES

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "float32")
jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(params=CELL_NAMES)
def cell_name(request) -> str:
    return request.param
