"""Every fast path (`Cell.sequence`) and gradient checkpointing equal the readable
reference path: the fused kernels of the RNN, LSTM and GRU and the GRU's tuned scan."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import fused

from helpers import FAST_PATHS, KERNELS, make_cell, random_inputs, random_params

B, T, I, H = 3, 9, 2, 4


@pytest.fixture(params=FAST_PATHS)
def cell_name(request) -> str:
    """Here every fast path, the GRU's kernel included."""
    return request.param


def outputs_and_grads(cell, params, xs, state, **options):
    """All outputs of `unroll` and the gradients of a loss that reads every one of them."""

    def loss(params, xs, state):
        hs, final = rnnjax.unroll(cell, params, xs, state=state, **options)
        return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(final))

    hs, final = rnnjax.unroll(cell, params, xs, state=state, **options)
    return (hs, final), jax.grad(loss, argnums=(0, 1, 2))(params, xs, state)


def assert_trees_close(got, want, tol=1e-12):
    got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(got_leaves, want_leaves):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def setup(cell_name, seed=0, input_size=I):
    cell = make_cell(cell_name, H)
    keys = jax.random.split(jax.random.key(seed), 3)
    params = random_params(cell, keys[0], input_size)
    xs = random_inputs(keys[1], (B, T, input_size))
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(keys[2], s.shape, s.dtype),
        cell.initial_state(params, (B,)),
    )
    return cell, params, xs, state


def test_builtin_cells_carry_their_fast_path_and_the_equations_none():
    for cell in (rnnjax.rnn(3), rnnjax.rnn(3, "relu"), rnnjax.lstm(3), rnnjax.gru(3)):
        assert cell.sequence is not None
    for cell in (rnnjax.cells.rnn(3), rnnjax.cells.lstm(3), rnnjax.cells.gru(3)):
        assert cell.sequence is None
    custom = rnnjax.rnn(3, activation=jnp.sin)
    assert custom.sequence is None
    wrapped = rnnjax.Cell(custom.init, custom.initial_state, lambda p, s, x: custom.step(p, s, x))
    assert wrapped.sequence is None
    params = custom.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match=r"fused=True needs a cell with .*cell\.sequence"):
        rnnjax.unroll(custom, params, jnp.ones((1, 4, 2)), fused=True)


@pytest.mark.parametrize(("reverse", "with_lengths"), [(False, False), (True, True)])
def test_fused_equals_reference_outputs_and_gradients(cell_name, reverse, with_lengths):
    cell, params, xs, state = setup(cell_name)
    lengths = jnp.array([T, 2, 6]) if with_lengths else None
    options = dict(lengths=lengths, reverse=reverse)
    got = outputs_and_grads(cell, params, xs, state, fused=True, **options)
    want = outputs_and_grads(cell, params, xs, state, fused=False, **options)
    assert_trees_close(got, want)


@pytest.mark.parametrize(("reverse", "with_lengths"), [(False, True), (True, False)])
@pytest.mark.parametrize("cell_name", KERNELS)
def test_fused_equals_reference_with_inputs_projected_before_the_loop(
    cell_name, reverse, with_lengths
):
    # Inputs wider than IN_LOOP_INPUT_MAX take the other projection branch, where the
    # loop writes its residuals over the projections it has read.
    wide = fused.IN_LOOP_INPUT_MAX + 1
    cell, params, xs, state = setup(cell_name, input_size=wide)
    lengths = jnp.array([T, 2, 6]) if with_lengths else None
    options = dict(lengths=lengths, reverse=reverse)
    got = outputs_and_grads(cell, params, xs, state, fused=True, **options)
    want = outputs_and_grads(cell, params, xs, state, fused=False, **options)
    assert_trees_close(got, want)


def forward_scan_shapes(cell, params, xs, carried=False, **options):
    """The shapes of the scanned inputs and stacked outputs of the first scan in the
    gradient's jaxpr, the fused forward pass, and with `carried` those of its carry."""

    def loss(params):
        hs, _ = rnnjax.unroll(cell, params, xs, fused=True, **options)
        return jnp.sum(hs**2)

    scans = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                scans.append(eqn)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    scan = scans[0]
    consts, carries = scan.params["num_consts"], scan.params["num_carry"]
    scanned = [v.aval.shape for v in scan.invars[consts + carries :]]
    stacked = [v.aval.shape for v in scan.outvars[carries:]]
    if carried:
        return scanned, stacked, [v.aval.shape for v in scan.outvars[:carries]]
    return scanned, stacked


