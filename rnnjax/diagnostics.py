"""Gradient flow through time: per-step gradient norms, Jacobian products, cell health.

Notation: a cell's step maps the state `s_{t-1}` and the input `x_t` to the next
state `s_t` and an output `h_t`, `t = 1..T`, from the initial state `s_0`. A state is
any pytree of `(B, ...)` arrays (for the LSTM `s_t = (h_t, c_t)`). For a loss `L` of
the outputs, the gradient with respect to the state that step `t + 1` reads,
`g_t = dL/ds_t` for `t = 0..T-1`, obeys the backward recursion

    g_{T-1} = (dh_T/ds_{T-1})^T e_T,
    g_{t-1} = J_t^T g_t + (dh_t/ds_{t-1})^T e_t,        J_t = ds_t/ds_{t-1},

where `e_t = dL/dh_t` is the loss's direct dependence on the output at step `t`.
`g_t` is the gradient that *reaches* the state through the recurrence: the part of
the loss decided at later steps. The vanishing-gradient problem (Hochreiter 1991;
Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013) is `||g_t||`
shrinking geometrically as `T - t` grows, because the products `J_T ... J_{t+1}` do.

Every function here takes any `Cell` on the contract and reads nothing but
`cell.step`: norms are reported over the whole state and per state leaf
(`StateNorms`), whatever the state's structure.

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
from rnnjax.cells import Cell

Array = jax.Array
Head = Callable[[Array], Array]  # hs (B, T, H) -> per-sequence losses (B,)

_LN10 = math.log(10.0)


class StateNorms(NamedTuple):
    """log10 norms per step `t = 0..T-1`, `(T,)` each, averaged over the batch.

    Attributes:
      state: the norm over the whole state `s_t` (every leaf together).
      leaves: the norm of each state leaf, by the leaf's name: its path in the
        state pytree (`"h"` and `"c"` for `LSTMState`, a dict's keys, `"0"`, `"1"`
        for a tuple), or `"state"` when the state is a single array.
    """

    state: Array
    leaves: dict[str, Array]


def leaf_names(tree: Any) -> list[str]:
    """The names `StateNorms.leaves` gives the leaves of `tree`, in leaf order.

    Example:
      >>> import jax.numpy as jnp, rnnjax
      >>> from rnnjax.diagnostics import leaf_names
      >>> leaf_names(rnnjax.LSTMState(h=jnp.zeros(2), c=jnp.zeros(2))), leaf_names(jnp.zeros(2))
      (['h', 'c'], ['state'])
    """
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    names = [jax.tree_util.keystr(path, simple=True, separator=".") for path in paths]
    return [name or "state" for name in names]


def _state_norms(like: Any, total: Array, per_leaf: list[Array]) -> StateNorms:
    return StateNorms(state=total, leaves=dict(zip(leaf_names(like), per_leaf)))


def _check_xs(cell: Cell, params: Any, xs: Array) -> Array:
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape (B, T, I), got {_checks.shape_str(xs.shape)}")
    dtype = jnp.result_type(xs, *jax.tree.leaves(params))
    return jnp.swapaxes(xs.astype(dtype), 0, 1)  # time-major


def _forward(cell: Cell, params: Any, xs_tm: Array) -> tuple[Any, Array]:
    """The states each step reads, `s_0..s_{T-1}` (`(T, B, ...)` per leaf), and the
    outputs `h_1..h_T` (`(T, B, H)`)."""
    initial = cell.initial_state(params, xs_tm.shape[1:2])
    initial = jax.tree.map(lambda s: s.astype(xs_tm.dtype), initial)

    def body(state: Any, x: Array) -> tuple[Any, tuple[Any, Array]]:
        new, h = cell.step(params, state, x)
        new = jax.tree.map(lambda a, b: a.astype(b.dtype), new, state)
        return new, (state, h)

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
    cell: Cell, params: Any, xs_tm: Array, states: Any, direct: Array, with_inputs: bool = False
) -> tuple[Array, list[Array], Array | None]:
    """Natural-log norms of `g_t`, `t = 0..T-1`, by the backward recursion: over the
    whole state and per leaf, `(T, B)` each. `direct` is `e_t`, `(T, B, H)`. With
    `with_inputs`, also the natural-log norms of `dL/dx_t`, `(T, B)` (else `None`):
    `dL/dx_t = (ds_t/dx_t)^T g_t + (dh_t/dx_t)^T e_t`, the same pullbacks applied to
    the input."""
    first = jax.tree.map(lambda s: s[0], states)
    zero_state = jax.tree.map(jnp.zeros_like, first)
    log_scale = jnp.full(xs_tm.shape[1], -jnp.inf, xs_tm.dtype)

    def body(carry: tuple[Array, Any], inputs: tuple) -> tuple[tuple[Array, Any], tuple]:
        log_scale, unit = carry  # g_t, the cotangent of the state this step writes
        state, x, e = inputs
        _, pullback = jax.vjp(lambda s, x: cell.step(params, s, x), state, x)
        # The pullback is linear: the propagated and the direct parts apart, then
        # summed in log space, so that neither overflows.
        from_state, x_from_state = pullback((unit, jnp.zeros_like(e)))
        from_output, x_from_output = pullback((zero_state, e))
        log_input = None
        if with_inputs:
            log_x_pulled, unit_x_pulled = _normalise(x_from_state)
            log_x_direct, unit_x_direct = _normalise(x_from_output)
            log_input, _ = _scaled_sum(
                log_scale + log_x_pulled, unit_x_pulled, log_x_direct, unit_x_direct
            )
        log_pulled, unit_pulled = _normalise(from_state)
        log_direct, unit_direct = _normalise(from_output)
        log_scale, unit = _scaled_sum(log_scale + log_pulled, unit_pulled, log_direct, unit_direct)
        return (log_scale, unit), (log_scale, _leaf_log_norms(log_scale, unit), log_input)

    _, (total, per_leaf, log_inputs) = jax.lax.scan(
        body, (log_scale, zero_state), (states, xs_tm, direct), reverse=True
    )
    return total, per_leaf, log_inputs


def _batch_mean_log10(log_norms: Array) -> Array:
    """log10 of the batch mean of the norms, from natural-log norms `(T, B)`."""
    batch = log_norms.shape[1]
    return (jax.scipy.special.logsumexp(log_norms, axis=1) - math.log(batch)) / _LN10


def _output_gradients(outputs: Array, head: Head) -> Array:
    """`e_t = dL/dh_t`, `(T, B, H)`, for `L` the sum of `head` over the batch."""
    return jax.grad(lambda hs: jnp.sum(head(jnp.swapaxes(hs, 0, 1))))(outputs)


def _as_log10(like: Any, total: Array, per_leaf: list[Array]) -> StateNorms:
    return _state_norms(like, _batch_mean_log10(total), [_batch_mean_log10(n) for n in per_leaf])


def state_gradient_norms(cell: Cell, params: Any, xs: Array, head: Head) -> StateNorms:
    """`log10 ||dL_b/ds_t||` for every step `t = 0..T-1`, averaged over the sequences `b`.

    `s_t` is the state step `t + 1` reads (the module docstring has the recursion):
    `[-1]` is the gradient reaching the last state, `[0]` the one reaching the
    initial state. One forward and one backward pass, in log space (no underflow at
    any length), for any cell.

    Args:
      cell: the recurrent cell.
      params: its parameters.
      xs: inputs `(B, T, I)`.
      head: `head(hs) -> (B,)`: each sequence's loss from the outputs `hs (B, T, H)`
        (a readout and a task loss; see `readout_head`).

    Returns:
      `StateNorms` of shape `(T,)`: over the whole state, and per leaf (`h` and `c`
      for the LSTM). Each is the log10 of the batch mean of the per-sequence norms.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> from rnnjax.diagnostics import state_gradient_norms
      >>> cell = rnnjax.rnn(8)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> xs = jax.random.normal(jax.random.key(1), (4, 500, 1))
      >>> norms = state_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
      >>> bool(jnp.isfinite(norms.state).all()), float(norms.state[-1]) > float(norms.state[0])
      (True, True)
    """
    xs_tm = _check_xs(cell, params, xs)
    return _state_gradient_norms(cell, params, xs_tm, head)


def _state_gradient_norms(cell: Cell, params: Any, xs_tm: Array, head: Head) -> StateNorms:
    return _gradient_pass(cell, params, xs_tm, head)[0]


def _gradient_pass(cell: Cell, params: Any, xs_tm: Array, head: Head) -> tuple[StateNorms, Array]:
    """`state_gradient_norms` and `input_gradient_norms` from one forward and one backward pass."""
    states, outputs = _forward(cell, params, xs_tm)
    direct = _output_gradients(outputs, head)
    total, per_leaf, log_inputs = _log_adjoints(
        cell, params, xs_tm, states, direct, with_inputs=True
    )
    return _as_log10(states, total, per_leaf), jnp.swapaxes(log_inputs, 0, 1) / _LN10


def input_gradient_norms(cell: Cell, params: Any, xs: Array, head: Head) -> Array:
    """`log10 ||dL_b/dx_{b,t}||` for every sequence `b` and step `t`: `(B, T)`.

    The gradient that reaches each input, per sequence (not averaged: the inputs that
    matter sit at different steps in different sequences, such as the adding
    problem's markers). Computed in log space in the same backward pass as
    `state_gradient_norms`, so it does not underflow at any length; `-inf` where the
    gradient is exactly zero.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> from rnnjax.diagnostics import input_gradient_norms
      >>> cell = rnnjax.rnn(8)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> xs = jax.random.normal(jax.random.key(1), (4, 300, 1))
      >>> norms = input_gradient_norms(cell, params, xs, lambda hs: jnp.sum(hs[:, -1], axis=-1))
      >>> norms.shape, bool(norms[0, 0] < norms[0, -1] - 5)  # the first input gets far less
      ((4, 300), True)
    """
    xs_tm = _check_xs(cell, params, xs)
    return _gradient_pass(cell, params, xs_tm, head)[1]


def state_gradient_norms_by_perturbation(
    cell: Cell, params: Any, xs: Array, head: Head
) -> StateNorms:
    """The same norms in plain arithmetic: a zero perturbation added to every state, one grad.

    Each step reads `s_t + eps_t`; `dL/d eps_t` is `g_t`. Exact where the numbers do
    not underflow (float64, or short sequences); kept as the reference the log-space
    version is tested against.
    """
    xs_tm = _check_xs(cell, params, xs)
    states, _ = _forward(cell, params, xs_tm)
    initial = jax.tree.map(lambda s: s[0], states)

    def loss(perturbations: Any) -> Array:
        def body(state: Any, inputs: tuple) -> tuple[Any, Array]:
            x, eps = inputs
            new, h = cell.step(params, jax.tree.map(jnp.add, state, eps), x)
            return new, h

        _, hs = jax.lax.scan(body, initial, (xs_tm, perturbations))
        return jnp.sum(head(jnp.swapaxes(hs, 0, 1)))

    grads = jax.grad(loss)(jax.tree.map(jnp.zeros_like, states))

    def log_norm(leaves: list[Array]) -> Array:
        squares = sum(jnp.sum(jnp.square(g), axis=tuple(range(2, g.ndim))) for g in leaves)
        return jnp.log(jnp.sqrt(squares))

    leaves = jax.tree.leaves(grads)
    return _as_log10(states, log_norm(leaves), [log_norm([g]) for g in leaves])


def jacobian_norms(cell: Cell, params: Any, xs: Array) -> StateNorms:
    """`log10 ||dh_T/ds_t||_F`, the Frobenius norm of the Jacobian of the last output
    with respect to the state step `t + 1` reads, for every `t = 0..T-1`.

    Propagates the `H` rows of the identity backwards through the products
    `J_T ... J_{t+1}` in log space, so it costs `H` backward passes run as one
    batched pass. Averaged over the batch like `state_gradient_norms`; over the
    whole state and per leaf, for any cell.
    """
    xs_tm = _check_xs(cell, params, xs)
    return _jacobian_norms(cell, params, xs_tm)


def _jacobian_norms(cell: Cell, params: Any, xs_tm: Array) -> StateNorms:
    states, outputs = _forward(cell, params, xs_tm)
    _, batch, hidden = outputs.shape
    eye = jnp.eye(hidden, dtype=outputs.dtype)

    def one_row(row: Array) -> tuple[Array, list[Array]]:
        last = jnp.broadcast_to(row, (batch, hidden))[None]
        direct = jnp.concatenate([jnp.zeros_like(outputs[:-1]), last.astype(outputs.dtype)])
        return _log_adjoints(cell, params, xs_tm, states, direct)[:2]

    total, rows = jax.vmap(one_row)(eye)  # (H, T, B) natural-log row norms

    def frobenius(r: Array) -> Array:
        return 0.5 * jax.scipy.special.logsumexp(2 * r, axis=0)

    return _as_log10(states, frobenius(total), [frobenius(r) for r in rows])


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


def gradient_decay(log10_norms: Any) -> float:
    """How fast a gradient fades going back in time: decades per step, by least squares.

    The slope of the straight line fitted to `log10 ||g_t||` against `t` over the
    whole sequence, with no threshold. Positive: the norm falls going back from
    `T` (a vanishing gradient), `1 / slope` steps per decade (`steps_per_decade`);
    zero: flat; negative: it grows going back (an exploding gradient). Steps where the
    gradient is exactly zero (`-inf`) are left out; NaN with fewer than two others.

    Example:
      >>> from rnnjax.diagnostics import gradient_decay
      >>> round(gradient_decay([-4.0, -3.0, -2.0, -1.0, 0.0]), 6)  # a decade per step
      1.0
    """
    values = np.asarray(log10_norms, dtype=np.float64)
    steps = np.arange(values.size, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return float("nan")
    return float(np.polyfit(steps[finite], values[finite], 1)[0])


def steps_per_decade(decay: float) -> float:
    """Steps back over which the gradient falls tenfold, `1 / decay` for a decay rate from
    `gradient_decay`: negative where it grows going back (tenfold every `|n|` steps),
    `inf` where it is flat, NaN for NaN.

    Example:
      >>> from rnnjax.diagnostics import steps_per_decade
      >>> steps_per_decade(0.02), steps_per_decade(-0.5), steps_per_decade(0.0)
      (50.0, -2.0, inf)
    """
    if math.isnan(decay):
        return float("nan")
    return 1.0 / decay if decay != 0 else float("inf")


class CellHealth(NamedTuple):
    """Summary figures of a cell on a batch; NaN where the cell does not have the part.

    Attributes:
      spectral_radius: largest eigenvalue modulus of the recurrent matrix that
        carries the state: `w_hh` for one gate block (the vanilla RNN), the
        candidate block (block 2: g for the LSTM, n for the GRU) for gated cells.
      max_singular_value: its largest singular value.
      mean_forget_gate: mean of the LSTM's forget gate (block 1 of 4) over steps,
        sequences and units; near 1 keeps memory.
      mean_update_gate: mean of the GRU's update gate `z` (block 1 of 3); near 1
        keeps the old state.
      saturated_fraction: fraction of output entries with `|h| > 0.99`, where
        `tanh` is flat and gradients through the unit vanish.
      unavailable: one line for each figure that could not be read, saying why.
    """

    spectral_radius: float
    max_singular_value: float
    mean_forget_gate: float
    mean_update_gate: float
    saturated_fraction: float
    unavailable: tuple[str, ...] = ()


def _gate_layout(params: Any) -> tuple[Array, Array, Array, int] | str:
    """`(w_ih, w_hh, b, blocks)` for parameters laid out as the built-in cells' are
    (fields `w_ih (I, kH)`, `w_hh (H, kH)`, `b (kH,)`, gate blocks side by side), or
    why not."""
    fields = [getattr(params, name, None) for name in ("w_ih", "w_hh", "b")]
    if any(f is None for f in fields):
        return "params have no w_ih, w_hh and b fields"
    w_ih, w_hh, b = fields
    hidden = w_hh.shape[0]
    if w_hh.ndim != 2 or w_hh.shape[1] % hidden or b.shape != (w_hh.shape[1],):
        return f"w_hh {_checks.shape_str(w_hh.shape)} is not (H, kH) with b (kH,)"
    return w_ih, w_hh, b, w_hh.shape[1] // hidden


@jax.jit
def _keep_gate_mean(w_ih: Array, w_hh: Array, b: Array, xs_tm: Array, outputs: Array) -> Array:
    """Mean of `sigmoid` of gate block 1 (the LSTM's forget, the GRU's update gate),
    with `h_{t-1}` the previous output."""
    hidden = w_hh.shape[0]
    previous = jnp.concatenate([jnp.zeros_like(outputs[:1]), outputs[:-1]], axis=0)
    block = slice(hidden, 2 * hidden)
    pre = xs_tm @ w_ih[:, block] + previous @ w_hh[:, block]
    return jnp.mean(jax.nn.sigmoid(pre + b[block].reshape(1, 1, -1)))


def cell_health(cell: Cell, params: Any, xs: Array) -> CellHealth:
    """Spectral figures of the recurrent matrix and gate statistics on `xs (B, T, I)`.

    Works on any cell: the saturated fraction comes from the outputs of `cell.step`;
    the spectral figures and gate means need parameters laid out as the built-in
    cells' (`w_ih`, `w_hh (H, kH)`, `b`), one gate block for a plain recurrence, 3
    (r, z, n) or 4 (i, f, g, o) for gated ones, and are NaN otherwise, with the
    reason in `unavailable`. The eigenvalues are computed by NumPy on the host (a
    small `H x H` matrix; not every JAX backend has a non-symmetric eigensolver).
    """
    xs_tm = _check_xs(cell, params, xs)
    _, outputs = _forward(cell, params, xs_tm)
    saturated = float(jnp.mean((jnp.abs(outputs) > 0.99).astype(outputs.dtype)))
    nan = float("nan")
    layout = _gate_layout(params)
    if isinstance(layout, str):
        reason = f"spectral figures and gate means: {layout}"
        return CellHealth(nan, nan, nan, nan, saturated, (reason,))
    w_ih, w_hh, b, blocks = layout
    if blocks not in (1, 3, 4):
        reason = f"spectral figures and gate means: {blocks} gate blocks, expected 1, 3 or 4"
        return CellHealth(nan, nan, nan, nan, saturated, (reason,))
    hidden = w_hh.shape[0]
    block = w_hh if blocks == 1 else w_hh[:, 2 * hidden : 3 * hidden]
    matrix = np.asarray(block, dtype=np.float64)
    keep = nan if blocks == 1 else float(_keep_gate_mean(w_ih, w_hh, b, xs_tm, outputs))
    return CellHealth(
        spectral_radius=float(np.max(np.abs(np.linalg.eigvals(matrix)))),
        max_singular_value=float(np.linalg.norm(matrix, 2)),
        mean_forget_gate=keep if blocks == 4 else nan,
        mean_update_gate=keep if blocks == 3 else nan,
        saturated_fraction=saturated,
    )


def readout_head(
    readout: Any, loss: str, targets: Array, per_step: bool, mask: Array | None = None
) -> Head:
    """The per-sequence loss of a `sequence_model` readout, as a function of `hs (B, T, H)`.

    Args:
      readout: the model's `Dense(w, b)` readout.
      loss: `"mse"` or `"cross_entropy"`.
      targets: `(B, O)` regression targets or integer labels `(B,)` / `(B, T)`.
      per_step: whether the model reads every step (many-to-many) or only the last.
      mask: for a per-step model, `None` (every step's loss counts) or `(B, T)`: the
        steps whose loss counts, averaged over them. The copy task's recall steps
        alone make the gradient at every earlier step the part *propagated* from
        them, with no direct term (`rnnjax.vanishing` measures it so).
    """
    if mask is not None and not per_step:
        raise ValueError("mask selects steps of a per-step model; this one reads the last step")

    def head(hs: Array) -> Array:
        features = hs if per_step else hs[:, -1]
        outputs = features @ readout.w + readout.b.reshape((1,) * (features.ndim - 1) + (-1,))
        if loss == "mse":
            per_entry = jnp.square(outputs - targets.astype(outputs.dtype))
            if per_step:
                per_entry = jnp.mean(per_entry, axis=-1)
        else:
            per_entry = optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
        per_entry = per_entry.reshape(per_entry.shape[0], -1)
        if mask is None:
            return jnp.mean(per_entry, axis=1)
        weights = jnp.asarray(mask).reshape(per_entry.shape).astype(per_entry.dtype)
        return jnp.sum(per_entry * weights, axis=1) / jnp.sum(weights, axis=1)

    return head


class Probe(NamedTuple):
    """What `make_probe` measures on one batch.

    Attributes:
      gradients: `log10 ||dL/ds_t||` per step (`state_gradient_norms`).
      jacobians: `log10 ||dh_T/ds_t||_F` per step (`jacobian_norms`).
      inputs: `log10 ||dL/dx_t||` per sequence and step, `(B, T)` (`input_gradient_norms`).
    """

    gradients: StateNorms
    jacobians: StateNorms
    inputs: Array


def make_probe(cell: Cell, loss: str, per_step: bool) -> Callable[..., Probe]:
    """A compiled `probe(model_params, xs, targets, mask=None) -> Probe` for a one-layer
    `sequence_model`; `mask` as in `readout_head`.

    Built once and called as often as needed (the benchmark calls it during
    training): it compiles on its first call and never again for the same shapes.
    """

    @jax.jit
    def probe(model_params: Any, xs: Array, targets: Array, mask: Array | None = None) -> Probe:
        (layer,) = model_params.layers
        xs_tm = _check_xs(cell, layer, xs)
        head = readout_head(model_params.readout, loss, targets, per_step, mask)
        gradients, inputs = _gradient_pass(cell, layer, xs_tm, head)
        return Probe(gradients, _jacobian_norms(cell, layer, xs_tm), inputs)

    return probe
