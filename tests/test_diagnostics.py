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
    gradient_decay,
    gradient_horizon,
    input_gradient_norms,
    jacobian_norms,
    state_gradient_norms,
    state_gradient_norms_by_perturbation,
)

from helpers import make_cell, random_inputs, random_params


def head(hs):
    """A loss that reads every step and the last one, per sequence: `(B,)`."""
    return jnp.sum(jnp.sin(hs[:, -1]), axis=-1) + jnp.mean(hs**2, axis=(1, 2))


def explicit_norms(cell, params, xs):
    """dL/ds_t for each state s_t that step t + 1 reads, t = 0..T-1, by its own gradient:
    split the unroll before that step and differentiate. Returns the log10 batch-mean
    norm over the whole state, then one per leaf."""
    batch, steps, _ = xs.shape
    state = cell.initial_state(params, (batch,))
    states, outputs = [], []
    for t in range(steps):
        states.append(state)
        state, h = cell.step(params, state, xs[:, t])
        outputs.append(h)
    per_step = []
    for t in range(steps):

        def loss_from(state, t=t):
            hs = list(outputs[:t])
            for u in range(t, steps):
                state, h = cell.step(params, state, xs[:, u])
                hs.append(h)
            return jnp.sum(head(jnp.stack(hs, axis=1)))

        per_step.append(jax.grad(loss_from)(states[t]))

    def log10_mean_norm(leaf_indices):
        squares = sum(
            np.stack([np.asarray(jax.tree.leaves(g)[i]) ** 2 for g in per_step])
            .reshape(steps, batch, -1)
            .sum(axis=-1)
            for i in leaf_indices
        )
        with np.errstate(divide="ignore"):
            return np.log10(np.sqrt(squares).mean(axis=1))

    count = len(jax.tree.leaves(per_step[0]))
    return [log10_mean_norm(range(count))] + [log10_mean_norm([i]) for i in range(count)]


class DictCell:
    """A cell of one's own: dict parameters and a dict state of two arrays (a slow and
    a fast trace of a tanh RNN), on the contract and nothing else."""

    @staticmethod
    def make(hidden=4):
        def init(key, input_size, dtype=None):
            k1, k2 = jax.random.split(key)
            dtype = dtype or jnp.float64
            return {
                "w": 0.5 * jax.random.normal(k1, (input_size, hidden), dtype),
                "u": 0.5 * jax.random.normal(k2, (hidden, hidden), dtype),
            }

        def initial_state(params, batch_shape=()):
            zeros = jnp.zeros((*batch_shape, hidden), params["u"].dtype)
            return {"fast": zeros, "slow": zeros}

        def step(params, state, x):
            fast = jnp.tanh(x @ params["w"] + state["slow"] @ params["u"])
            slow = 0.9 * state["slow"] + 0.1 * fast
            return {"fast": fast, "slow": slow}, fast + slow

        return rnnjax.Cell(init, initial_state, step)


def readme_cell(hidden=4):
    """The README's cell of one's own: dict parameters, a bare-array state."""

    def init(key, input_size, dtype=None):
        return {"w": jax.random.normal(key, (input_size + hidden, hidden)) * 0.3}

    def initial_state(params, batch_shape=()):
        return jnp.zeros((*batch_shape, hidden), params["w"].dtype)

    def step(params, h, x):
        h = jnp.tanh(jnp.concatenate([x, h], axis=-1) @ params["w"])
        return h, h

    return rnnjax.Cell(init, initial_state, step)


def assert_norms_equal(got, want):
    np.testing.assert_allclose(np.asarray(got.state), want[0], rtol=1e-10, atol=1e-12)
    assert len(got.leaves) == len(want) - 1
    for g, w in zip(got.leaves.values(), want[1:]):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-10, atol=1e-12)


def test_one_pass_and_log_space_norms_equal_explicit_per_step_gradients(cell_name):
    cell = make_cell(cell_name, 4)
    params = random_params(cell, jax.random.key(0), 2)
    xs = random_inputs(jax.random.key(1), (3, 6, 2))
    want = explicit_norms(cell, params, xs)
    for method in (state_gradient_norms_by_perturbation, state_gradient_norms):
        got = method(cell, params, xs, head)
        assert list(got.leaves) == (["h", "c"] if cell_name == "lstm" else ["state"])
        assert_norms_equal(got, want)