@pytest.mark.parametrize("input_size", [1, fused.IN_LOOP_INPUT_MAX, fused.IN_LOOP_INPUT_MAX + 1])
def test_fused_forward_scan_reads_narrow_inputs_unprojected(input_size):
    cell = rnnjax.lstm(H)
    params = random_params(cell, jax.random.key(0), input_size)
    xs = random_inputs(jax.random.key(1), (B, T, input_size))
    scanned, stacked, carried = forward_scan_shapes(cell, params, xs, carried=True)
    if input_size <= fused.IN_LOOP_INPUT_MAX:
        assert scanned == [(T, B, input_size)]
        assert (T, B, 4 * H) in stacked  # the gate-wide residual
    else:
        # The projections, made before the loop, are its carry: each step reads its row
        # by the step's index and writes its gate-wide residual over it.
        assert scanned == [(T,)]
        assert (T, B, 4 * H) in carried
        assert (T, B, 4 * H) not in stacked


@pytest.mark.parametrize("cell_name", KERNELS)
def test_fused_forward_scan_saves_the_previous_hidden_state_only_when_padded(cell_name):
    # Unpadded, the state each step reads is the previous step's output, already saved.
    cell, params, xs, _ = setup(cell_name)
    _, unpadded = forward_scan_shapes(cell, params, xs)
    _, padded = forward_scan_shapes(cell, params, xs, lengths=jnp.array([T, 2, 6]))
    assert padded.count((T, B, H)) == unpadded.count((T, B, H)) + 1
    assert len(padded) == len(unpadded) + 1


def test_fused_relu_rnn_equals_reference():
    cell = rnnjax.rnn(H, activation="relu")
    params = random_params(cell, jax.random.key(1), I)
    xs = random_inputs(jax.random.key(2), (B, T, I))
    state = cell.initial_state(params, (B,))
    got = outputs_and_grads(cell, params, xs, state, fused=True)
    want = outputs_and_grads(cell, params, xs, state, fused=False)
    assert_trees_close(got, want)


@pytest.mark.parametrize("cell_name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_fused_time_major_and_unbatched(cell_name):
    cell, params, xs, state = setup(cell_name)
    time_major = outputs_and_grads(cell, params, jnp.swapaxes(xs, 0, 1), state, time_major=True)
    want = outputs_and_grads(
        cell, params, jnp.swapaxes(xs, 0, 1), state, time_major=True, fused=False
    )
    assert_trees_close(time_major, want)
    one = jax.tree.map(lambda s: s[0], state)
    unbatched = outputs_and_grads(cell, params, xs[0], one, fused=True)
    want = outputs_and_grads(cell, params, xs[0], one, fused=False)
    assert_trees_close(unbatched, want)


@pytest.mark.parametrize(("chunk", "reverse"), [(4, True)])  # whole chunks and a remainder
# The LSTM through its fused kernel; the GRU through a scan (slow: CI runs it).
@pytest.mark.parametrize("cell_name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_checkpointing_changes_nothing(cell_name, chunk, reverse):
    """Two whole chunks and a leftover step (4), and a chunk longer than T, on both paths."""
    cell, params, xs, state = setup(cell_name)
    options = dict(lengths=jnp.array([T, 2, 6]), reverse=reverse)
    want = outputs_and_grads(cell, params, xs, state, fused=False, **options)
    for use_fused in (False, True):
        got = outputs_and_grads(
            cell, params, xs, state, checkpoint_every=chunk, fused=use_fused, **options
        )
        assert_trees_close(got, want)


def test_checkpointing_keeps_only_chunk_boundaries():
    """XLA's buffer plan shrinks: activations of about T / chunk + chunk steps, not T."""
    cell = rnnjax.lstm(8)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = jnp.ones((2, 400, 1), jnp.float32)

    def temp_bytes(**options):
        def loss(params):
            return jnp.sum(rnnjax.unroll(cell, params, xs, fused=True, **options)[1].h)

        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain, chunked = temp_bytes(), temp_bytes(checkpoint_every=20)
    assert chunked < plain / 3, (plain, chunked)


def test_checkpoint_every_is_checked():
    cell = rnnjax.gru(3)
    params = cell.init(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        rnnjax.unroll(cell, params, jnp.ones((1, 4, 2)), checkpoint_every=0)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_fused_gradient_in_float32_is_close_to_float64(cell_name):
    cell, params, xs, state = setup(cell_name)
    want = outputs_and_grads(cell, params, xs, state, fused=True)
    to32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)  # noqa: E731
    got = outputs_and_grads(cell, to32(params), to32(xs), to32(state), fused=True)
    assert_trees_close(jax.tree.map(lambda a: a.astype(jnp.float64), got), want, tol=1e-4)


@pytest.mark.parametrize("cell_name", ["lstm", "gru"])
def test_fused_forward_in_bfloat16_is_close_to_float64(cell_name):
    # Under differentiation the outputs come from the kernels' own forward loop.
    cell, params, xs, state = setup(cell_name)
    to16 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)  # noqa: E731

    def outputs(params, xs, state):
        return rnnjax.unroll(cell, params, xs, state=state, fused=True)[0]

    args16 = (to16(params), to16(xs), to16(state))
    zeros = jax.tree.map(jnp.zeros_like, args16)
    hs, _ = jax.jvp(outputs, args16, zeros)
    assert hs.dtype == jnp.bfloat16
    want = outputs(params, xs, state)
    np.testing.assert_allclose(hs.astype(jnp.float64), want, atol=0.05)


@pytest.mark.slow  # compile-heavy; CI runs it
def test_sequence_model_passes_fused_and_checkpointing_to_every_layer():
    from rnnjax.models import sequence_model

    xs = random_inputs(jax.random.key(3), (B, T, I))
    lengths = jnp.array([T, 4, 7])
    for cell in (rnnjax.lstm(H),):
        plain = sequence_model(
            cell, output_size=2, num_layers=2, bidirectional_layers=True, fused=False
        )
        fast = sequence_model(
            cell,
            output_size=2,
            num_layers=2,
            bidirectional_layers=True,
            fused=True,
            checkpoint_every=4,
        )
        params = plain.init(jax.random.key(4), I, jnp.float64)

        def loss(model):
            return lambda p: jnp.sum(model.apply(p, xs, lengths=lengths) ** 2)

        assert_trees_close(
            jax.jit(jax.value_and_grad(loss(fast)))(params),
            jax.jit(jax.value_and_grad(loss(plain)))(params),
        )


def test_train_config_checks_checkpoint_every():
    from rnnjax.runs import TrainConfig

    assert TrainConfig(checkpoint_every=50, fused=True).checkpoint_every == 50
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(checkpoint_every=-1)


@pytest.mark.parametrize("with_lengths", [True])
def test_fused_forward_mode_equals_reference(cell_name, with_lengths):
    """`jax.jvp` through the fused path: every input's tangent at once."""
    cell, params, xs, state = setup(cell_name)
    lengths = jnp.array([T, 2, 6]) if with_lengths else None
    tangents = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(7), a.shape, a.dtype), (params, xs, state)
    )

    def run(use_fused):
        def f(params, xs, state):
            return rnnjax.unroll(cell, params, xs, state=state, lengths=lengths, fused=use_fused)

        return jax.jvp(f, (params, xs, state), tangents)

    assert_trees_close(run(True), run(False))


