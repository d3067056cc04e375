"""Tasks: the seed notebook reproduced bit for bit, and the long-range training tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.tasks import TASKS, get_task, seed_rnn_weights, seed_sequences


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


# --------------------------------------------------------------------------------------
# The training tasks.


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_shapes_dtypes_and_determinism(name):
    task = get_task(name)
    data = task.generate(jax.random.key(0), 5, 30)
    steps = 30 + 20 if name == "copy" else 30
    assert data.inputs.shape == (5, steps, task.input_size)
    assert jnp.issubdtype(data.inputs.dtype, jnp.floating)
    if task.loss == "mse":
        assert data.targets.shape == (5, task.output_size)
    else:
        assert jnp.issubdtype(data.targets.dtype, jnp.integer)
        assert data.targets.shape == ((5, steps) if task.per_step else (5,))
        assert int(data.targets.max()) < task.output_size
    again = task.generate(jax.random.key(0), 5, 30)
    jax.tree.map(np.testing.assert_array_equal, data, again)
    other = task.generate(jax.random.key(1), 5, 30)
    assert not np.array_equal(data.inputs, other.inputs)
    # Compiled, the same draws; the scaled inputs to the last bit or one rounding
    # (XLA may compile `x / 100` as `x * 0.01`: seen on GPU, 0.35 -> 0.35000000000000003).
    jitted = jax.jit(task.generate, static_argnums=(1, 2))(jax.random.key(0), 5, 30)
    for eager, compiled in zip(data, jitted):
        if eager is None:
            assert compiled is None
        elif jnp.issubdtype(eager.dtype, jnp.floating):
            eps = np.finfo(eager.dtype).eps
            np.testing.assert_allclose(eager, compiled, rtol=2 * eps, atol=0)
        else:
            np.testing.assert_array_equal(eager, compiled)


def test_seed_and_recall_targets():
    seed_data = get_task("seed").generate(jax.random.key(0), 50, 8)
    np.testing.assert_array_equal(seed_data.targets, seed_data.inputs[:, -1])
    recall = get_task("recall").generate(jax.random.key(0), 50, 8)
    np.testing.assert_array_equal(recall.targets, recall.inputs[:, 0])
    assert float(recall.inputs.min()) >= 0.0 and float(recall.inputs.max()) <= 0.99
    values = np.asarray(get_task("recall").generate(jax.random.key(1), 20000, 2).targets)
    assert np.mean((values - 0.495) ** 2) == pytest.approx(
        get_task("recall").baseline_loss(2), rel=0.03
    )


def test_adding_problem_marks_one_value_in_each_half_and_baseline_is_one_sixth():
    data = get_task("adding").generate(jax.random.key(0), 20000, 50)
    values, marks = np.asarray(data.inputs[..., 0]), np.asarray(data.inputs[..., 1])
    assert (marks[:, :25].sum(axis=1) == 1).all() and (marks[:, 25:].sum(axis=1) == 1).all()
    np.testing.assert_allclose(data.targets[:, 0], (values * marks).sum(axis=1), rtol=1e-6)
    assert float(np.mean((np.asarray(data.targets) - 1.0) ** 2)) == pytest.approx(1 / 6, rel=0.03)
    assert get_task("adding").baseline_loss(50) == pytest.approx(1 / 6)


def test_copy_memory_layout_and_memoryless_baseline():
    length = 15
    data = get_task("copy").generate(jax.random.key(0), 64, length)
    tokens = np.asarray(data.inputs.argmax(-1))
    targets = np.asarray(data.targets)
    symbols = tokens[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (tokens[:, 10 : 10 + length - 1] == 0).all() and (tokens[:, 10 + length - 1] == 9).all()
    assert (tokens[:, 10 + length :] == 0).all()
    assert (targets[:, : length + 10] == 0).all()
    np.testing.assert_array_equal(targets[:, length + 10 :], symbols)
    np.testing.assert_array_equal(np.asarray(data.mask)[0], np.arange(length + 20) >= length + 10)
    # The memoryless predictor: blank with certainty, then uniform over the 8 symbols.
    logits = jnp.where(
        jnp.arange(length + 20)[:, None] < length + 10,
        jnp.log(jax.nn.one_hot(0, 10) + 1e-30),
        jnp.log(jnp.concatenate([jnp.zeros(1), jnp.full(8, 1 / 8), jnp.zeros(1)]) + 1e-30),
    )
    memoryless = rnnjax.losses.cross_entropy(
        jnp.broadcast_to(logits, (64, length + 20, 10)), data.targets
    )
    assert float(memoryless) == pytest.approx(get_task("copy").baseline_loss(length), rel=1e-6)
    assert get_task("copy").baseline_loss(length) == pytest.approx(10 * np.log(8) / (length + 20))


def test_temporal_order_relevant_symbols_and_classes():
    data = get_task("order").generate(jax.random.key(0), 4000, 100)
    tokens = np.asarray(data.inputs.argmax(-1))
    labels = np.asarray(data.targets)
    relevant = tokens < 2
    assert (relevant.sum(axis=1) == 2).all()
    assert relevant[:, 10:20].sum(axis=1).tolist() == [1] * 4000
    assert relevant[:, 50:60].sum(axis=1).tolist() == [1] * 4000
    first = tokens[:, 10:20][relevant[:, 10:20]]
    second = tokens[:, 50:60][relevant[:, 50:60]]
    np.testing.assert_array_equal(labels, 2 * first + second)
    assert np.bincount(labels, minlength=4).min() > 900
    assert get_task("order").baseline_loss(100) == pytest.approx(np.log(4))


def test_task_errors():
    with pytest.raises(ValueError, match=r"task must be one of .* got 'addition'"):
        get_task("addition")
    with pytest.raises(ValueError, match="length must be at least 10 for this task, got 5"):
        get_task("order").generate(jax.random.key(0), 2, 5)
    with pytest.raises(ValueError, match="num_sequences must be a positive integer, got 0"):
        get_task("adding").generate(jax.random.key(0), 0, 5)