@pytest.mark.parametrize("make", [DictCell.make, readme_cell])
def test_diagnostics_of_cells_of_ones_own(make):
    cell = make()
    params = cell.init(jax.random.key(0), 2, jnp.float64)
    xs = random_inputs(jax.random.key(1), (3, 6, 2))
    want = explicit_norms(cell, params, xs)
    for method in (state_gradient_norms_by_perturbation, state_gradient_norms):
        assert_norms_equal(method(cell, params, xs, head), want)
    jacobians = jacobian_norms(cell, params, xs)
    assert jacobians.state.shape == (6,) and np.isfinite(np.asarray(jacobians.state)).all()
    health = cell_health(cell, params, xs)
    assert math.isnan(health.spectral_radius) and 0 <= health.saturated_fraction <= 1
    assert "no w_ih, w_hh and b" in health.unavailable[0]


@pytest.mark.parametrize("cell_name", ["rnn", "lstm"])  # one state array, and two
def test_jacobian_norms_equal_explicit_jacobians(cell_name):
    cell = make_cell(cell_name, 3)
    params = random_params(cell, jax.random.key(0), 2)
    xs = random_inputs(jax.random.key(1), (2, 5, 2))
    got = jacobian_norms(cell, params, xs)
    states, _ = diagnostics._forward(cell, params, jnp.swapaxes(xs, 0, 1))
    for t in range(5):

        def last_output(state, t=t):
            for u in range(t, 5):
                state, h = cell.step(params, state, xs[:, u])
            return h

        start = jax.tree.map(lambda s, t=t: s[t], states)
        jac = jax.jacrev(last_output)(start)  # per leaf (B, H, B, ...)
        squares = sum(
            np.einsum("bhb...->bh...", np.asarray(j) ** 2).reshape(2, -1).sum(axis=1)
            for j in jax.tree.leaves(jac)
        )
        want = np.log10(np.sqrt(squares).mean())
        np.testing.assert_allclose(float(got.state[t]), want, rtol=1e-10)


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
    t = np.arange(steps)  # g_t for the state s_t that step t + 1 reads
    exact = (steps - t) * math.log10(a) + math.log10(3.0)
    assert norms.state.dtype == dtype and np.isfinite(np.asarray(norms.state)).all()
    np.testing.assert_allclose(np.asarray(norms.state), exact, rtol=rtol, atol=1e-6)
    jacobians = jacobian_norms(cell, params, xs)
    np.testing.assert_allclose(
        np.asarray(jacobians.state),
        (steps - t) * math.log10(a) + 0.5 * math.log10(hidden),
        rtol=rtol,
        atol=1e-6,
    )
    # The plain float32 computation underflows to zero long before t = 1.
    plain = state_gradient_norms_by_perturbation(cell, params, xs, lambda hs: hs[:, -1] @ u)
    assert np.isneginf(np.asarray(plain.state)[0])
    # Horizon: the relative norm a^(T-t) stays above 1e-3 for floor(3 / log10 2) = 9 steps back.
    assert gradient_horizon(norms.state, threshold=1e-3) == 9


@pytest.mark.slow  # compile-heavy; CI runs it
@pytest.mark.parametrize("cell_name", ["rnn", "lstm"])  # one state array, and two
def test_log_space_float32_agrees_with_float64_where_float64_does_not_underflow(cell_name):
    cell = make_cell(cell_name, 16)
    params64 = cell.init(jax.random.key(0), 2, jnp.float64)
    xs64 = random_inputs(jax.random.key(1), (4, 300, 2))
    reference = state_gradient_norms_by_perturbation(cell, params64, xs64, head)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params64)
    fast = state_gradient_norms(cell, params32, xs64.astype(jnp.float32), head)
    finite = np.isfinite(np.asarray(reference.state))
    assert finite.sum() > 250  # the comparison covers most steps
    np.testing.assert_allclose(
        np.asarray(fast.state)[finite], np.asarray(reference.state)[finite], atol=2e-3
    )


def test_norms_stay_finite_for_thousands_of_steps_in_float32(cell_name):
    cell = make_cell(cell_name, 8)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = random_inputs(jax.random.key(1), (2, 3000, 1), jnp.float32)
    norms = state_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
    assert np.isfinite(np.asarray(norms.state)).all()
    assert float(norms.state[0]) < float(norms.state[-1]) - 20  # vanished by 20 decades


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
    xs = random_inputs(jax.random.key(1), (3, 10, 2))
    targets = jnp.ones((3, 1))
    probe = diagnostics.make_probe(cell, "mse", per_step=False)
    first = probe(params, xs, targets)
    probe(jax.tree.map(lambda a: a * 0.9, params), xs, targets)
    assert probe._cache_size() == 1
    head = diagnostics.readout_head(params.readout, "mse", targets, per_step=False)
    np.testing.assert_allclose(
        first.gradients.state,
        state_gradient_norms(cell, params.layers[0], xs, head).state,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        first.inputs, input_gradient_norms(cell, params.layers[0], xs, head), rtol=1e-10
    )
    np.testing.assert_allclose(
        first.jacobians.state, jacobian_norms(cell, params.layers[0], xs).state, rtol=1e-10
    )


