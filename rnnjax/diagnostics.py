"""Gradient flow through time: per-step gradient norms, Jacobian products, cell health.

Notation: a cell maps its state `s_{t-1}` and input `x_t` to `s_t` (for the LSTM
`s_t = (h_t, c_t)`), `t = 1..T`. For a loss `L` of the outputs,
`g_t = dL/ds_t` obeys the backward recursion

    g_T = d_T,        g_t = J_{t+1}^T g_{t+1} + d_t,        J_{t+1} = ds_{t+1}/ds_t,

where `d_t` is the loss's direct dependence on the output at step `t`. The
vanishing-gradient problem (Hochreiter 1991; Bengio, Simard & Frasconi 1994;
Pascanu, Mikolov & Bengio 2013) is `||g_t||` shrinking geometrically as `T - t`
grows, because the products `J_T ... J_{t+1}` do.

In float32 those norms fall below the smallest representable number within a
few hundred steps, so this module carries them in log space: it propagates a
unit vector and a running log-norm, renormalising at every step, and reports
`log10` values that stay finite for sequences of any length. Everything runs as
one `lax.scan` forward and one backward, jit-compiled, for any cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import _checks
from rnnjax.cells import Cell, GRUParams, LSTMParams, LSTMState, RNNParams

Array = jax.Array
Head = Callable[[Array], Array]  # hs (B, T, H) -> per-sequence losses (B,)

_LN10 = math.log(10.0)


class StateNorms(NamedTuple):
    """log10 norms per time step `t = 1..T`, `(T,)` each, averaged over the batch.

    Attributes:
      h: log10 of the norm with respect to the hidden state `h_t`.
      c: the same for the LSTM's cell state `c_t`; `None` for RNN and GRU.
    """

    h: Array
    c: Array | None


def _hidden(state: Any) -> Array:
    return state.h if isinstance(state, LSTMState) else state


def _with_hidden(like: Any, h: Array) -> Any:
    """A state shaped like `like` holding `h` in its hidden part and zeros elsewhere."""
    if isinstance(like, LSTMState):
        return LSTMState(h=h, c=jnp.zeros_like(like.c))
    return h


def _as_state_norms(like: Any, per_leaf: list[Array]) -> StateNorms:
    if isinstance(like, LSTMState):
        return StateNorms(h=per_leaf[0], c=per_leaf[1])
    return StateNorms(h=per_leaf[0], c=None)


def _check_xs(cell: Cell, params: Any, xs: Array) -> Array:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")
    xs = jnp.asarray(xs)
    if xs.ndim != 3 or xs.shape[-1] != params.w_ih.shape[0]:
        raise ValueError(
            f"xs must have shape (B, T, {params.w_ih.shape[0]}), got {_checks.shape_str(xs.shape)}"
        )
    dtype = jnp.result_type(xs, *jax.tree.leaves(params))
    return jnp.swapaxes(xs.astype(dtype), 0, 1)  # time-major


def _forward_states(cell: Cell, params: Any, xs_tm: Array) -> Any:
    """Every state `s_1..s_T`, stacked on a leading time axis: `(T, B, ...)` per leaf."""
    initial = cell.initial_state(params, xs_tm.shape[1:2])
    initial = jax.tree.map(lambda s: s.astype(xs_tm.dtype), initial)

    def body(state: Any, x: Array) -> tuple[Any, Any]:
        new, _ = cell.step(params, state, x)
        return new, new

    return jax.lax.scan(body, initial, xs_tm)[1]


def _sequence_norms(tree: Any) -> Array:
    """Per-sequence Euclidean norm over every leaf and feature: `(B,)`."""
    squares = [
        jnp.sum(jnp.square(leaf), axis=tuple(range(1, leaf.ndim))) for leaf in jax.tree.leaves(tree)
    ]
    return jnp.sqrt(sum(squares))


def _normalise(tree: Any) -> tuple[Array, Any]:
    """`(log ||tree||, tree / ||tree||)` per sequence; `(-inf, 0)` for a zero vector."""
    norm = _sequence_norms(tree)
    safe = jnp.where(norm > 0, norm, 1)
    unit = jax.tree.map(lambda leaf: leaf / safe.reshape((-1,) + (1,) * (leaf.ndim - 1)), tree)
    return jnp.where(norm > 0, jnp.log(safe), -jnp.inf), unit


def _leaf_log_norms(log_scale: Array, unit: Any) -> list[Array]:
    """Natural-log norm of each leaf of `exp(log_scale) * unit`, per sequence."""
    result = []
    for leaf in jax.tree.leaves(unit):
        norm = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=tuple(range(1, leaf.ndim))))
        result.append(
            log_scale + jnp.where(norm > 0, jnp.log(jnp.where(norm > 0, norm, 1)), -jnp.inf)
        )
    return result


def _scaled_sum(log_a: Array, unit_a: Any, log_b: Array, unit_b: Any) -> tuple[Array, Any]:
    """`exp(log_a) unit_a + exp(log_b) unit_b`, as `(log-norm, unit)`, without overflow."""
    top = jnp.maximum(log_a, log_b)
    top = jnp.where(jnp.isfinite(top), top, 0.0)

    def combine(a: Array, b: Array) -> Array:
        shape = (-1,) + (1,) * (a.ndim - 1)
        return jnp.exp(log_a - top).reshape(shape) * a + jnp.exp(log_b - top).reshape(shape) * b

    log_norm, unit = _normalise(jax.tree.map(combine, unit_a, unit_b))
    return log_norm + top, unit


def _log_adjoints(
    cell: Cell, params: Any, xs_tm: Array, states: Any, seed: Any, direct: Any | None
) -> list[Array]:
    """Per-leaf natural-log norms of `g_t`, `(T, B)` each, by the backward recursion.

    `g_T = seed (+ direct_T)`; `direct` is `(T, B, ...)` or `None`.
    """
    final = seed if direct is None else jax.tree.map(lambda s, d: s + d[-1], seed, direct)
    log_scale, unit = _normalise(final)
    last = _leaf_log_norms(log_scale, unit)
    previous_states = jax.tree.map(lambda s: s[:-1], states)  # s_t for t = 1..T-1
    next_inputs = xs_tm[1:]  # x_{t+1}

    def body(carry: tuple[Array, Any], inputs: tuple) -> tuple[tuple[Array, Any], list[Array]]:
        log_scale, unit = carry
        state, x_next, d = inputs
        _, pullback = jax.vjp(lambda s: cell.step(params, s, x_next)[0], state)
        (pulled,) = pullback(unit)
        log_pulled, unit_pulled = _normalise(pulled)
        log_scale, unit = log_scale + log_pulled, unit_pulled
        if d is not None:
            log_d, unit_d = _normalise(d)
            log_scale, unit = _scaled_sum(log_scale, unit, log_d, unit_d)
        return (log_scale, unit), _leaf_log_norms(log_scale, unit)

    direct_before = None if direct is None else jax.tree.map(lambda d: d[:-1], direct)
    _, earlier = jax.lax.scan(
        body, (log_scale, unit), (previous_states, next_inputs, direct_before), reverse=True
    )
    return [jnp.concatenate([e, l[None]], axis=0) for e, l in zip(earlier, last)]


def _batch_mean_log10(log_norms: Array) -> Array:
    """log10 of the batch mean of the norms, from natural-log norms `(T, B)`."""
    batch = log_norms.shape[1]
    return (jax.scipy.special.logsumexp(log_norms, axis=1) - math.log(batch)) / _LN10


def _direct_terms(cell: Cell, params: Any, states: Any, head: Head) -> Any:
    """`d_t = dL/dh_t` through the outputs only, in state layout `(T, B, ...)`."""
    hs_tm = _hidden(states)
    grads = jax.grad(lambda hs: jnp.sum(head(jnp.swapaxes(hs, 0, 1))))(hs_tm)
    return _with_hidden(states, grads)


def state_gradient_norms(cell: Cell, params: Any, xs: Array, head: Head) -> StateNorms:
    """`log10 ||dL_b/ds_t||` for every step `t`, averaged over the sequences `b` of a batch.

    One forward and one backward pass, in log space (no underflow at any length).

    Args:
      cell: the recurrent cell.
      params: its parameters.
      xs: inputs `(B, T, I)`.
      head: `head(hs) -> (B,)`: each sequence's loss from the outputs `hs (B, T, H)`
        (a readout and a task loss; see `readout_head`).

    Returns:
      `StateNorms` of shape `(T,)`: `h` for `||dL/dh_t||`, and `c` for the LSTM's
      `||dL/dc_t||`. Each is the log10 of the batch mean of the per-sequence norms.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> from rnnjax.diagnostics import state_gradient_norms
      >>> cell = rnnjax.rnn(8)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> xs = jax.random.normal(jax.random.key(1), (4, 2000, 1))
      >>> norms = state_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
      >>> bool(jnp.isfinite(norms.h).all()), float(norms.h[-1]) > float(norms.h[0])
      (True, True)
    """
    xs_tm = _check_xs(cell, params, xs)
    return _state_gradient_norms(cell, params, xs_tm, head)


def _state_gradient_norms(cell: Cell, params: Any, xs_tm: Array, head: Head) -> StateNorms:
    states = _forward_states(cell, params, xs_tm)
    direct = _direct_terms(cell, params, states, head)
    seed = jax.tree.map(lambda d: jnp.zeros_like(d[-1]), direct)
    per_leaf = _log_adjoints(cell, params, xs_tm, states, seed, direct)
    return _as_state_norms(states, [_batch_mean_log10(n) for n in per_leaf])


def state_gradient_norms_by_perturbation(
    cell: Cell, params: Any, xs: Array, head: Head
) -> StateNorms:
    """The same norms in plain arithmetic: a zero perturbation added to every state, one grad.

    Exact where the numbers do not underflow (float64, or short sequences); kept
    as the reference the log-space version is tested against.
    """
    xs_tm = _check_xs(cell, params, xs)
    states = _forward_states(cell, params, xs_tm)
    zeros = jax.tree.map(jnp.zeros_like, states)
    initial = jax.tree.map(lambda s: jnp.zeros_like(s[0]), states)

    def loss(perturbations: Any) -> Array:
        def body(state: Any, inputs: tuple) -> tuple[Any, Array]:
            x, eps = inputs
            new, _ = cell.step(params, state, x)
            new = jax.tree.map(jnp.add, new, eps)
            return new, _hidden(new)

        _, hs = jax.lax.scan(body, initial, (xs_tm, perturbations))
        return jnp.sum(head(jnp.swapaxes(hs, 0, 1)))

    grads = jax.grad(loss)(zeros)
    per_leaf = [
        jnp.log(jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(2, g.ndim)))))
        for g in jax.tree.leaves(grads)
    ]
    return _as_state_norms(states, [_batch_mean_log10(n) for n in per_leaf])


def jacobian_norms(cell: Cell, params: Any, xs: Array) -> StateNorms:
    """`log10 ||dh_T/ds_t||_F`, the Frobenius norm of the Jacobian product, for every `t`.

    Propagates the `H` rows of the identity backwards through the products
    `J_T ... J_{t+1}` in log space, so it costs `H` backward passes run as one
    batched pass. Averaged over the batch like `state_gradient_norms`.

    Returns:
      `StateNorms`: `h` for `||dh_T/dh_t||` and, for the LSTM, `c` for `||dh_T/dc_t||`.
    """
    xs_tm = _check_xs(cell, params, xs)
    return _jacobian_norms(cell, params, xs_tm)


def _jacobian_norms(cell: Cell, params: Any, xs_tm: Array) -> StateNorms:
    states = _forward_states(cell, params, xs_tm)
    final = jax.tree.map(lambda s: s[-1], states)
    batch, hidden = _hidden(final).shape
    eye = jnp.eye(hidden, dtype=xs_tm.dtype)

    def one_row(row: Array) -> list[Array]:
        seed = _with_hidden(final, jnp.broadcast_to(row, (batch, hidden)))
        return _log_adjoints(cell, params, xs_tm, states, seed, None)

    rows = jax.vmap(one_row)(eye)  # per leaf: (H, T, B) natural-log row norms
    frobenius = [0.5 * jax.scipy.special.logsumexp(2 * r, axis=0) for r in rows]
    return _as_state_norms(states, [_batch_mean_log10(n) for n in frobenius])


def gradient_horizon(log10_norms: Any, threshold: float = 1e-3) -> int:
    """How many steps back the relative norm `||g_t|| / ||g_T||` stays at or above `threshold`.

    Counts back from `T` and stops at the first step below the threshold; a
    signal that never falls that far gives `T - 1`, the whole sequence.

    Example:
      >>> from rnnjax.diagnostics import gradient_horizon
      >>> gradient_horizon([-9.0, -5.0, -2.5, -1.0, 0.0], threshold=1e-3)  # -5 is below -3
      2
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    values = np.asarray(log10_norms, dtype=np.float64)
    relative = values - values[-1]
    below = np.flatnonzero(relative[::-1] < math.log10(threshold))
    return int(below[0] - 1) if below.size else len(values) - 1


