"""The seed notebook, reproduced: its data bit for bit, its printed output and loss."""

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.tasks import seed_rnn_weights, seed_sequences


def notebook_data_and_weights():
    """The notebook's own cells, verbatim in their NumPy calls and their order."""
    np.random.seed(42)
    X = np.random.randint(0, 100, (1000, 10))
    y = np.array([sequence[-1] for sequence in X])
    X = X.reshape(X.shape[0], X.shape[1], 1)
    W_xh = np.random.randn(1, 5) * 0.01
    W_hh = np.random.randn(5, 5) * 0.01
    W_hy = np.random.randn(5, 1) * 0.01
    return X, y, (W_xh, W_hh, W_hy)


def test_seed_sequences_are_the_notebooks_bit_for_bit():
    X, y, _ = notebook_data_and_weights()
    got_X, got_y = seed_sequences()
    assert got_X.shape == (1000, 10, 1) and got_y.shape == (1000,)
    assert got_X.dtype == X.dtype and got_y.dtype == y.dtype
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_y, got_X[:, -1, 0])  # the target is the last input


def test_seed_weights_are_drawn_after_the_data_as_in_the_notebook():
    _, _, (W_xh, W_hh, W_hy) = notebook_data_and_weights()
    weights = seed_rnn_weights()
    np.testing.assert_array_equal(weights.W_xh, W_xh)
    np.testing.assert_array_equal(weights.W_hh, W_hh)
    np.testing.assert_array_equal(weights.W_hy, W_hy)
    assert not weights.b_h.any() and weights.b_h.shape == (1, 5)
    assert not weights.b_y.any() and weights.b_y.shape == (1, 1)


def test_unroll_reproduces_the_notebooks_printed_output_and_loss():
    X, y = seed_sequences()
    w = seed_rnn_weights()
    params = rnnjax.RNNParams(w_ih=w.W_xh, w_hh=w.W_hh, b=w.b_h[0])
    _, h_last = rnnjax.unroll(rnnjax.rnn(5), params, X[0:1])
    y_pred = h_last @ w.W_hy + w.b_y
    loss = jnp.mean((y_pred - y[0]) ** 2)
    assert y_pred.dtype == jnp.float64
    assert np.array2string(np.asarray(y_pred)) == "[[0.00190613]]"  # the notebook's print
    assert repr(float(loss)) == "5475.717895768589"
    # And against the notebook's forward pass itself, run here in NumPy.
    h = np.zeros((1, 5))
    for t in range(X.shape[1]):
        h = np.tanh(np.dot(X[0:1, t, :], w.W_xh) + np.dot(h, w.W_hh) + w.b_h)
    np.testing.assert_allclose(y_pred, np.dot(h, w.W_hy) + w.b_y, rtol=1e-14)


def test_other_sizes_and_seeds():
    X, y = seed_sequences(num_sequences=7, sequence_length=3, seed=0)
    assert X.shape == (7, 3, 1) and y.shape == (7,)
    assert X.min() >= 0 and X.max() <= 99
    assert not np.array_equal(X, seed_sequences(7, 3, seed=1)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_sequences": 0}, "num_sequences must be a positive integer, got 0"),
        ({"sequence_length": -1}, "sequence_length must be a positive integer, got -1"),
    ],
)
def test_seed_sequences_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        seed_sequences(**kwargs)


def test_seed_rnn_weights_errors():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        seed_rnn_weights(hidden_size=0)
