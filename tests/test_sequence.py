"""`unroll`: equal to loops over `step`, to the NumPy reference, with lengths, reverse, layouts."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax

import reference
from helpers import make_cell, random_inputs, random_params

B, T, I, H = 3, 7, 2, 4


def setup(cell_name, dtype=jnp.float64, seed=0):
    cell = make_cell(cell_name, H)
    k_params, k_xs = jax.random.split(jax.random.key(seed))
    return cell, random_params(cell, k_params, I, dtype), random_inputs(k_xs, (B, T, I), dtype)


def loop_one_sequence(cell, params, xs, reverse=False):
    """A plain Python loop over `cell.step` for one unbatched sequence `(L, I)`."""
    state = cell.initial_state(params)
    outputs = [None] * xs.shape[0]
    steps = range(xs.shape[0])
    for t in reversed(steps) if reverse else steps:
        state, outputs[t] = cell.step(params, state, xs[t])
    return jnp.stack(outputs), state


def test_unroll_matches_numpy_reference(cell_name):
    cell, params, xs = setup(cell_name)
    hs, final = rnnjax.unroll(cell, params, xs)
    want_hs, want_final = reference.unroll(cell_name, params, xs)
    np.testing.assert_allclose(hs, want_hs, rtol=1e-12, atol=1e-13)
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(want_final)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("reverse", "with_lengths"), [(False, True), (True, False), (True, True)])
def test_unroll_matches_python_loop_per_sequence(cell_name, reverse, with_lengths):
    """Each sequence, cut to its own length, looped on its own, gives the batched result."""
    cell, params, xs = setup(cell_name)
    lengths = jnp.array([T, 1, 4]) if with_lengths else None
    hs, final = rnnjax.unroll(cell, params, xs, lengths=lengths, reverse=reverse)
    for b in range(B):
        length = T if lengths is None else int(lengths[b])
        want_hs, want_final = loop_one_sequence(cell, params, xs[b, :length], reverse)
        np.testing.assert_allclose(hs[b, :length], want_hs, rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(hs[b, length:], 0.0)
        for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(want_final)):
            np.testing.assert_allclose(got[b], want, rtol=1e-13, atol=1e-14)


def test_time_major_and_unbatched_layouts(cell_name):
    cell, params, xs = setup(cell_name)
    hs, final = rnnjax.unroll(cell, params, xs)
    hs_tm, final_tm = rnnjax.unroll(cell, params, jnp.swapaxes(xs, 0, 1), time_major=True)
    assert hs_tm.shape == (T, B, H)
    np.testing.assert_array_equal(jnp.swapaxes(hs_tm, 0, 1), hs)
    jax.tree.map(np.testing.assert_array_equal, final_tm, final)
    hs_one, final_one = rnnjax.unroll(cell, params, xs[1])
    assert hs_one.shape == (T, H)
    np.testing.assert_allclose(hs_one, hs[1], rtol=1e-14, atol=1e-15)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b[1], rtol=1e-14), final_one, final)


def test_initial_state_is_used(cell_name):
    cell, params, xs = setup(cell_name)
    start = jax.tree.map(lambda s: s + 0.7, cell.initial_state(params, (B,)))
    hs, _ = rnnjax.unroll(cell, params, xs, state=start)
    _, first_h = cell.step(params, start, xs[:, 0])
    np.testing.assert_allclose(hs[:, 0], first_h, rtol=1e-14)
    default_hs, _ = rnnjax.unroll(cell, params, xs)
    assert not np.allclose(hs[:, 0], default_hs[:, 0])


@pytest.mark.parametrize("unroll", [3, True])
@pytest.mark.parametrize("cell_name", ["lstm"])  # the loop is the same for every cell
def test_unroll_factor_changes_nothing(cell_name, unroll):
    cell, params, xs = setup(cell_name)
    lengths = jnp.array([T, 2, 5])
    base = rnnjax.unroll(cell, params, xs, lengths=lengths)
    other = rnnjax.unroll(cell, params, xs, lengths=lengths, unroll=unroll)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15), base, other)


def scan_unroll_factors(fn, *args):
    """The `unroll` of every `lax.scan` in the jaxpr of `fn(*args)`, outermost first."""
    factors = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                factors.append(eqn.params["unroll"])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return factors


@pytest.mark.parametrize(
    ("cell_name", "steps", "options", "want"),
    [
        ("rnn", 8, {}, [2]),
        ("gru", 8, {}, [2]),
        ("lstm", 8, {}, [1]),
        ("gru", 7, {}, [1]),  # a remainder step made the loop slower
        ("gru", 8, {"fused": True}, [2]),  # the kernels take the same default
        ("gru", 8, {"fused": True, "unroll": 1}, [1]),
        ("gru", 8, {"unroll": 4}, [4]),
        # Checkpointed: chosen per chunk (4 steps) and for the 3 left over.
        ("rnn", 11, {"checkpoint_every": 4}, [2, 1]),
    ],
)
def test_default_unroll_is_the_cells_preference_where_the_length_divides(
    cell_name, steps, options, want
):
    cell = make_cell(cell_name, H)
    params = random_params(cell, jax.random.key(0), I, jnp.float32)
    xs = jnp.ones((B, steps, I), jnp.float32)
    factors = scan_unroll_factors(lambda p: rnnjax.unroll(cell, p, xs, **options)[0], params)
    assert sorted(set(factors), reverse=True) == want


def test_default_path_is_the_cells_sequence(cell_name):
    """`fused=None` runs a built-in cell on its `Cell.sequence` (the fused kernel for the
    LSTM and the RNN, a tuned scan for the GRU): the same program as `fused=True`, so
    bit-for-bit the same results."""
    cell = make_cell(cell_name, H)
    assert cell.sequence is not None
    params = random_params(cell, jax.random.key(0), I, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (B, 8, I), jnp.float32)

    def forward(fused):
        return lambda p: rnnjax.unroll(cell, p, xs, fused=fused)[0]

    # A fused kernel is a custom_jvp named after it in the undifferentiated program.
    kernel = cell_name in ("lstm", "rnn")
    for fused in (None, True):
        assert ("name=_fused" in str(jax.make_jaxpr(forward(fused))(params))) == kernel
    assert "name=_fused" not in str(jax.make_jaxpr(forward(False))(params))

    def outputs_and_grads(fused):
        loss = lambda p: jnp.sum(jnp.sin(forward(fused)(p)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    for got, want in zip(
        jax.tree.leaves(outputs_and_grads(None)), jax.tree.leaves(outputs_and_grads(True))
    ):
        np.testing.assert_array_equal(got, want)


def test_cells_of_your_own_run_on_the_reference_path():
    builtin = rnnjax.lstm(H)
    custom = rnnjax.Cell(builtin.init, builtin.initial_state, lambda p, s, x: builtin.step(p, s, x))
    assert custom.sequence is None
    params = custom.init(jax.random.key(0), I)
    xs = jnp.ones((B, 5, I))
    np.testing.assert_array_equal(
        rnnjax.unroll(custom, params, xs)[0], rnnjax.unroll(builtin, params, xs, fused=False)[0]
    )
    with pytest.raises(ValueError, match="fused=True"):
        rnnjax.unroll(custom, params, xs, fused=True)


@pytest.mark.parametrize("input_size", [3, 40])  # the fused kernels' two projections
@pytest.mark.parametrize("cell_name", ["rnn", "gru"])
def test_default_unroll_gives_float32_results_equal_to_one_step_up_to_rounding(
    cell_name, input_size
):
    fused = None
    """Steps per loop iteration change only speed. XLA may fuse the unrolled steps'
    elementwise work differently (it does for the RNN's kernel on some CPUs), so the
    float32 results agree to rounding, not always bit for bit."""
    cell = make_cell(cell_name, 16)
    params = random_params(cell, jax.random.key(0), input_size, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (8, 20, input_size), jnp.float32)

    def outputs_and_grads(unroll):
        def loss(params):
            hs, _ = rnnjax.unroll(cell, params, xs, unroll=unroll, fused=fused)
            return jnp.sum(jnp.sin(hs)), hs

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    for got, want in zip(
        jax.tree.leaves(outputs_and_grads(None)), jax.tree.leaves(outputs_and_grads(1))
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("with_lengths", "fused"), [(False, False), (True, True)])
def test_unroll_gradients_match_finite_differences(cell_name, with_lengths, fused):
    cell, params, xs = setup(cell_name)
    lengths = jnp.array([T, 3, 5]) if with_lengths else None

    def loss(params, xs):
        hs, final = rnnjax.unroll(cell, params, xs, lengths=lengths, fused=fused)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(final))

    check_grads(loss, (params, xs), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", [jnp.bfloat16])  # float64: every other test; float32: fused
# The LSTM (a state of two arrays) in the fast suite; the RNN and GRU are compile-heavy in
# bfloat16 and marked slow (CI runs them); their other dtypes are in the fast suite.
@pytest.mark.parametrize(
    "cell_name",
    [
        pytest.param("rnn", marks=pytest.mark.slow),
        "lstm",
        pytest.param("gru", marks=pytest.mark.slow),
    ],
)
def test_dtype_is_preserved(cell_name, dtype):
    cell, params, xs = setup(cell_name, dtype)
    hs, final = rnnjax.unroll(cell, params, xs, lengths=jnp.array([T, 2, 4]))
    assert hs.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(final))
    grads = jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell, p, xs)[0].astype(jnp.float32)))(params)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(grads))
    exact, _ = rnnjax.unroll(
        cell,
        jax.tree.map(lambda a: a.astype(jnp.float64), params),
        xs.astype(jnp.float64),
        lengths=jnp.array([T, 2, 4]),
    )
    tolerance = {jnp.float32: 1e-5, jnp.float64: 1e-14, jnp.bfloat16: 0.1}[dtype]
    np.testing.assert_allclose(hs.astype(jnp.float64), exact, atol=tolerance)


def test_integer_inputs_are_cast_to_the_params_dtype(cell_name):
    cell, params, _ = setup(cell_name, jnp.float32)
    hs, _ = rnnjax.unroll(cell, params, jnp.arange(B * T * I).reshape(B, T, I))
    assert hs.dtype == jnp.float32


@pytest.mark.slow  # compile-heavy; CI runs it
@pytest.mark.parametrize("cell_name", ["lstm"])  # composition is the same for every cell
def test_composes_with_jit_vmap_grad(cell_name):
    cell, params, xs = setup(cell_name)
    lengths = jnp.array([T, 3, 6])
    eager = rnnjax.unroll(cell, params, xs, lengths=lengths)
    jitted = jax.jit(lambda p, x, n: rnnjax.unroll(cell, p, x, lengths=n))(params, xs, lengths)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14), eager, jitted
    )
    # vmap over sequences with unbatched unrolls equals one batched unroll.
    mapped = jax.vmap(lambda x, n: rnnjax.unroll(cell, params, x, lengths=n))(xs, lengths)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14), eager, mapped
    )
    # vmap over an ensemble of parameter sets.
    ensemble = jax.vmap(lambda k: cell.init(k, I))(jax.random.split(jax.random.key(9), 3))
    ensemble_hs, _ = jax.vmap(lambda p: rnnjax.unroll(cell, p, xs))(ensemble)
    second = jax.tree.map(lambda a: a[1], ensemble)
    np.testing.assert_allclose(ensemble_hs[1], rnnjax.unroll(cell, second, xs)[0], rtol=1e-13)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell, p, xs, lengths=lengths)[0])))(
        params
    )
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_second_call_with_same_shapes_does_not_recompile(cell_name):
    cell, params, xs = setup(cell_name)
    traces = []

    @jax.jit
    def loss(params, xs, lengths):
        traces.append(None)
        return jnp.sum(rnnjax.unroll(cell, params, xs, lengths=lengths)[0])

    loss(params, xs, jnp.array([T, 2, 3]))
    loss(jax.tree.map(lambda a: a * 0.5, params), xs + 1.0, jnp.array([1, T, 4]))
    assert len(traces) == 1
    assert loss._cache_size() == 1


def test_errors(cell_name):
    cell, params, xs = setup(cell_name)
    with pytest.raises(TypeError, match=r"cell must be an rnnjax\.Cell"):
        rnnjax.unroll(params, params, xs)
    with pytest.raises(ValueError, match=r"xs must have shape \(B, T, I\) or \(T, I\), got rank 4"):
        rnnjax.unroll(cell, params, xs[None])
    with pytest.raises(ValueError, match=r"xs must have shape \(T, B, I\) or \(T, I\), got rank 1"):
        rnnjax.unroll(cell, params, xs[0, 0], time_major=True)
    with pytest.raises(
        ValueError, match=r"xs must have 2 input features .* got xs of shape \(3, 7, 5\)"
    ):
        rnnjax.unroll(cell, params, jnp.ones((B, T, 5)))
    with pytest.raises(ValueError, match="xs must have at least one time step"):
        rnnjax.unroll(cell, params, jnp.ones((B, 0, I)))
    wrong_batch = cell.initial_state(params, (B + 1,))
    with pytest.raises(ValueError, match=r"state must match the batch of xs \(3,\)"):
        rnnjax.unroll(cell, params, xs, state=wrong_batch)
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\), .* got shape \(2,\)"):
        rnnjax.unroll(cell, params, xs, lengths=jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"lengths must lie in 1..7 .* got values from 0 to 3"):
        rnnjax.unroll(cell, params, xs, lengths=jnp.array([0, 2, 3]))
    with pytest.raises(ValueError, match=r"lengths must lie in 1..7 .* got values from 2 to 8"):
        rnnjax.unroll(cell, params, xs, lengths=np.array([2, 8, 3]))
    with pytest.raises(TypeError, match="lengths must be an integer array, got dtype float"):
        rnnjax.unroll(cell, params, xs, lengths=jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="unroll must be a positive integer, got 0"):
        rnnjax.unroll(cell, params, xs, unroll=0)
    with pytest.raises(TypeError, match="fused must be True, False or None, got 'yes'"):
        rnnjax.unroll(cell, params, xs, fused="yes")


def test_lstm_state_must_be_an_lstm_state():
    cell, params, xs = setup("lstm")
    with pytest.raises(ValueError, match="state must match the batch of xs"):
        rnnjax.unroll(cell, params, xs, state=jnp.zeros((B, H)))
