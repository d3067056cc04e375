"""rnnjax: vanilla RNN, LSTM and GRU cells as pure JAX functions.

Build a cell, unroll it over a sequence with one `jax.lax.scan`, and take
gradients through time::

    import jax, jax.numpy as jnp, rnnjax

    cell = rnnjax.lstm(hidden_size=32)
    params = cell.init(jax.random.key(0), input_size=3)
    hs, final_state = rnnjax.unroll(cell, params, jnp.ones((8, 100, 3)))
"""

# Submodules, importable as attributes after `import rnnjax` (plots needs matplotlib: import
# it explicitly as `rnnjax.plots`).
from rnnjax import (
    checkpoint,
    diagnostics,
    host_memory,
    losses,
    models,
    parallel,
    runs,
    series,
    tasks,
    train,
)
from rnnjax.cells import (
    ACTIVATIONS,
    Cell,
    GRUParams,
    LSTMParams,
    LSTMState,
    RNNParams,
    chrono_bias_init,
    gru,
    lstm,
    rnn,
)
from rnnjax.layers import Directions, Layer, bidirectional, output_size, recurrent, stack
from rnnjax.sequence import unroll

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "Cell",
    "Directions",
    "GRUParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "RNNParams",
    "__version__",
    "bidirectional",
    "checkpoint",
    "chrono_bias_init",
    "diagnostics",
    "gru",
    "host_memory",
    "losses",
    "lstm",
    "models",
    "output_size",
    "parallel",
    "recurrent",
    "rnn",
    "runs",
    "series",
    "stack",
    "tasks",
    "train",
    "unroll",
]