@pytest.mark.slow
@pytest.mark.parametrize("cell_name", ["lstm", pytest.param("gru", marks=pytest.mark.slow)])
def test_fused_second_derivatives_equal_reference(cell_name):
    """Forward over reverse (a Hessian-vector product) and reverse over reverse."""
    cell, params, xs, state = setup(cell_name)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(8), a.shape), params)

    def hvp_and_grad_of_grad_norm(use_fused):
        def loss(params):
            hs, final = rnnjax.unroll(cell, params, xs, state=state, fused=use_fused)
            return jnp.sum(jnp.sin(hs)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(final))

        grad = jax.grad(loss)
        hvp = jax.jvp(grad, (params,), (direction,))[1]
        grad_of_norm = jax.grad(lambda p: sum(jnp.sum(g**2) for g in jax.tree.leaves(grad(p))))
        return hvp, grad_of_norm(params)

    assert_trees_close(hvp_and_grad_of_grad_norm(True), hvp_and_grad_of_grad_norm(False))


def transposed_shapes(fn, *args):
    """The output shapes of every transpose in `fn`'s jaxpr, sub-jaxprs included, and
    whether any dynamic_update_slice appears."""
    shapes, updates = [], []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "transpose":
                shapes.append(eqn.outvars[0].aval.shape)
            updates.append(eqn.primitive.name == "dynamic_update_slice")
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return shapes, any(updates)


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("cell_name", KERNELS)
def test_fused_inference_writes_outputs_in_their_layout(cell_name, time_major):
    """Without differentiation the fused path writes each step's outputs in their
    layout: no transpose of the whole sequence's outputs follows the loop. Float32
    values stay close to the reference."""
    cell = make_cell(cell_name, 8)
    params = random_params(cell, jax.random.key(0), 3, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (4, 50, 3), jnp.float32)
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)
    run = jax.jit(
        lambda p, x, use_fused: rnnjax.unroll(cell, p, x, time_major=time_major, fused=use_fused),
        static_argnums=2,
    )
    assert_trees_close(run(params, xs, True), run(params, xs, False), tol=2e-6)
    shapes, updates = transposed_shapes(lambda p, x: run(p, x, True)[0], params, xs)
    assert (4, 50, 8) not in shapes and (50, 4, 8) not in shapes
    assert updates == (not time_major)


