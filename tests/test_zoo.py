"""`rnnjax.zoo`: the public constructors join the equations and their fast path; cells
by name."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import cells, zoo

from helpers import random_inputs, random_params


@pytest.mark.parametrize("name", sorted(zoo.CELLS))
def test_public_cells_are_the_equations_with_a_fast_path(name):
    public = zoo.make_cell(name, 4)
    equations = getattr(cells, name)(4)
    assert public.sequence is not None and equations.sequence is None
    params = random_params(public, jax.random.key(0), 3)
    # Same parameters, same state, the same step: only `sequence` differs.
    assert jax.tree.structure(params) == jax.tree.structure(
        equations.init(jax.random.key(0), 3, jnp.float64)
    )
    x = random_inputs(jax.random.key(1), (2, 3))
    state = public.initial_state(params, (2,))
    for got, want in zip(
        jax.tree.leaves(public.step(params, state, x)),
        jax.tree.leaves(equations.step(params, state, x)),
    ):
        np.testing.assert_array_equal(got, want)


def test_constructor_options_reach_the_equations():
    lstm = zoo.make_cell("lstm", 3, forget_bias=0.0)
    assert float(jnp.abs(lstm.init(jax.random.key(0), 2).b).max()) == 0.0
    assert rnnjax.rnn(3, activation="relu").sequence is not None
    assert rnnjax.rnn(3, activation=jnp.sin).sequence is None  # no kernel for a callable


def test_unknown_names_and_options_are_refused():
    with pytest.raises(ValueError, match=r"cell must be one of \[.*'rnn'\], got 'tcn'"):
        zoo.make_cell("tcn", 4)
    with pytest.raises(TypeError):
        zoo.make_cell("gru", 4, forget_bias=1.0)


def test_cells_are_named_in_one_place():
    from rnnjax import runs

    assert runs.CELLS == tuple(zoo.CELLS) == tuple(rnnjax.CELLS)


def test_building_a_cell_does_not_start_jax():
    """Cells are built before `use_cpu_cores` or `jax.distributed.initialize`, which must
    come before JAX starts its runtime; no constructor may start it."""
    code = (
        "import rnnjax\n"
        "cells = [rnnjax.make_cell(name, 4) for name in rnnjax.CELLS]\n"
        "rnnjax.parallel.use_cpu_cores(2)\n"
        "import jax\n"
        "print(jax.local_device_count('cpu'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2"
