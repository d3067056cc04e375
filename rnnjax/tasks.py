"""Data generators for recurrent-network tasks.

`seed_sequences` reproduces the data of the notebook rnnjax grew from, bit for
bit, with the notebook's own NumPy calls in the notebook's order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rnnjax import _checks


def _seed_stream(
    num_sequences: int, sequence_length: int, seed: int
) -> tuple[np.random.RandomState, np.ndarray, np.ndarray]:
    """The notebook's draws: `np.random.seed(seed)` then `randint(0, 100, (N, T))`.

    `RandomState(seed)` is the generator behind `np.random.seed`, so the arrays
    and the state left behind are the notebook's.
    """
    num_sequences = _checks.positive_int("num_sequences", num_sequences)
    sequence_length = _checks.positive_int("sequence_length", sequence_length)
    random_state = np.random.RandomState(seed)
    xs = random_state.randint(0, 100, (num_sequences, sequence_length))
    ys = np.array([sequence[-1] for sequence in xs])
    return random_state, xs.reshape(num_sequences, sequence_length, 1), ys


def seed_sequences(
    num_sequences: int = 1000, sequence_length: int = 10, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data set: random integers in `0..99` and the last one as target.

    The notebook calls the target "the next number in the sequence", but its
    code takes the *last input* (`y = X[:, -1]`): the target is already in the
    input, and the task is to remember the most recent value. (For independent
    random integers the true next number cannot be predicted at all.)

    Args:
      num_sequences: `N`, the number of sequences.
      sequence_length: `T`, the number of steps in each.
      seed: the seed given to `np.random.seed` (42 in the notebook).

    Returns:
      `(X, y)`: `X` int64 `(N, T, 1)` and `y` int64 `(N,)`, equal bit for bit
      to the notebook's.

    Example:
      >>> from rnnjax.tasks import seed_sequences
      >>> X, y = seed_sequences()
      >>> X.shape, y.shape, bool((y == X[:, -1, 0]).all())
      ((1000, 10, 1), (1000,), True)
    """
    _, xs, ys = _seed_stream(num_sequences, sequence_length, seed)
    return xs, ys


class SeedRNNWeights(NamedTuple):
    """The notebook's `SimpleRNN` parameters, in its own names and shapes.

    Attributes:
      W_xh: `(I, H)`; W_hh: `(H, H)`; W_hy: `(H, O)`; b_h: `(1, H)`; b_y: `(1, O)`.
    """

    W_xh: np.ndarray
    W_hh: np.ndarray
    W_hy: np.ndarray
    b_h: np.ndarray
    b_y: np.ndarray


def seed_rnn_weights(
    input_size: int = 1,
    hidden_size: int = 5,
    output_size: int = 1,
    *,
    num_sequences: int = 1000,
    sequence_length: int = 10,
    seed: int = 42,
) -> SeedRNNWeights:
    """The weights the notebook's `SimpleRNN` draws, right after its data.

    Replays `seed_sequences` on the same generator, then draws
    `randn(I, H) * 0.01`, `randn(H, H) * 0.01` and `randn(H, O) * 0.01` in the
    notebook's order, with zero biases.

    Example:
      >>> from rnnjax.tasks import seed_rnn_weights
      >>> seed_rnn_weights().W_hh.shape
      (5, 5)
    """
    random_state, _, _ = _seed_stream(num_sequences, sequence_length, seed)
    input_size = _checks.positive_int("input_size", input_size)
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    output_size = _checks.positive_int("output_size", output_size)
    return SeedRNNWeights(
        W_xh=random_state.randn(input_size, hidden_size) * 0.01,
        W_hh=random_state.randn(hidden_size, hidden_size) * 0.01,
        W_hy=random_state.randn(hidden_size, output_size) * 0.01,
        b_h=np.zeros((1, hidden_size)),
        b_y=np.zeros((1, output_size)),
    )
