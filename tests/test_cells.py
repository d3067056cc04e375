"""Cells: the documented parameter layout, the maths, dtypes, initialisation, errors."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax

import reference
from helpers import CONSTRUCTORS, make_cell, random_inputs, random_params

BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}
PARAM_TYPES = {"rnn": rnnjax.RNNParams, "lstm": rnnjax.LSTMParams, "gru": rnnjax.GRUParams}


def reference_step(name, params, state, x):
    p = type(params)(*(np.asarray(a) for a in params))
    if name == "lstm":
        h, c = reference.lstm_step(p, tuple(np.asarray(s) for s in state), np.asarray(x))
        return (h, c), h
    step = reference.rnn_step if name == "rnn" else reference.gru_step
    h = step(p, np.asarray(state), np.asarray(x))
    return h, h


def test_params_have_documented_fields_and_layouts(cell_name):
    hidden, inputs = 6, 3
    params = make_cell(cell_name, hidden).init(jax.random.key(0), inputs)
    assert isinstance(params, PARAM_TYPES[cell_name])
    width = BLOCKS[cell_name] * hidden
    assert params.w_ih.shape == (inputs, width)
    assert params.w_hh.shape == (hidden, width)
    assert params.b.shape == (width,)
    if cell_name == "gru":
        assert params._fields == ("w_ih", "w_hh", "b", "b_hn")
        assert params.b_hn.shape == (hidden,)
    else:
        assert params._fields == ("w_ih", "w_hh", "b")


def test_state_layout(cell_name):
    cell = make_cell(cell_name, 4)
    params = cell.init(jax.random.key(0), 2)
    state = cell.initial_state(params, (3,))
    if cell_name == "lstm":
        assert isinstance(state, rnnjax.LSTMState) and state._fields == ("h", "c")
        assert state.h.shape == state.c.shape == (3, 4)
    else:
        assert state.shape == (3, 4)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(state))
    assert cell.initial_state(params).__class__ is state.__class__


@pytest.mark.parametrize(("batch_shape", "input_size"), [((), 1), ((2, 3), 4)])
def test_step_matches_numpy_reference(cell_name, batch_shape, input_size):
    """The step, and its values under `jax.jvp`, equal the NumPy reference."""
    cell = make_cell(cell_name)
    k_params, k_x, k_h = jax.random.split(jax.random.key(1), 3)
    params = random_params(cell, k_params, input_size=input_size)
    x = random_inputs(k_x, (*batch_shape, input_size))
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(k_h, s.shape, s.dtype),
        cell.initial_state(params, batch_shape),
    )
    want_state, want_h = reference_step(cell_name, params, state, x)
    plain = cell.step(params, state, x)
    through_jvp, _ = jax.jvp(lambda x: cell.step(params, state, x), (x,), (jnp.ones_like(x),))
    for new_state, h in (plain, through_jvp):
        np.testing.assert_allclose(h, want_h, rtol=1e-13, atol=1e-14)
        for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(want_state)):
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


def test_scalar_input_unroll_float32_matches_float64(cell_name):
    """The default path at I = 1 (the GRU's tuned step computes its values in another
    form there) in float32, over a sequence, against float64."""
    cell = make_cell(cell_name, 16)
    k_params, k_x = jax.random.split(jax.random.key(3))
    params = random_params(cell, k_params, input_size=1, scale=0.1)
    xs = random_inputs(k_x, (4, 60, 1))
    hs64, _ = rnnjax.unroll(cell, params, xs)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    hs32, _ = jax.jit(lambda p, x: rnnjax.unroll(cell, p, x))(params32, xs.astype(jnp.float32))
    assert hs32.dtype == jnp.float32
    np.testing.assert_allclose(hs32, hs64, rtol=1e-4, atol=1e-5)


def test_lstm_output_gate_and_cell_update_use_documented_blocks():
    """Setting one gate block's bias very negative switches off exactly that gate."""
    hidden = 3
    cell = rnnjax.lstm(hidden, forget_bias=0.0)
    params = cell.init(jax.random.key(0), 2)
    state = rnnjax.LSTMState(h=jnp.zeros((hidden,)), c=jnp.ones((hidden,)))
    x = jnp.ones((2,))
    closed_output = params._replace(b=params.b.at[3 * hidden :].set(-1e3))
    _, h = cell.step(closed_output, state, x)
    np.testing.assert_allclose(h, 0.0, atol=1e-300)
    closed_forget_and_input = params._replace(b=params.b.at[: 2 * hidden].set(-1e3))
    new_state, _ = cell.step(closed_forget_and_input, state, x)
    np.testing.assert_allclose(new_state.c, 0.0, atol=1e-300)


def test_default_initialisation(cell_name):
    hidden = 8
    params = make_cell(cell_name, hidden).init(jax.random.key(3), 5, jnp.float64)
    for block in jnp.split(params.w_hh, BLOCKS[cell_name], axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(hidden), atol=1e-12)
    if cell_name == "lstm":
        expected_bias = np.zeros(4 * hidden)
        expected_bias[hidden : 2 * hidden] = 1.0
        np.testing.assert_array_equal(params.b, expected_bias)
    else:
        assert not np.any(params.b)
    # LeCun normal: variance 1/fan_in over the input weights (a loose statistical bound).
    wide = make_cell(cell_name, 256).init(jax.random.key(4), 64, jnp.float64)
    assert 0.8 / 64 < float(jnp.var(wide.w_ih)) < 1.2 / 64


