"""The public cells: each cell's equations joined with its fast path, and cells by name.

`rnnjax.cells` holds the equations (`cells.rnn`, `cells.lstm`, `cells.gru`, cells that
`rnnjax.unroll` scans step by step) and `rnnjax.fused` the whole-sequence
implementations. The constructors here, re-exported as `rnnjax.rnn`, `rnnjax.lstm`
and `rnnjax.gru`, return the same equations with the fast path attached as
`Cell.sequence`, the way Flax keeps `OptimizedLSTMCell` beside `LSTMCell`: same
parameters, same state, same results up to floating-point rounding, and
`rnnjax.unroll(..., fused=False)` still runs the plain equations.

`CELLS` names every cell in one place; `make_cell(name, hidden_size, **options)`
builds one from its name (the CLI, the training runs and the study choose cells
through it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnjax import cells, fused, scans
from rnnjax.cells import Activation, Cell, Initializer

_input_init = cells._default_input_init
_recurrent_init = cells._default_recurrent_init
_bias_init = cells._default_bias_init


def rnn(
    hidden_size: int,
    activation: Activation = "tanh",
    *,
    input_init: Initializer = _input_init,
    recurrent_init: Initializer = _recurrent_init,
    bias_init: Initializer = _bias_init,
) -> Cell:
    """A vanilla (Elman) RNN cell, `h' = act(x W_ih + h W_hh + b)`, with its fused kernel.

    The equations, arguments, parameters (`RNNParams`) and state are those of
    `rnnjax.cells.rnn`. For `activation` `"tanh"` or `"relu"` the cell carries the
    RNN's fused kernel as `Cell.sequence` (`rnnjax.fused.rnn_sequence`); with an
    activation of your own it has none, and `rnnjax.unroll` scans its step.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.rnn(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> rnnjax.unroll(cell, params, jnp.ones((2, 7, 3)))[0].shape
      (2, 7, 4)
    """
    cell = cells.rnn(
        hidden_size,
        activation,
        input_init=input_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    if isinstance(activation, str):
        return cell._replace(sequence=fused.rnn_sequence(activation))
    return cell


def lstm(
    hidden_size: int,
    forget_bias: float = 1.0,
    *,
    input_init: Initializer = _input_init,
    recurrent_init: Initializer = _recurrent_init,
    bias_init: Initializer = _bias_init,
) -> Cell:
    """A long short-term memory cell, gates i, f, g, o, with its fused kernel.

    The equations, arguments (the forget-gate bias +1 by default), parameters
    (`LSTMParams`) and state (`LSTMState(h, c)`) are those of `rnnjax.cells.lstm`;
    the cell carries the LSTM's fused kernel as `Cell.sequence`
    (`rnnjax.fused.lstm_sequence`).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.lstm(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> hs, state = rnnjax.unroll(cell, params, jnp.ones((2, 7, 3)))
      >>> hs.shape, state.c.shape
      ((2, 7, 4), (2, 4))
    """
    cell = cells.lstm(
        hidden_size,
        forget_bias,
        input_init=input_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return cell._replace(sequence=fused.lstm_sequence())


def gru(
    hidden_size: int,
    *,
    input_init: Initializer = _input_init,
    recurrent_init: Initializer = _recurrent_init,
    bias_init: Initializer = _bias_init,
) -> Cell:
    """A gated recurrent unit, gates r, z, n, reset after the matmul, with a tuned scan.

    The equations, arguments, parameters (`GRUParams`) and state are those of
    `rnnjax.cells.gru`; the cell carries `rnnjax.fused.gru_sequence` (its step tuned
    for a CPU, scanned two steps per loop iteration) as `Cell.sequence`. The GRU's
    fused kernel is `rnnjax.fused.gru_kernel_sequence`, for
    `cell._replace(sequence=...)`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.gru(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> rnnjax.unroll(cell, params, jnp.ones((2, 7, 3)))[0].shape
      (2, 7, 4)
    """
    cell = cells.gru(
        hidden_size,
        input_init=input_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    return cell._replace(sequence=fused.gru_sequence())


def indrnn(
    hidden_size: int,
    activation: Activation = "relu",
    *,
    recurrent_max_abs: float | None = None,
    **initializers: Any,
) -> Cell:
    """An IndRNN cell (Li et al. 2018): `rnnjax.cells.indrnn`'s equations, arguments
    (`recurrent_max_abs` bounds `|u|`), parameters and state, with
    `rnnjax.scans.indrnn_sequence` (every step's input projection as one matmul) as
    `Cell.sequence`."""
    cell = cells.indrnn(
        hidden_size, activation, recurrent_max_abs=recurrent_max_abs, **initializers
    )
    act = cells._resolve_activation(activation)
    return cell._replace(sequence=scans.indrnn_sequence(act, recurrent_max_abs))


def exprnn(hidden_size: int, **initializers: Any) -> Cell:
    """An expRNN cell (Lezcano-Casado & Martinez-Rubio 2019): `rnnjax.cells.exprnn`'s
    equations, arguments, parameters and state, with `rnnjax.scans.exprnn_sequence`
    (the orthogonal matrix computed once per sequence) as `Cell.sequence`."""
    return cells.exprnn(hidden_size, **initializers)._replace(sequence=scans.exprnn_sequence())


def lru(hidden_size: int, state_size: int | None = None, **options: Any) -> Cell:
    """A linear recurrent unit (Orvieto et al. 2023): `rnnjax.cells.lru`'s equations,
    arguments, parameters and state, with `rnnjax.scans.lru_sequence` (all projections
    as one matmul, the recurrence as one scan) as `Cell.sequence`."""
    return cells.lru(hidden_size, state_size, **options)._replace(sequence=scans.lru_sequence())


def min_gru(hidden_size: int, **initializers: Any) -> Cell:
    """minGRU (Feng et al. 2024): `rnnjax.cells.min_gru`'s equations, arguments,
    parameters and state, with `rnnjax.scans.min_gru_sequence` as `Cell.sequence`."""
    return cells.min_gru(hidden_size, **initializers)._replace(sequence=scans.min_gru_sequence())


def min_lstm(hidden_size: int, **initializers: Any) -> Cell:
    """minLSTM (Feng et al. 2024): `rnnjax.cells.min_lstm`'s equations, arguments,
    parameters and state, with `rnnjax.scans.min_lstm_sequence` as `Cell.sequence`."""
    return cells.min_lstm(hidden_size, **initializers)._replace(sequence=scans.min_lstm_sequence())


CELLS: dict[str, Callable[..., Cell]] = {
    "rnn": rnn,
    "lstm": lstm,
    "gru": gru,
    "indrnn": indrnn,
    "exprnn": exprnn,
    "lru": lru,
    "min_gru": min_gru,
    "min_lstm": min_lstm,
}
"""Every cell by name: the constructor `make_cell` calls."""


def make_cell(name: str, hidden_size: int, **options: Any) -> Cell:
    """The cell called `name` in `CELLS`, with `hidden_size` units and `options`
    passed to its constructor (for example `forget_bias` for the LSTM).

    Example:
      >>> from rnnjax.zoo import make_cell
      >>> cell = make_cell("lstm", 8, forget_bias=0.0)
    """
    if name not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {name!r}")
    return CELLS[name](hidden_size, **options)
