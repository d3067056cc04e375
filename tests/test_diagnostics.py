"""Diagnostics: exact against explicit gradients, analytic on a linear RNN, no underflow."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import diagnostics
from rnnjax.diagnostics import (
    cell_health,
    gradient_horizon,
    jacobian_norms,
    state_gradient_norms,
    state_gradient_norms_by_perturbation,
)

from helpers import make_cell, random_inputs, random_params


def head(hs):
    """A loss that reads every step and the last one, per sequence: `(B,)`."""
    return jnp.sum(jnp.sin(hs[:, -1]), axis=-1) + jnp.mean(hs**2, axis=(1, 2))


def explicit_norms(cell, params, xs):
    """dL/ds_t for each t by its own gradient: split the unroll at t and differentiate."""
    batch, steps, _ = xs.shape
    state = cell.initial_state(params, (batch,))
    states, outputs = [], []
    for t in range(steps):
        state, h = cell.step(params, state, xs[:, t])
        states.append(state)
        outputs.append(h)
    per_step = []
    for t in range(steps):

        def loss_from(state_t, t=t):
            hs = [*outputs[:t], diagnostics._hidden(state_t)]
            state = state_t
            for u in range(t + 1, steps):
                state, h = cell.step(params, state, xs[:, u])
                hs.append(h)
            return jnp.sum(head(jnp.stack(hs, axis=1)))

        per_step.append(jax.grad(loss_from)(states[t]))
    norms = []
    for leaf in range(len(jax.tree.leaves(per_step[0]))):
        by_step = np.stack([np.asarray(jax.tree.leaves(g)[leaf]) for g in per_step])  # (T, B, H)
        mean_norm = np.linalg.norm(by_step, axis=-1).mean(axis=1)
        with np.errstate(divide="ignore"):
            norms.append(np.log10(mean_norm))
    return norms


def test_one_pass_and_log_space_norms_equal_explicit_per_step_gradients(cell_name):
    cell = make_cell(cell_name, 4)
    params = random_params(cell, jax.random.key(0), 2)
    xs = random_inputs(jax.random.key(1), (3, 6, 2))
    want = explicit_norms(cell, params, xs)
    for method in (state_gradient_norms_by_perturbation, state_gradient_norms):
        got = method(cell, params, xs, head)
        leaves = [got.h] if got.c is None else [got.h, got.c]
        assert (got.c is not None) == (cell_name == "lstm")
        for g, w in zip(leaves, want):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)


def linear_rnn(a, hidden=3, dtype=jnp.float32):
    cell = rnnjax.rnn(hidden, activation=lambda v: v)
    params = rnnjax.RNNParams(
        w_ih=jnp.full((1, hidden), 0.3, dtype),
        w_hh=a * jnp.eye(hidden, dtype=dtype),
        b=jnp.zeros(hidden, dtype),
    )
    return cell, params


# float64 matches to rounding; float32 accumulates 2000 rounded log-steps (error ~1e-5 relative).
@pytest.mark.parametrize(("dtype", "rtol"), [(jnp.float64, 1e-12), (jnp.float32, 1e-4)])
def test_linear_rnn_follows_a_to_the_power_t_distance_without_underflow(dtype, rtol):
    """h_T = a^(T-t) h_t + ..., so ||dL/dh_t|| = a^(T-t) ||u||: 10^-600 at t = 1, T = 2000,
    far below the smallest float64 (1e-308)."""
    a, steps, hidden = 0.5, 2000, 3
    cell, params = linear_rnn(a, hidden, dtype)
    xs = jnp.ones((2, steps, 1), dtype)
    u = jnp.array([1.0, -2.0, 2.0], dtype)  # ||u|| = 3
    norms = state_gradient_norms(cell, params, xs, lambda hs: hs[:, -1] @ u)
    t = np.arange(1, steps + 1)
    exact = (steps - t) * math.log10(a) + math.log10(3.0)
    assert norms.h.dtype == dtype and np.isfinite(np.asarray(norms.h)).all()
    np.testing.assert_allclose(np.asarray(norms.h), exact, rtol=rtol, atol=1e-6)
    jacobians = jacobian_norms(cell, params, xs)
    np.testing.assert_allclose(
        np.asarray(jacobians.h),
        (steps - t) * math.log10(a) + 0.5 * math.log10(hidden),
        rtol=rtol,
        atol=1e-6,
    )
    # The plain float32 computation underflows to zero long before t = 1.
    plain = state_gradient_norms_by_perturbation(cell, params, xs, lambda hs: hs[:, -1] @ u)
    assert np.isneginf(np.asarray(plain.h)[0])
    # Horizon: the relative norm a^(T-t) stays above 1e-3 for floor(3 / log10 2) = 9 steps back.
    assert gradient_horizon(norms.h, threshold=1e-3) == 9


def test_log_space_float32_agrees_with_float64_where_float64_does_not_underflow(cell_name):
    cell = make_cell(cell_name, 16)
    params64 = cell.init(jax.random.key(0), 2, jnp.float64)
    xs64 = random_inputs(jax.random.key(1), (4, 300, 2))
    reference = state_gradient_norms_by_perturbation(cell, params64, xs64, head)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params64)
    fast = state_gradient_norms(cell, params32, xs64.astype(jnp.float32), head)
    finite = np.isfinite(np.asarray(reference.h))
    assert finite.sum() > 250  # the comparison covers most steps
    np.testing.assert_allclose(
        np.asarray(fast.h)[finite], np.asarray(reference.h)[finite], atol=2e-3
    )


def test_norms_stay_finite_for_thousands_of_steps_in_float32(cell_name):
    cell = make_cell(cell_name, 8)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = random_inputs(jax.random.key(1), (2, 3000, 1), jnp.float32)
    norms = state_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
    assert np.isfinite(np.asarray(norms.h)).all()
    assert float(norms.h[0]) < float(norms.h[-1]) - 20  # vanished by 20 orders of magnitude


def test_gradient_horizon_counts_steps_back_from_the_end():
    assert gradient_horizon([-9.0, -5.0, -2.5, -1.0, 0.0]) == 2
    assert gradient_horizon([0.0, 0.0, 0.0]) == 2  # never falls: the whole sequence
    assert gradient_horizon([0.0, -4.0, 0.0], threshold=1e-3) == 0
    assert gradient_horizon([-1.5, -0.5, 0.0], threshold=0.1) == 1
    with pytest.raises(ValueError, match="threshold must be in"):
        gradient_horizon([0.0], threshold=2.0)


def test_cell_health_figures():
    cell, params = linear_rnn(0.8)
    xs = jnp.ones((2, 5, 1), jnp.float32)
    health = cell_health(cell, params, xs)
    assert health.spectral_radius == pytest.approx(0.8, rel=1e-6)
    assert health.max_singular_value == pytest.approx(0.8, rel=1e-6)
    assert math.isnan(health.mean_forget_gate) and math.isnan(health.mean_update_gate)
    saturating = rnnjax.RNNParams(params.w_ih * 100, params.w_hh, params.b)
    assert cell_health(rnnjax.rnn(3), saturating, xs).saturated_fraction == 1.0
    lstm = rnnjax.lstm(4, forget_bias=30.0)
    lstm_health = cell_health(lstm, lstm.init(jax.random.key(0), 1), xs)
    assert lstm_health.mean_forget_gate == pytest.approx(1.0, abs=1e-6)
    gru = rnnjax.gru(4, bias_init=jax.nn.initializers.constant(-30.0))
    assert cell_health(gru, gru.init(jax.random.key(0), 1), xs).mean_update_gate < 1e-6


def test_probe_compiles_once_and_matches_the_functions():
    from rnnjax.models import sequence_model

    cell = rnnjax.gru(6)
    model = sequence_model(cell, output_size=1)
    params = model.init(jax.random.key(0), 2)
    xs = random_inputs(jax.random.key(1), (3, 20, 2))
    targets = jnp.ones((3, 1))
    probe = diagnostics.make_probe(cell, "mse", per_step=False)
    first = probe(params, xs, targets)
    probe(jax.tree.map(lambda a: a * 0.9, params), xs, targets)
    assert probe._cache_size() == 1
    head = diagnostics.readout_head(params.readout, "mse", targets, per_step=False)
    np.testing.assert_allclose(
        first.gradients.h, state_gradient_norms(cell, params.layers[0], xs, head).h, rtol=1e-10
    )
    np.testing.assert_allclose(
        first.jacobians.h, jacobian_norms(cell, params.layers[0], xs).h, rtol=1e-10
    )


def test_diagnostics_errors():
    cell = rnnjax.rnn(3)
    params = cell.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"xs must have shape \(B, T, 2\), got \(5, 2\)"):
        state_gradient_norms(cell, params, jnp.ones((5, 2)), head)
    with pytest.raises(TypeError, match="cell must be an rnnjax"):
        jacobian_norms("rnn", params, jnp.ones((1, 5, 2)))
