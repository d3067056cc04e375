"""The later cells (IndRNN, expRNN, LRU, minGRU, minLSTM): equal to float64 NumPy references
written from their papers, gradients against finite differences, `unroll` against a Python
loop over `step`, their fast paths against the reference path, and on the whole contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import cells, scans

import reference
from helpers import random_inputs, random_params

ZOO = ("indrnn", "exprnn", "lru", "min_gru", "min_lstm")
B, T, I, H = 3, 7, 2, 4


@pytest.fixture(params=ZOO)
def name(request):
    return request.param


def numpy_step(name, params, state, x):
    """The reference's `(state, h)` for one step, NumPy float64 throughout."""
    p = type(params)(*(np.asarray(a, np.float64) for a in params))
    x = np.asarray(x, np.float64)
    if name == "lru":
        s = np.asarray(state.re) + 1j * np.asarray(state.im)
        s, y = reference.lru_step(p, s, x)
        return (s.real, s.imag), y
    h = getattr(reference, f"{name}_step")(p, np.asarray(state, np.float64), x)
    return h, h


def test_step_matches_the_papers_equations(name):
    cell = rnnjax.make_cell(name, H)
    params = random_params(cell, jax.random.key(0), I, scale=0.3)
    x = random_inputs(jax.random.key(1), (B, I))
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(jax.random.key(2), s.shape, s.dtype),
        cell.initial_state(params, (B,)),
    )
    want_state, want_h = numpy_step(name, params, state, x)
    got_state, got_h = cell.step(params, state, x)
    np.testing.assert_allclose(got_h, want_h, rtol=1e-12, atol=1e-12)
    for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_step_gradients_match_finite_differences(name):
    cell = rnnjax.make_cell(name, 3)
    params = random_params(cell, jax.random.key(3), 2, scale=0.3)
    x = random_inputs(jax.random.key(4), (2, 2))
    state = jax.tree.map(lambda s: s + 0.3, cell.initial_state(params, (2,)))

    def loss(params, state, x):
        new, h = cell.step(params, state, x)
        return jnp.sum(jnp.sin(h)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(new))

    check_grads(loss, (params, state, x), order=1, modes=("fwd", "rev"))


def test_unroll_equals_a_python_loop_over_step(name):
    cell = rnnjax.make_cell(name, H)
    params = random_params(cell, jax.random.key(5), I, scale=0.3)
    xs = random_inputs(jax.random.key(6), (B, T, I))
    state = cell.initial_state(params, (B,))
    outputs = []
    for t in range(T):
        state, h = cell.step(params, state, xs[:, t])
        outputs.append(h)
    hs, final = rnnjax.unroll(cell, params, xs, fused=False)
    np.testing.assert_allclose(hs, jnp.stack(outputs, axis=1), rtol=1e-12, atol=1e-12)
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(state)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def outputs_and_grads(cell, params, xs, **options):
    def loss(params, xs):
        hs, final = rnnjax.unroll(cell, params, xs, **options)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(final))

    return rnnjax.unroll(cell, params, xs, **options), jax.grad(loss, (0, 1))(params, xs)


# Every whole-sequence path of every cell; the one a CPU runs by default (the library's
# `Cell.sequence`) in the fast suite, the others marked slow (CI runs them too).
SEQUENCE_PATHS = [
    ("indrnn", None),
    ("exprnn", None),
    ("lru", "sequential"),
    pytest.param("lru", "parallel", marks=pytest.mark.slow),
    ("min_gru", "fused"),
    pytest.param("min_gru", "parallel", marks=pytest.mark.slow),
    pytest.param("min_gru", "sequential", marks=pytest.mark.slow),
    ("min_lstm", "fused"),
    pytest.param("min_lstm", "parallel", marks=pytest.mark.slow),
    pytest.param("min_lstm", "sequential", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("cell_name", "method"), SEQUENCE_PATHS)
def test_fast_path_equals_the_reference_path(cell_name, method):
    """Outputs, final state and gradients in float64, padded and reversed (the hardest
    case); for the linear recurrences each of the parallel, sequential and fused scans."""
    cell = rnnjax.make_cell(cell_name, H)
    assert cell.sequence is not None
    if method is not None:
        cell = cell._replace(sequence=getattr(scans, f"{cell_name}_sequence")(method))
    params = random_params(cell, jax.random.key(7), I, scale=0.3)
    assert_fast_path_equals_reference(cell, params, random_inputs(jax.random.key(8), (B, T, I)))


def assert_fast_path_equals_reference(cell, params, xs):
    """`Cell.sequence` against scanning `step`, padded and reversed; returns the fast
    path's `(outputs, gradients)`."""
    options = dict(reverse=True, lengths=jnp.array([T, 2, 5]))
    want = outputs_and_grads(cell, params, xs, fused=False, **options)
    got = outputs_and_grads(cell, params, xs, fused=True, **options)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)
    return got


