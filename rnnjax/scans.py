"""Whole-sequence implementations of the later cells (`Cell.sequence`): linear recurrences
solved for all steps at once, and expRNN's matrix exponential once per sequence.

minGRU, minLSTM and the LRU have recurrences linear in their state,
`h_t = a_t * h_{t-1} + b_t`, elementwise, with `a_t` and `b_t` known from the inputs
alone. Their sequence implementations therefore compute every step's `a_t` and `b_t` with
one matmul over all `T * N` rows, and then the recurrence by `linear_recurrence`, either

- as a parallel prefix scan, `jax.lax.associative_scan` over the pairs `(a_t, b_t)`
  with `(a, b) . (a', b') = (a a', a' b + b')`: depth `log T`, the form that makes these
  cells fast on accelerators (Martin & Cundy 2018; Feng et al. 2024; Orvieto et al. 2023);
- or as a `lax.scan` of the elementwise update, one cheap step per time step, which on a
  CPU does less work than the prefix scan's `O(T log T)` passes.

`method="auto"` (what the cells use) takes the sequential scan on a CPU and the parallel
one elsewhere. Both equal scanning the cell's `step` up to rounding (tested in float64,
values and derivatives). Since `|a_t| < 1` for all three cells, the products the prefix
scan forms can only shrink towards zero, never overflow: the scan runs in linear space
(Feng et al. run minGRU in log space because their sequential formulation divides by
those products, which this one never does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax import cells
from rnnjax.fused import scan_step

Array = jax.Array
METHODS = ("auto", "parallel", "sequential")


def _resolve(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "parallel"
    return method


def linear_recurrence(
    a: Array,
    b: Array,
    initial: Array,
    valid: Array | None = None,
    *,
    reverse: bool = False,
    method: str = "auto",
) -> Array:
    """Every state of `h_t = a_t * h_{t-1} + b_t` (elementwise) from `h_{-1} = initial`.

    Args:
      a: the factors `a_t`, `(T, N, ...)`, real or complex.
      b: the terms `b_t`, shaped like `a`.
      initial: `(N, ...)`, the state before the first step processed.
      valid: optional `(T, N)` booleans; where False the step leaves the state as it is
        (`a = 1`, `b = 0`), the padding rule of `rnnjax.unroll`.
      reverse: process the steps from the last to the first (`h_t` then follows
        `h_{t+1}`); the states stay in input order.
      method: `"parallel"` (`jax.lax.associative_scan`), `"sequential"` (`lax.scan`)
        or `"auto"` (sequential on a CPU, parallel elsewhere).

    Returns:
      The states `(T, N, ...)`, `states[t]` the state after step `t`.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.scans import linear_recurrence
      >>> a, b = jnp.full((3, 1, 1), 0.5), jnp.ones((3, 1, 1))
      >>> linear_recurrence(a, b, jnp.zeros((1, 1)), method="parallel").ravel().tolist()
      [1.0, 1.5, 1.75]
    """
    if valid is not None:
        keep = jnp.reshape(valid, valid.shape + (1,) * (a.ndim - 2))
        a = jnp.where(keep, a, jnp.ones_like(a))
        b = jnp.where(keep, b, jnp.zeros_like(b))
    if reverse:
        a, b = jnp.flip(a, 0), jnp.flip(b, 0)
    if _resolve(method) == "parallel":

        def combine(earlier: tuple, later: tuple) -> tuple:
            a_1, b_1 = earlier
            a_2, b_2 = later
            return a_1 * a_2, a_2 * b_1 + b_2

        products, sums = jax.lax.associative_scan(combine, (a, b))
        states = products * initial[None] + sums
    else:

        def body(h: Array, step: tuple) -> tuple[Array, Array]:
            a_t, b_t = step
            h = a_t * h + b_t
            return h, h

        _, states = jax.lax.scan(body, initial, (a, b))
    return jnp.flip(states, 0) if reverse else states


def _finish(
    states: Array, outputs: Array, valid: Array | None, reverse: bool, batch_major: bool
) -> tuple[Array, Array]:
    """`(final state, outputs)` from all states: the final state is the one after the last
    step processed (padding leaves it unchanged); padded steps output zeros."""
    final = states[0] if reverse else states[-1]
    if valid is not None:
        keep = jnp.reshape(valid, valid.shape + (1,) * (outputs.ndim - 2))
        outputs = jnp.where(keep, outputs, jnp.zeros_like(outputs))
    return final, jnp.swapaxes(outputs, 0, 1) if batch_major else outputs


def input_gated_sequence(
    coefficients: Callable[[Any, Array], tuple[Array, Array]], method: str = "auto"
) -> Callable[..., tuple[Any, Array]]:
    """The `Cell.sequence` of a cell whose step is `h' = a h + b`, `(a, b) =
    coefficients(params, x)`, and whose output is `h'`: minGRU and minLSTM.
    `coefficients` runs once on the whole `(T, N, I)` input (one matmul)."""
    _resolve(method)

    def sequence(
        params: Any,
        xs: Array,
        state: Array,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[Array, Array]:
        a, b = coefficients(params, xs)
        states = linear_recurrence(a, b, state, valid, reverse=reverse, method=method)
        return _finish(states, states, valid, reverse, batch_major)

    return sequence


def min_gru_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """minGRU's whole-sequence implementation (see the module docstring)."""
    return input_gated_sequence(cells.min_gru_coefficients, method)