@pytest.mark.parametrize("cell_name", ["rnn", "lstm"])
def test_input_gradients_equal_the_gradient_with_respect_to_the_inputs(cell_name):
    cell = make_cell(cell_name, 5)
    params = cell.init(jax.random.key(0), 3, jnp.float64)
    xs = random_inputs(jax.random.key(1), (2, 12, 3))
    norms = input_gradient_norms(cell, params, xs, head)

    def loss(xs):
        return jnp.sum(head(rnnjax.unroll(cell, params, xs)[0]))

    exact = np.linalg.norm(np.asarray(jax.grad(loss)(xs)), axis=-1)  # (B, T)
    assert norms.shape == (2, 12)
    np.testing.assert_allclose(10 ** np.asarray(norms), exact, rtol=1e-10)


def test_input_gradients_do_not_underflow():
    cell, params = linear_rnn(0.5, 3, jnp.float32)
    xs = jnp.ones((2, 400, 1), jnp.float32)
    norms = np.asarray(input_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], -1)))
    assert np.isfinite(norms).all()
    # Each step back multiplies by a = 0.5: 399 steps back is 120 decades below the last.
    np.testing.assert_allclose(norms[:, -1] - norms[:, 0], 399 * math.log10(2.0), rtol=1e-4)


def test_gradient_decay_is_the_least_squares_slope():
    rng = np.random.default_rng(0)
    values = 0.01 * np.arange(50) - 3 + rng.normal(0, 0.1, 50)
    np.testing.assert_allclose(gradient_decay(values), np.polyfit(np.arange(50), values, 1)[0])
    with_zero = np.concatenate([[-np.inf], values[1:]])  # an exactly zero gradient is left out
    np.testing.assert_allclose(
        gradient_decay(with_zero), np.polyfit(np.arange(1, 50), values[1:], 1)[0]
    )
    assert math.isnan(gradient_decay([-np.inf, 1.0]))
    assert diagnostics.steps_per_decade(gradient_decay([-2.0, -1.5, -1.0])) == pytest.approx(2.0)
    assert diagnostics.steps_per_decade(0.0) == math.inf
    assert diagnostics.steps_per_decade(-0.1) == pytest.approx(-10.0)  # grows going back


def test_a_masked_head_leaves_only_the_propagated_gradient_before_the_masked_steps():
    from rnnjax.models import sequence_model

    cell = rnnjax.gru(6)
    model = sequence_model(cell, output_size=4, per_step=True)
    params = model.init(jax.random.key(0), 2, jnp.float64)
    xs = random_inputs(jax.random.key(1), (2, 8, 2))
    labels = jax.random.randint(jax.random.key(2), (2, 8), 0, 4)
    mask = jnp.broadcast_to(jnp.arange(8) >= 5, (2, 8))  # the last three steps count
    masked = diagnostics.readout_head(params.readout, "cross_entropy", labels, True, mask)
    layer = params.layers[0]
    hs = rnnjax.unroll(cell, layer, xs)[0]
    logits = hs @ params.readout.w + params.readout.b[None, None]
    np.testing.assert_allclose(masked(hs), optax_ce(logits, labels)[:, 5:].mean(axis=1), rtol=1e-12)
    norms = state_gradient_norms(cell, layer, xs, masked)
    reference = state_gradient_norms_by_perturbation(cell, layer, xs, masked)
    np.testing.assert_allclose(np.asarray(norms.state), np.asarray(reference.state), rtol=1e-10)
    with pytest.raises(ValueError, match="per-step"):
        diagnostics.readout_head(params.readout, "mse", labels, False, mask)


def optax_ce(logits, labels):
    import optax

    return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def test_diagnostics_errors():
    cell = rnnjax.rnn(3)
    params = cell.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"xs must have shape \(B, T, I\), got \(5, 2\)"):
        state_gradient_norms(cell, params, jnp.ones((5, 2)), head)
    with pytest.raises(TypeError, match="cell must be an rnnjax"):
        jacobian_norms("rnn", params, jnp.ones((1, 5, 2)))
