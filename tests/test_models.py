"""Sequence models: shapes, readout at each sequence's end, embeddings, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax.models import sequence_model

from helpers import make_cell

B, T, I = 4, 6, 3
LENGTHS = jnp.array([6, 1, 3, 5])


def readout(params, features):
    """The dense readout, written out: `features @ w + b`."""
    w, b = params.readout
    return features @ w + b.reshape((1,) * (features.ndim - 1) + (-1,))


def inputs(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, I))


def test_many_to_one_reads_each_sequence_at_its_last_valid_step(cell_name):
    cell = make_cell(cell_name, 5)
    model = sequence_model(cell, output_size=2)
    params = model.init(jax.random.key(0), I)
    out = model.apply(params, inputs(), lengths=LENGTHS)
    assert out.shape == (B, 2)
    hs, _ = rnnjax.unroll(cell, params.layers[0], inputs(), lengths=LENGTHS)
    last = hs[jnp.arange(B), LENGTHS - 1]
    np.testing.assert_allclose(out, readout(params, last), rtol=1e-12)
    # Padding past the end changes nothing.
    padded = inputs().at[1, 1:].set(100.0)
    np.testing.assert_allclose(model.apply(params, padded, lengths=LENGTHS), out, rtol=1e-12)


def test_many_to_many_and_stacked_bidirectional():
    model = sequence_model(
        rnnjax.lstm(4), output_size=3, num_layers=2, bidirectional_layers=True, per_step=True
    )
    params = model.init(jax.random.key(0), I)
    assert params.layers[1].forward.w_ih.shape == (8, 16)
    assert params.readout.w.shape == (8, 3)
    out = model.apply(params, inputs(), lengths=LENGTHS)
    assert out.shape == (B, T, 3)
    layer = rnnjax.stack(rnnjax.bidirectional(rnnjax.lstm(4)), rnnjax.bidirectional(rnnjax.lstm(4)))
    hs, _ = layer.apply(params.layers, inputs(), lengths=LENGTHS)
    np.testing.assert_allclose(out, readout(params, hs), rtol=1e-12)


def test_bidirectional_many_to_one_joins_both_directions_ends():
    model = sequence_model(rnnjax.gru(4), output_size=1, bidirectional_layers=True)
    params = model.init(jax.random.key(0), I)
    hs, _ = rnnjax.bidirectional(rnnjax.gru(4)).apply(params.layers[0], inputs(), lengths=LENGTHS)
    features = jnp.concatenate([hs[jnp.arange(B), LENGTHS - 1, :4], hs[:, 0, 4:]], axis=-1)
    np.testing.assert_allclose(
        model.apply(params, inputs(), lengths=LENGTHS),
        readout(params, features),
        rtol=1e-12,
    )


def test_token_inputs_go_through_the_embedding():
    model = sequence_model(
        rnnjax.rnn(4), output_size=7, vocab_size=7, embedding_size=5, per_step=True
    )
    params = model.init(jax.random.key(0))
    assert params.embedding.shape == (7, 5)
    tokens = jnp.array([[1, 2, 3], [6, 0, 0]])
    out = model.apply(params, tokens)
    embedded = params.embedding[tokens]
    hs, _ = rnnjax.unroll(rnnjax.rnn(4), params.layers[0], embedded)
    np.testing.assert_allclose(out, readout(params, hs), rtol=1e-12)


@pytest.mark.parametrize("cell_name", ["lstm"])  # a state of two arrays
@pytest.mark.parametrize("rates", [{"dropout": 0.5}, {"input_dropout": 0.5, "state_dropout": 0.5}])
def test_dropout_is_deterministic_given_the_key_and_off_at_evaluation(cell_name, rates):
    model = sequence_model(make_cell(cell_name, 8), output_size=2, num_layers=2, **rates)
    plain = sequence_model(make_cell(cell_name, 8), output_size=2, num_layers=2)
    params = model.init(jax.random.key(0), I)
    xs = inputs()
    first = model.apply(params, xs, key=jax.random.key(1), train=True)
    again = model.apply(params, xs, key=jax.random.key(1), train=True)
    other = model.apply(params, xs, key=jax.random.key(2), train=True)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    np.testing.assert_array_equal(model.apply(params, xs), plain.apply(params, xs))
    assert not np.allclose(first, plain.apply(params, xs))


def _probe_cell(output):
    """A cell that outputs what it receives (its state, or its input): `H = I`."""

    def init(key, input_size, dtype=None):
        zeros = jnp.zeros((I, I))
        return rnnjax.RNNParams(zeros, zeros, jnp.zeros(I))

    def initial_state(params, batch_shape=()):
        return jnp.zeros((*batch_shape, I))

    def step(params, state, x):
        return jnp.ones_like(state), state if output == "state" else x

    return rnnjax.Cell(init, initial_state, step)


@pytest.mark.parametrize("what", ["state", "input"])
def test_variational_masks_are_one_per_sequence(what):
    """Gal & Ghahramani: one mask per sequence, the same at every step."""
    rate = {"state": {"state_dropout": 0.5}, "input": {"input_dropout": 0.5}}[what]
    model = sequence_model(_probe_cell(what), output_size=I, per_step=True, **rate)
    params = model.init(jax.random.key(0), I)
    params = params._replace(readout=params.readout._replace(w=jnp.eye(I)))
    seen = model.apply(params, jnp.ones((8, T, I)), key=jax.random.key(1), train=True)
    steps = seen[:, 1:]  # the state entering step 0 is the zero initial state
    np.testing.assert_array_equal(steps, jnp.broadcast_to(steps[:, :1], steps.shape))
    assert set(np.unique(steps).tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1/0.5
    assert len({tuple(row) for row in np.asarray(steps[:, 0])}) > 1  # masks differ by sequence


def test_model_errors():
    with pytest.raises(TypeError, match=r"cell must be an rnnjax\.Cell, got str"):
        sequence_model("lstm", output_size=1)
    with pytest.raises(ValueError, match="output_size must be a positive integer, got 0"):
        sequence_model(rnnjax.lstm(4), output_size=0)
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\), got 1.5"):
        sequence_model(rnnjax.lstm(4), output_size=1, dropout=1.5)
    with pytest.raises(ValueError, match="embedding_size needs vocab_size"):
        sequence_model(rnnjax.lstm(4), output_size=1, embedding_size=3)
    model = sequence_model(rnnjax.lstm(4), output_size=1, dropout=0.2, num_layers=2)
    params = model.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match="key is required when train=True"):
        model.apply(params, inputs(), train=True)
    with pytest.raises(ValueError, match=r"xs must have shape \(B, T, I\), got \(6, 3\)"):
        model.apply(params, inputs()[0])
    token_model = sequence_model(rnnjax.lstm(4), output_size=1, vocab_size=5)
    with pytest.raises(ValueError, match="xs must be integer tokens"):
        token_model.apply(token_model.init(jax.random.key(0)), inputs())


def token_model(num_layers=2):
    model = sequence_model(
        rnnjax.lstm(12),
        output_size=9,
        vocab_size=9,
        embedding_size=6,
        per_step=True,
        num_layers=num_layers,
    )
    params = model.init(jax.random.key(0))
    # Sharpen the readout so that greedy choices are far from ties.
    params = params._replace(readout=params.readout._replace(w=params.readout.w * 5))
    return model, params


PROMPT = jnp.array([[1, 2, 3, 4], [8, 0, 5, 5]])


@pytest.mark.slow
def test_greedy_generation_equals_rereading_the_growing_sequence():
    model, params = token_model()
    generated = model.generate(params, PROMPT, num_steps=3, temperature=0.0)
    tokens = PROMPT
    for _ in range(3):
        next_token = jnp.argmax(model.apply(params, tokens)[:, -1], axis=-1)
        tokens = jnp.concatenate([tokens, next_token[:, None]], axis=1)
    np.testing.assert_array_equal(generated, tokens[:, PROMPT.shape[1] :])
    top_one = model.generate(
        params, PROMPT, num_steps=3, key=jax.random.key(3), temperature=2.0, top_k=1
    )
    np.testing.assert_array_equal(top_one, generated)  # top-1 sampling is greedy


def test_sampling_is_deterministic_given_the_key():
    model, params = token_model(num_layers=1)
    first = model.generate(params, PROMPT, num_steps=40, key=jax.random.key(7))
    again = model.generate(params, PROMPT, num_steps=40, key=jax.random.key(7))
    other = model.generate(params, PROMPT, num_steps=40, key=jax.random.key(8))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (2, 40) and not np.array_equal(first, other)
    assert int(first.min()) >= 0 and int(first.max()) < 9
    top_three = model.generate(params, PROMPT, num_steps=40, key=jax.random.key(7), top_k=3)
    assert not np.array_equal(top_three, first)


def test_sampling_follows_the_model_distribution():
    """With one step from a fixed prompt, token frequencies match softmax(logits / T)."""
    model, params = token_model(num_layers=1)
    prompt = jnp.broadcast_to(PROMPT[:1], (4000, 4))
    temperature = 1.5
    probabilities = jax.nn.softmax(model.apply(params, PROMPT[:1])[0, -1] / temperature)
    draws = model.generate(
        params, prompt, num_steps=1, key=jax.random.key(1), temperature=temperature
    )[:, 0]
    frequencies = np.bincount(np.asarray(draws), minlength=9) / 4000
    np.testing.assert_allclose(frequencies, probabilities, atol=0.03)


def test_real_valued_generation_feeds_predictions_back():
    model = sequence_model(rnnjax.gru(8), output_size=2, per_step=True)
    params = model.init(jax.random.key(0), 2)
    context = jax.random.normal(jax.random.key(1), (3, 5, 2))
    forecast = model.generate(params, context, num_steps=4)
    sequence = context
    for _ in range(4):
        sequence = jnp.concatenate([sequence, model.apply(params, sequence)[:, -1:]], axis=1)
    np.testing.assert_allclose(forecast, sequence[:, 5:], rtol=1e-10, atol=1e-12)


def test_generation_errors():
    model, params = token_model()
    with pytest.raises(ValueError, match="key is required to sample"):
        model.generate(params, PROMPT, num_steps=3)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        model.generate(params, PROMPT, num_steps=3, temperature=-1.0)
    with pytest.raises(ValueError, match=r"top_k must be in 1\.\.9, got 10"):
        model.generate(params, PROMPT, num_steps=3, temperature=0.0, top_k=10)
    with pytest.raises(ValueError, match="prompt must be integer tokens"):
        model.generate(params, PROMPT.astype(float), num_steps=3, temperature=0.0)
    many_to_one = sequence_model(rnnjax.gru(4), output_size=1)
    with pytest.raises(ValueError, match="generate needs a left-to-right model"):
        many_to_one.generate(
            many_to_one.init(jax.random.key(0), 1), jnp.ones((1, 3, 1)), num_steps=2
        )
    mismatched = sequence_model(rnnjax.gru(4), output_size=3, per_step=True)
    with pytest.raises(ValueError, match=r"prompt must have shape \(B, P, 3\)"):
        mismatched.generate(mismatched.init(jax.random.key(0), 2), jnp.ones((1, 3, 2)), num_steps=2)