def min_lstm_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """minLSTM's whole-sequence implementation (see the module docstring)."""
    return input_gated_sequence(cells.min_lstm_coefficients, method)


def lru_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """The LRU's whole-sequence implementation: `x B` for every step in one matmul, the
    complex diagonal recurrence by `linear_recurrence`, then `Re(s C) + x D` for every
    step in one matmul each. The complex numbers are computed in complex dtype (at least
    complex64) and returned as `LRUState(re, im)` in the parameters' dtype."""
    _resolve(method)

    def sequence(
        params: cells.LRUParams,
        xs: Array,
        state: cells.LRUState,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[cells.LRUState, Array]:
        real = state.re.dtype
        complex_dtype = jnp.result_type(jnp.promote_types(real, jnp.float32), jnp.complex64)
        lam_re, lam_im = cells.lru_lambda(params)
        lam = (lam_re + 1j * lam_im).astype(complex_dtype)
        u_re, u_im = cells.lru_inputs(params, xs)
        gamma = jnp.exp(params.gamma_log).reshape(1, 1, -1)
        b = (gamma * u_re + 1j * (gamma * u_im)).astype(complex_dtype)
        a = jnp.broadcast_to(lam.reshape(1, 1, -1), b.shape)
        initial = (state.re + 1j * state.im).astype(complex_dtype)
        states = linear_recurrence(a, b, initial, valid, reverse=reverse, method=method)
        re, im = jnp.real(states).astype(real), jnp.imag(states).astype(real)
        _, outputs = _finish(re, cells.lru_output(params, re, im, xs), valid, reverse, batch_major)
        last = 0 if reverse else -1
        return cells.LRUState(re[last], im[last]), outputs

    return sequence


def exprnn_sequence() -> Callable[..., tuple[Any, Array]]:
    """expRNN's whole-sequence implementation: the orthogonal matrix `expm(a - a.T)` once
    per sequence, outside the loop, then a `lax.scan` of the step that uses it (the
    reference step computes the exponential at every step)."""

    def sequence(
        params: cells.ExpRNNParams,
        xs: Array,
        state: Array,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[Array, Array]:
        w_hh = cells.orthogonal_matrix(params.a)

        def step(params: cells.ExpRNNParams, state: Array, x: Array) -> tuple[Array, Array]:
            return cells.exprnn_step(w_hh, params, state, x)

        final, hs = scan_step(
            step, params, xs, state, valid, reverse=reverse, unroll=1 if unroll is None else unroll
        )
        return final, jnp.swapaxes(hs, 0, 1) if batch_major else hs

    return sequence


def indrnn_sequence(activation: Callable[[Array], Array]) -> Callable[..., tuple[Any, Array]]:
    """IndRNN's whole-sequence implementation: the input projection of every step as one
    matmul, then a `lax.scan` of the elementwise recurrence `h' = act(xw + u h)` (the
    recurrence is nonlinear, so it stays a sequential scan)."""

    def sequence(
        params: cells.IndRNNParams,
        xs: Array,
        state: Array,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[Array, Array]:
        projections = xs @ params.w_ih + params.b.reshape(1, 1, -1)
        u = params.w_hh.reshape(1, -1)

        def step(params: cells.IndRNNParams, h: Array, xw: Array) -> tuple[Array, Array]:
            h = activation(xw + u * h)
            return h, h

        final, hs = scan_step(
            step,
            params,
            projections,
            state,
            valid,
            reverse=reverse,
            unroll=1 if unroll is None else unroll,
        )
        return final, jnp.swapaxes(hs, 0, 1) if batch_major else hs

    return sequence