def test_fast_path_forward_mode_equals_the_reference_path(name):
    cell = rnnjax.make_cell(name, H)
    params = random_params(cell, jax.random.key(9), I, scale=0.3)
    xs = random_inputs(jax.random.key(10), (B, T, I))
    tangents = jax.tree.map(lambda a: jax.random.normal(jax.random.key(11), a.shape), (params, xs))

    def run(fused):
        return jax.jvp(lambda p, x: rnnjax.unroll(cell, p, x, fused=fused), (params, xs), tangents)

    for g, w in zip(jax.tree.leaves(run(True)), jax.tree.leaves(run(False))):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.bfloat16])  # float64: every other test here
def test_dtypes_and_layouts(name, dtype):
    cell = rnnjax.make_cell(name, H)
    params = cell.init(jax.random.key(0), I, dtype)
    xs = jnp.ones((T, B, I), dtype)
    hs, final = jax.jit(lambda p, x: rnnjax.unroll(cell, p, x, time_major=True))(params, xs)
    assert hs.shape == (T, B, H) and hs.dtype == dtype
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(final))


# The LRU (a state of two arrays) and minGRU (a linear recurrence) in the fast suite; the
# cells whose state and path repeat theirs are compile-heavy here, marked slow (CI runs them).
@pytest.mark.parametrize(
    "name",
    [
        "lru",
        "min_gru",
        pytest.param("indrnn", marks=pytest.mark.slow),
        pytest.param("exprnn", marks=pytest.mark.slow),
        pytest.param("min_lstm", marks=pytest.mark.slow),
    ],
)
def test_zoo_cells_in_layers_models_and_diagnostics(name):
    cell = rnnjax.make_cell(name, H)
    layer = rnnjax.stack(rnnjax.bidirectional(cell), cell)
    params = layer.init(jax.random.key(0), I)
    hs, _ = layer.apply(params, jnp.ones((B, T, I)), lengths=jnp.array([T, 3, 1]))
    assert hs.shape == (B, T, H)
    from rnnjax.diagnostics import cell_health, jacobian_norms, state_gradient_norms

    cell_params = cell.init(jax.random.key(1), I)
    xs = random_inputs(jax.random.key(2), (B, T, I))
    norms = state_gradient_norms(cell, cell_params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
    assert norms.state.shape == (T,) and np.isfinite(np.asarray(norms.state)).all()
    assert jacobian_norms(cell, cell_params, xs).state.shape == (T,)
    health = cell_health(cell, cell_params, xs)
    assert 0 <= health.saturated_fraction <= 1


def test_exprnn_recurrent_matrix_is_orthogonal_and_henaff_spreads_its_eigenvalues():
    params = cells.exprnn(6).init(jax.random.key(0), 2)
    w = cells.orthogonal_matrix(params.a)
    np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-12)
    moduli = np.abs(np.linalg.eigvals(np.asarray(w)))
    np.testing.assert_allclose(moduli, 1.0, atol=1e-12)


def test_lru_ring_initialisation():
    params = cells.lru(8, 64, r_min=0.9, r_max=0.99).init(jax.random.key(0), 3)
    re, im = cells.lru_lambda(params)
    moduli = np.hypot(np.asarray(re), np.asarray(im))
    assert moduli.min() >= 0.9 - 1e-12 and moduli.max() <= 0.99 + 1e-12
    np.testing.assert_allclose(np.exp(params.gamma_log), np.sqrt(1 - moduli**2), rtol=1e-12)


def test_min_lstm_gates_are_normalised():
    """h' = a h + b with a + i' = 1: a constant candidate is a fixed point."""
    cell = cells.min_lstm(3)
    params = cell.init(jax.random.key(0), 2)
    a, b = cells.min_lstm_coefficients(params, jnp.ones((4, 2)))
    assert bool(((a > 0) & (a < 1)).all()) and bool((b > 0).all())


