"""Layers: stacks and bidirectional pairs equal explicit compositions of `unroll`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

from helpers import make_cell, random_inputs, random_params

B, T, I = 3, 6, 2
LENGTHS = jnp.array([6, 2, 4])


def close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-14), a, b)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_stack_equals_unrolls_in_sequence(cell_name, with_lengths):
    lengths = LENGTHS if with_lengths else None
    cells = (make_cell(cell_name, 4), make_cell(cell_name, 3))
    layer = rnnjax.stack(*cells)
    params = layer.init(jax.random.key(0), I)
    assert params[0].w_ih.shape[0] == I and params[1].w_ih.shape[0] == 4
    params = tuple(
        random_params(c, jax.random.key(k), p.w_ih.shape[0])
        for k, (c, p) in enumerate(zip(cells, params))
    )
    xs = random_inputs(jax.random.key(5), (B, T, I))
    hs, finals = layer.apply(params, xs, lengths=lengths)
    hs_1, final_1 = rnnjax.unroll(cells[0], params[0], xs, lengths=lengths)
    hs_2, final_2 = rnnjax.unroll(cells[1], params[1], hs_1, lengths=lengths)
    close((hs, finals), (hs_2, (final_1, final_2)))


@pytest.mark.parametrize("with_lengths", [False, True])
def test_bidirectional_equals_forward_and_reversed_unroll(cell_name, with_lengths):
    lengths = LENGTHS if with_lengths else None
    cell = make_cell(cell_name, 4)
    layer = rnnjax.bidirectional(cell)
    params = rnnjax.Directions(
        random_params(cell, jax.random.key(1), I), random_params(cell, jax.random.key(2), I)
    )
    xs = random_inputs(jax.random.key(3), (B, T, I))
    hs, final = layer.apply(params, xs, lengths=lengths)
    hs_f, final_f = rnnjax.unroll(cell, params.forward, xs, lengths=lengths)
    hs_b, final_b = rnnjax.unroll(cell, params.backward, xs, lengths=lengths, reverse=True)
    close((hs, final), (jnp.concatenate([hs_f, hs_b], -1), rnnjax.Directions(final_f, final_b)))


def test_bidirectional_backward_reads_each_sequence_from_its_own_end(cell_name):
    """With lengths, the backward pass equals reversing each trimmed sequence."""
    cell = make_cell(cell_name, 3)
    layer = rnnjax.bidirectional(cell)
    params = layer.init(jax.random.key(0), I)
    xs = random_inputs(jax.random.key(1), (B, T, I))
    hs, _ = layer.apply(params, xs, lengths=LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        trimmed = xs[b, :length][::-1]
        backward_hs, _ = rnnjax.unroll(cell, params.backward, trimmed)
        np.testing.assert_allclose(hs[b, :length, 3:], backward_hs[::-1], rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(hs[b, length:], 0.0)


def test_two_layer_bidirectional_mixed_cells():
    layer = rnnjax.stack(rnnjax.bidirectional(rnnjax.lstm(4), rnnjax.gru(2)), rnnjax.rnn(5))
    params = layer.init(jax.random.key(0), I)
    assert params[1].w_ih.shape == (6, 5)
    xs = random_inputs(jax.random.key(1), (B, T, I))
    hs, (first, second) = layer.apply(params, xs, lengths=LENGTHS)
    assert hs.shape == (B, T, 5) and second.shape == (B, 5)
    assert isinstance(first.forward, rnnjax.LSTMState) and first.backward.shape == (B, 2)
    state = layer.initial_state(params, (B,))
    close(layer.apply(params, xs, state=state, lengths=LENGTHS), (hs, (first, second)))
    hs_tm, _ = layer.apply(params, jnp.swapaxes(xs, 0, 1), time_major=True, lengths=LENGTHS)
    close(jnp.swapaxes(hs_tm, 0, 1), hs)


def test_layers_compose_with_jit_and_grad():
    layer = rnnjax.stack(rnnjax.gru(3), rnnjax.bidirectional(rnnjax.lstm(2)))
    params = layer.init(jax.random.key(0), I)
    xs = random_inputs(jax.random.key(1), (B, T, I))

    def loss(p):
        return jnp.sum(layer.apply(p, xs, lengths=LENGTHS)[0] ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    np.testing.assert_allclose(jax.jit(loss)(params), loss(params), rtol=1e-13)


def test_recurrent_reverse_layer():
    cell = rnnjax.gru(3)
    params = cell.init(jax.random.key(0), I)
    xs = random_inputs(jax.random.key(1), (B, T, I))
    close(
        rnnjax.recurrent(cell, reverse=True).apply(params, xs),
        rnnjax.unroll(cell, params, xs, reverse=True),
    )


def test_layer_errors():
    with pytest.raises(ValueError, match="stack needs at least one cell or layer"):
        rnnjax.stack()
    with pytest.raises(
        TypeError, match=r"layers\[1\] must be an rnnjax.Cell or rnnjax.Layer, got int"
    ):
        rnnjax.stack(rnnjax.rnn(2), 3)
    with pytest.raises(TypeError, match=r"cell must be an rnnjax\.Cell, got str"):
        rnnjax.bidirectional("lstm")
    layer = rnnjax.stack(rnnjax.rnn(2), rnnjax.rnn(2))
    params = layer.init(jax.random.key(0), I)
    with pytest.raises(
        ValueError, match=r"params must be a tuple with one entry per layer \(2\), got 1"
    ):
        layer.apply(params[:1], jnp.ones((B, T, I)))
    with pytest.raises(
        ValueError, match=r"state must be a tuple with one entry per layer \(2\), got 3"
    ):
        layer.apply(params, jnp.ones((B, T, I)), state=(None, None, None))