class CellHealth(NamedTuple):
    """Summary figures of a cell on a batch.

    Attributes:
      spectral_radius: largest eigenvalue modulus of the recurrent matrix that
        carries the state: `w_hh` for the RNN, the candidate block (g for the
        LSTM, n for the GRU) for gated cells.
      max_singular_value: its largest singular value.
      mean_forget_gate: mean of the LSTM's forget gate over steps, sequences and
        units (NaN for other cells); near 1 keeps memory.
      mean_update_gate: mean of the GRU's update gate `z` (NaN for other cells);
        near 1 keeps the old state.
      saturated_fraction: fraction of hidden entries with `|h| > 0.99`, where
        `tanh` is flat and gradients through the unit vanish.
    """

    spectral_radius: float
    max_singular_value: float
    mean_forget_gate: float
    mean_update_gate: float
    saturated_fraction: float


def _recurrent_matrix(params: Any) -> Array:
    hidden = params.w_hh.shape[0]
    if isinstance(params, RNNParams):
        return params.w_hh
    if isinstance(params, (LSTMParams, GRUParams)):
        return params.w_hh[:, 2 * hidden : 3 * hidden]
    raise TypeError(
        f"params must be RNNParams, LSTMParams or GRUParams, got {type(params).__name__}"
    )


@jax.jit
def _gate_statistics(params: Any, xs_tm: Array, states: Any) -> tuple[Array, Array, Array]:
    hidden = params.w_hh.shape[0]
    hs = _hidden(states)
    previous = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)  # h_{t-1}
    saturated = jnp.mean((jnp.abs(hs) > 0.99).astype(hs.dtype))
    nan = jnp.full((), jnp.nan, hs.dtype)
    if isinstance(params, (LSTMParams, GRUParams)):
        block = slice(hidden, 2 * hidden)  # f for the LSTM, z for the GRU
        pre = xs_tm @ params.w_ih[:, block] + previous @ params.w_hh[:, block]
        gate = jnp.mean(jax.nn.sigmoid(pre + params.b[block].reshape(1, 1, -1)))
        if isinstance(params, LSTMParams):
            return gate, nan, saturated
        return nan, gate, saturated
    return nan, nan, saturated