@pytest.mark.parametrize(("time_major", "reverse"), [(False, True), (True, False)])
def test_fused_inference_equals_reference(cell_name, time_major, reverse):
    """Values without differentiation, either direction, padded, both layouts."""
    cell = make_cell(cell_name, H)
    params = random_params(cell, jax.random.key(0), I)
    steps = 23
    xs = random_inputs(jax.random.key(1), (B, steps, I))
    lengths = jnp.array([steps, 3, 17])
    if time_major:
        xs = jnp.swapaxes(xs, 0, 1)

    def run(use_fused):
        options = {"time_major": time_major, "reverse": reverse, "lengths": lengths}
        return rnnjax.unroll(cell, params, xs, fused=use_fused, **options)

    assert_trees_close(run(True), run(False))


@pytest.mark.slow  # compile-heavy; CI runs it
@pytest.mark.parametrize("input_size", [1, 4])
def test_gru_tuned_step_equals_the_equations(input_size):
    """Values (the I = 1 form included), forward and reverse derivatives."""
    cell = rnnjax.cells.gru(H)
    params = random_params(cell, jax.random.key(0), input_size)
    x = random_inputs(jax.random.key(1), (B, input_size))
    state = random_inputs(jax.random.key(2), (B, H))
    args = (params, state, x)
    assert_trees_close(fused.gru_tuned_step(*args), cell.step(*args))
    tangents = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape), args)
    assert_trees_close(
        jax.jvp(fused.gru_tuned_step, args, tangents), jax.jvp(cell.step, args, tangents)
    )

    def loss(step):
        return lambda *a: jnp.sum(jnp.sin(step(*a)[1]))

    assert_trees_close(
        jax.grad(loss(fused.gru_tuned_step), (0, 1, 2))(*args),
        jax.grad(loss(cell.step), (0, 1, 2))(*args),
    )


@pytest.mark.slow  # compile-heavy; CI runs it
@pytest.mark.parametrize("h_shape", [(2, 4, 3)])
def test_recurrent_product_equals_the_plain_matmul_with_its_derivatives(h_shape):
    h = random_inputs(jax.random.key(0), h_shape)
    w = random_inputs(jax.random.key(1), (3, 5))
    d_h, d_w = random_inputs(jax.random.key(2), h_shape), random_inputs(jax.random.key(3), (3, 5))

    def loss_of(product):
        return lambda h, w: jnp.sum(jnp.sin(product(h, w)))

    ours, plain = loss_of(fused.recurrent_product), loss_of(jnp.matmul)
    np.testing.assert_array_equal(fused.recurrent_product(h, w), h @ w)
    for argnums in (0, 1, (0, 1)):
        got, want = jax.grad(ours, argnums)(h, w), jax.grad(plain, argnums)(h, w)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), got, want)
    # Forward mode with either tangent zero, and second derivatives.
    for tangents in ((d_h, d_w), (d_h, jnp.zeros_like(w)), (jnp.zeros_like(h), d_w)):
        got = jax.jvp(ours, (h, w), tangents)[1]
        np.testing.assert_allclose(got, jax.jvp(plain, (h, w), tangents)[1], rtol=1e-14)
    np.testing.assert_allclose(jax.hessian(ours)(h, w), jax.hessian(plain)(h, w), atol=1e-14)
    check_grads(ours, (h, w), order=2, modes=("fwd", "rev"))


def test_backward_pass_of_a_cell_multiplies_by_w_hh_transposed_as_it_is():
    # In the reverse scan, d_h = d_gates @ w_hh.T contracts d_gates' last axis with
    # the FIRST axis of a transposed copy made before the loop: a plain matmul.
    cell = make_cell("lstm", 4)
    params = random_params(cell, jax.random.key(0), 3)
    xs = random_inputs(jax.random.key(1), (2, 5, 3))

    def loss(params):
        return jnp.sum(rnnjax.unroll(cell, params, xs)[0] ** 2)

    reverse_scans = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan" and eqn.params["reverse"]:
                reverse_scans.append(eqn.params["jaxpr"].jaxpr)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    def dots_with_w_hh_shape(jaxpr):
        found = []
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (contract_lhs, contract_rhs), _ = eqn.params["dimension_numbers"]
                shapes = [v.aval.shape for v in eqn.invars]
                found.append((shapes, tuple(contract_lhs), tuple(contract_rhs)))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                found += dots_with_w_hh_shape(sub)
        return found

    visit(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    assert len(reverse_scans) == 1
    dots = dots_with_w_hh_shape(reverse_scans[0])
    # d_gates (2, 16) times the transposed copy (16, 4), contracting its axis 0.
    assert (([(2, 16), (16, 4)]), (1,), (0,)) in dots
    assert not any(shapes[1] == (4, 16) and rhs == (1,) for shapes, _, rhs in dots)
