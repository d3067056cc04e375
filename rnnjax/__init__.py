"""rnnjax: recurrent cells as pure JAX functions, from the vanilla RNN to minGRU.

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
    distributed,
    fused,
    interop,
    losses,
    models,
    parallel,
    runs,
    scans,
    series,
    tasks,
    train,
    zoo,
)
from rnnjax.cells import (
    ACTIVATIONS,
    Cell,
    ExpRNNParams,
    GRUParams,
    IndRNNParams,
    LRUParams,
    LRUState,
    LSTMParams,
    LSTMState,
    MinGRUParams,
    MinLSTMParams,
    RNNParams,
    Sequence,
    chrono_bias_init,
)
from rnnjax.layers import Directions, Layer, bidirectional, output_size, recurrent, stack
from rnnjax.sequence import unroll
from rnnjax.zoo import CELLS, exprnn, gru, indrnn, lru, lstm, make_cell, min_gru, min_lstm, rnn

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "Cell",
    "Directions",
    "ExpRNNParams",
    "GRUParams",
    "IndRNNParams",
    "LRUParams",
    "LRUState",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "MinGRUParams",
    "MinLSTMParams",
    "RNNParams",
    "Sequence",
    "__version__",
    "bidirectional",
    "checkpoint",
    "chrono_bias_init",
    "diagnostics",
    "distributed",
    "exprnn",
    "fused",
    "gru",
    "indrnn",
    "interop",
    "losses",
    "lru",
    "lstm",
    "make_cell",
    "min_gru",
    "min_lstm",
    "models",
    "output_size",
    "parallel",
    "recurrent",
    "rnn",
    "runs",
    "scans",
    "series",
    "stack",
    "tasks",
    "train",
    "unroll",
    "zoo",
]