def cell_health(cell: Cell, params: Any, xs: Array) -> CellHealth:
    """Spectral figures of the recurrent matrix and gate statistics on `xs (B, T, I)`.

    The eigenvalues are computed by NumPy on the host (a small `H x H` matrix;
    not every JAX backend has a non-symmetric eigensolver).
    """
    xs_tm = _check_xs(cell, params, xs)
    matrix = np.asarray(_recurrent_matrix(params), dtype=np.float64)
    forget, update, saturated = _gate_statistics(
        params, xs_tm, _forward_states(cell, params, xs_tm)
    )
    return CellHealth(
        spectral_radius=float(np.max(np.abs(np.linalg.eigvals(matrix)))),
        max_singular_value=float(np.linalg.norm(matrix, 2)),
        mean_forget_gate=float(forget),
        mean_update_gate=float(update),
        saturated_fraction=float(saturated),
    )


def readout_head(readout: Any, loss: str, targets: Array, per_step: bool) -> Head:
    """The per-sequence loss of a `sequence_model` readout, as a function of `hs (B, T, H)`.

    Args:
      readout: the model's `Dense(w, b)` readout.
      loss: `"mse"` or `"cross_entropy"`.
      targets: `(B, O)` regression targets or integer labels `(B,)` / `(B, T)`.
      per_step: whether the model reads every step (many-to-many) or only the last.
    """

    def head(hs: Array) -> Array:
        features = hs if per_step else hs[:, -1]
        outputs = features @ readout.w + readout.b.reshape((1,) * (features.ndim - 1) + (-1,))
        if loss == "mse":
            errors = jnp.square(outputs - targets.astype(outputs.dtype))
            return jnp.mean(errors.reshape(errors.shape[0], -1), axis=1)
        per_label = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
        return jnp.mean(per_label.reshape(per_label.shape[0], -1), axis=1)

    return head


class Probe(NamedTuple):
    """What `make_probe` measures on one batch.

    Attributes:
      gradients: `log10 ||dL/ds_t||` per step (`state_gradient_norms`).
      jacobians: `log10 ||dh_T/ds_t||_F` per step (`jacobian_norms`).
    """

    gradients: StateNorms
    jacobians: StateNorms


def make_probe(cell: Cell, loss: str, per_step: bool) -> Callable[[Any, Array, Array], Probe]:
    """A compiled `probe(model_params, xs, targets) -> Probe` for a one-layer `sequence_model`.

    Built once and called as often as needed (the benchmark calls it during
    training): it compiles on its first call and never again for the same shapes.
    """

    @jax.jit
    def probe(model_params: Any, xs: Array, targets: Array) -> Probe:
        (layer,) = model_params.layers
        xs_tm = _check_xs(cell, layer, xs)
        head = readout_head(model_params.readout, loss, targets, per_step)
        return Probe(
            _state_gradient_norms(cell, layer, xs_tm, head), _jacobian_norms(cell, layer, xs_tm)
        )

    return probe