def test_initializers_are_arguments(cell_name):
    constant = jax.nn.initializers.constant(0.25)
    cell = CONSTRUCTORS[cell_name](
        3, input_init=constant, recurrent_init=jax.nn.initializers.zeros, bias_init=constant
    )
    params = cell.init(jax.random.key(0), 2)
    assert np.all(params.w_ih == 0.25) and not np.any(params.w_hh)
    expected_b = np.full(params.b.shape, 0.25)
    if cell_name == "lstm":
        expected_b[3:6] += 1.0  # forget_bias stacks on top of bias_init
    np.testing.assert_array_equal(params.b, expected_b)


def test_forget_bias_argument():
    params = rnnjax.lstm(2, forget_bias=2.5).init(jax.random.key(0), 1)
    np.testing.assert_array_equal(params.b, [0, 0, 2.5, 2.5, 0, 0, 0, 0])


def test_rnn_activation_choices():
    params = rnnjax.rnn(3).init(jax.random.key(0), 2)
    x, h0 = jnp.array([1.0, -2.0]), jnp.zeros(3)
    pre = x @ params.w_ih
    np.testing.assert_allclose(rnnjax.rnn(3, "relu").step(params, h0, x)[1], np.maximum(pre, 0))
    np.testing.assert_allclose(rnnjax.rnn(3, jnp.sin).step(params, h0, x)[1], np.sin(pre))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_dtype_follows_params(cell_name, dtype):
    cell = make_cell(cell_name)
    params = cell.init(jax.random.key(0), 3, dtype)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    state = cell.initial_state(params, (2,))
    new_state, h = cell.step(params, state, jnp.ones((2, 3), dtype))
    assert h.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(new_state))


def test_default_dtype_is_jax_default_float(cell_name):
    params = make_cell(cell_name).init(jax.random.key(0), 3)
    assert params.w_ih.dtype == jnp.result_type(float)  # float64 here: x64 is on in tests


def test_step_gradients_match_finite_differences(cell_name):
    input_size = 2
    cell = make_cell(cell_name, 3)
    k_params, k_x = jax.random.split(jax.random.key(5))
    params = random_params(cell, k_params, input_size)
    x = random_inputs(k_x, (4, input_size))
    state = jax.tree.map(lambda s: s + 0.3, cell.initial_state(params, (4,)))

    def loss(params, state, x):
        new_state, h = cell.step(params, state, x)
        return jnp.sum(h**2) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(new_state))

    # First order here; second derivatives of whole sequences are checked in test_fused.
    check_grads(loss, (params, state, x), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: rnnjax.rnn(0), ValueError, "hidden_size must be a positive integer, got 0"),
        (lambda: rnnjax.lstm(-3), ValueError, "hidden_size must be a positive integer, got -3"),
        (lambda: rnnjax.gru(2.5), TypeError, "hidden_size must be a positive integer, got float"),
        (lambda: rnnjax.gru(True), TypeError, "hidden_size .* got the bool"),
        (
            lambda: rnnjax.rnn(4, "sigmoidal"),
            ValueError,
            "activation must be one of .* 'sigmoidal'",
        ),
        (lambda: rnnjax.rnn(4, 3), TypeError, "activation must be a name .* got int"),
        (lambda: rnnjax.lstm(4, forget_bias="1"), TypeError, "forget_bias must be a real number"),
        (lambda: rnnjax.gru(4, bias_init=0.0), TypeError, "bias_init must be an initializer"),
    ],
)
def test_constructor_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_init_errors(cell_name):
    cell = make_cell(cell_name)
    with pytest.raises(ValueError, match="input_size must be a positive integer, got 0"):
        cell.init(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype, got int32"):
        cell.init(jax.random.key(0), 2, jnp.int32)
    params = cell.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="batch_shape must be a positive integer, got 0"):
        cell.initial_state(params, (0,))


def test_step_rejects_wrong_input_size(cell_name):
    cell = make_cell(cell_name)
    params = cell.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch, 3\) .* got \(2, 4\)"):
        cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 4)))


def test_chrono_bias_init():
    hidden, max_length = 64, 200
    cell = rnnjax.lstm(hidden, forget_bias=0.0, bias_init=rnnjax.chrono_bias_init(max_length))
    b = np.asarray(cell.init(jax.random.key(0), 2, jnp.float64).b)
    forget, inputs = b[hidden : 2 * hidden], b[:hidden]
    assert (forget >= 0).all() and (forget <= np.log(max_length - 1)).all()
    np.testing.assert_array_equal(inputs, -forget)
    assert not b[2 * hidden :].any()
    # Time scales 1/(1 - sigmoid(b_f)) ~ u spread over 1..T-1: a wide range, not one value.
    assert np.exp(forget).max() > 0.8 * max_length and np.exp(forget).min() < 0.2 * max_length
    with pytest.raises(ValueError, match="max_length must be at least 3, got 2"):
        rnnjax.chrono_bias_init(2)
    with pytest.raises(ValueError, match=r"initialises an LSTM bias of shape \(4H,\)"):
        rnnjax.gru(3, bias_init=rnnjax.chrono_bias_init(10)).init(jax.random.key(0), 1)