def test_linear_recurrence_methods_agree():
    a = jax.random.uniform(jax.random.key(0), (50, 3, 2))
    b = jax.random.normal(jax.random.key(1), (50, 3, 2))
    initial = jnp.ones((3, 2))
    valid = jnp.arange(50)[:, None] < jnp.array([50, 20, 1])[None]
    for reverse in (False, True):
        runs = [
            scans.linear_recurrence(a, b, initial, valid, reverse=reverse, method=m)
            for m in ("parallel", "sequential")
        ]
        np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method must be one of"):
        scans.linear_recurrence(a, b, initial, method="magic")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "inputs"),
    [("min_gru", 1), ("min_lstm", 40)],  # projected in the loop; by one matmul before it
)
def test_fused_input_gated_path_second_derivatives_and_input_widths(name, inputs):
    """The fused loop's written derivative against the reference path in float64:
    gradients with respect to the parameters, inputs and initial state, and a
    Hessian-vector product (forward over reverse)."""
    cell = rnnjax.make_cell(name, H)
    fused_cell = cell._replace(sequence=getattr(scans, f"{name}_sequence")("fused"))
    params = random_params(cell, jax.random.key(12), inputs, scale=0.3)
    xs = random_inputs(jax.random.key(13), (B, T, inputs))
    state = 0.3 * jax.random.normal(jax.random.key(14), (B, H), jnp.float64)

    def loss(params, xs, state, fused):
        chosen = fused_cell if fused else cell
        hs, final = rnnjax.unroll(chosen, params, xs, state=state, fused=fused)
        return jnp.sum(jnp.tanh(hs) ** 2) + jnp.sum(final**3)

    def derivatives(fused):
        grads = jax.grad(loss, (0, 1, 2))(params, xs, state, fused)
        direction = jax.tree.map(jnp.ones_like, params)
        hvp = jax.jvp(lambda p: jax.grad(loss)(p, xs, state, fused), (params,), (direction,))[1]
        return grads, hvp

    for got, want in zip(jax.tree.leaves(derivatives(True)), jax.tree.leaves(derivatives(False))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("reverse", [True])  # the harder direction: the short chunk first
def test_fused_input_gated_path_in_chunks(monkeypatch, reverse):
    """A sequence longer than one chunk: chunks of 16 steps under `jax.checkpoint`, and
    a shorter last one (41 = 2 x 16 + 9), padded; equal to the reference path."""
    monkeypatch.setattr(scans, "CHUNK_BYTES", 1)
    assert scans.chunk_steps(1, jnp.float64, 41) == 16
    cell = rnnjax.make_cell("min_gru", H)
    params = random_params(cell, jax.random.key(15), I, scale=0.3)
    xs = random_inputs(jax.random.key(16), (B, 41, I))
    options = dict(reverse=reverse, lengths=jnp.array([41, 3, 25]))
    want = outputs_and_grads(cell, params, xs, fused=False, **options)
    got = outputs_and_grads(cell, params, xs, fused=True, **options)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


def test_chunk_steps_prefers_a_divisor_of_the_length():
    megabyte = 2**20 // 8  # float64 values per step
    assert scans.chunk_steps(32 * 256, jnp.float32, 1000) == 100  # target 96
    assert scans.chunk_steps(16 * 128, jnp.float32, 10000) == 400  # target 384
    assert scans.chunk_steps(16 * 128, jnp.float32, 10007) == 384  # a prime: no divisor
    assert scans.chunk_steps(megabyte, jnp.float64, 5) == 16  # never below 16 steps


def test_indrnn_recurrent_bound_clips_u_in_the_step_and_the_fast_path():
    """`recurrent_max_abs = m`: the step uses `clip(u, -m, m)` (the paper's bound), the
    whole-sequence path too, and a clipped entry of `u` gets no gradient."""
    m = 0.8
    cell = rnnjax.make_cell("indrnn", H, recurrent_max_abs=m)
    params = random_params(cell, jax.random.key(12), I, scale=0.3)
    params = params._replace(w_hh=jnp.array([1.5, -0.2, 0.5, -1.1]))  # two outside [-m, m]
    x = random_inputs(jax.random.key(13), (B, I))
    state = 0.5 + jnp.zeros((B, H))
    clipped = params._replace(w_hh=jnp.clip(params.w_hh, -m, m))
    want = reference.indrnn_step(
        type(params)(*(np.asarray(a, np.float64) for a in clipped)),
        np.asarray(state),
        np.asarray(x),
    )
    np.testing.assert_allclose(cell.step(params, state, x)[1], want, rtol=1e-12, atol=1e-12)

    xs = random_inputs(jax.random.key(14), (B, T, I))
    fast = assert_fast_path_equals_reference(cell, params, xs)
    grad_u = fast[1][0].w_hh
    assert grad_u[0] == 0.0 and grad_u[3] == 0.0 and grad_u[1] != 0.0 and grad_u[2] != 0.0
    unbounded = rnnjax.make_cell("indrnn", H)
    assert not np.allclose(unbounded.step(params, state, x)[1], want)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_indrnn_recurrent_bound_is_checked(bad):
    with pytest.raises(ValueError, match="recurrent_max_abs must be a positive finite"):
        rnnjax.make_cell("indrnn", H, recurrent_max_abs=bad)
    with pytest.raises(TypeError, match="recurrent_max_abs must be a positive number"):
        rnnjax.cells.indrnn(H, recurrent_max_abs="2")
