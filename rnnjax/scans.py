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

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import cells
from rnnjax.fused import IN_LOOP_INPUT_MAX, _apply_to_rows, _is_zero, _sum, scan_step
from rnnjax.sequence import checkpointed

Array = jax.Array
METHODS = ("auto", "parallel", "sequential")


def _check_method(method: str, methods: tuple[str, ...] = METHODS) -> str:
    """`method`, checked; resolving `"auto"` waits for the call (it asks which backend
    JAX runs on, which would start JAX's runtime when a cell is only being built)."""
    if method not in methods:
        raise ValueError(f"method must be one of {list(methods)}, got {method!r}")
    return method


def _resolve(method: str) -> str:
    _check_method(method)
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


GATED_METHODS = ("auto", "fused", "parallel", "sequential")

CHUNK_BYTES = 3 * 2**20
"""How much gate-wide data one chunk of the fused minGRU/minLSTM loop covers: see
`chunk_steps`."""


def chunk_steps(values_per_step: int, dtype: Any, num_steps: int) -> int:
    """The steps per chunk of the fused loop (`input_gated_sequence`): about as many as
    fill `CHUNK_BYTES` with `values_per_step` gate values (`N * G`) per step (at least
    16), taken as a divisor of `num_steps` within a factor 2 of that where there is one,
    so that no shorter last chunk (and no copy of the outputs to join it) follows.

    The sequence runs as an outer `lax.scan` over chunks, each under `jax.checkpoint`
    (`rnnjax.sequence.checkpointed`): what a chunk saves for its derivative is then a few
    megabytes, which the allocator hands back at every chunk and the caches hold, instead
    of `(T, N, G)` arrays written to fresh memory, whose page faults are most of the
    cost of a long sequence on a CPU. The backward pass re-runs each chunk's forward
    loop, which costs less than it saves (measured on the performance page).
    """
    per_step = max(1, values_per_step) * jnp.dtype(dtype).itemsize
    target = max(16, CHUNK_BYTES // per_step)
    divisors = [k for k in range(max(1, target // 2), 2 * target + 1) if num_steps % k == 0]
    if not divisors:
        return target
    return min(divisors, key=lambda k: max(k / target, target / k))


def input_gated_sequence(
    kernel: GateKernel, coefficients: Callable[[Any, Array], tuple[Array, Array]], method: str
) -> Callable[..., tuple[Any, Array]]:
    """The `Cell.sequence` of a cell whose step is `h' = a h + b`, `(a, b) =
    coefficients(params, x)`, and whose output is `h'`: minGRU and minLSTM.

    `method="fused"` runs `gated_unroll` (one loop, gates computed inside it, a written
    derivative: the fastest on a CPU) over chunks of `chunk_steps` steps; `"parallel"`
    and `"sequential"` compute `a` and `b` for every step with one matmul
    (`coefficients` on the whole `(T, N, I)` input) and then `linear_recurrence` with
    that method; `"auto"` takes `"fused"` on a CPU and `"parallel"` elsewhere, decided
    when the sequence is traced."""
    _check_method(method, GATED_METHODS)

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
        chosen = method
        if chosen == "auto":
            chosen = "fused" if jax.default_backend() == "cpu" else "parallel"
        if chosen == "fused":
            steps = 1 if unroll is None else unroll

            def run(params: Any, state: Array, xs: Array, valid: Array | None) -> tuple:
                return gated_unroll(kernel, params, xs, state, valid, reverse=reverse, unroll=steps)

            chunk = chunk_steps(
                xs.shape[1] * kernel.blocks * state.shape[-1], xs.dtype, xs.shape[0]
            )
            if chunk < xs.shape[0]:
                final, hs = checkpointed(
                    run, params, state, xs, valid, chunk=chunk, reverse=reverse
                )
            else:
                final, hs = run(params, state, xs, valid)
            return final, jnp.swapaxes(hs, 0, 1) if batch_major else hs
        a, b = coefficients(params, xs)
        states = linear_recurrence(a, b, state, valid, reverse=reverse, method=chosen)
        return _finish(states, states, valid, reverse, batch_major)

    return sequence


def min_gru_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """minGRU's whole-sequence implementation (see `input_gated_sequence`)."""
    return input_gated_sequence(MIN_GRU_KERNEL, cells.min_gru_coefficients, method)


def min_lstm_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """minLSTM's whole-sequence implementation (see `input_gated_sequence`)."""
    return input_gated_sequence(MIN_LSTM_KERNEL, cells.min_lstm_coefficients, method)


def lru_sequence(method: str = "auto") -> Callable[..., tuple[Any, Array]]:
    """The LRU's whole-sequence implementation: `x B` for every step in one matmul, the
    complex diagonal recurrence by `linear_recurrence`, then `Re(s C) + x D` for every
    step in one matmul each. The complex numbers are computed in complex dtype (at least
    complex64) and returned as `LRUState(re, im)` in the parameters' dtype."""
    _check_method(method)

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


def indrnn_sequence(
    activation: Callable[[Array], Array], recurrent_max_abs: float | None = None
) -> Callable[..., tuple[Any, Array]]:
    """IndRNN's whole-sequence implementation: the input projection of every step as one
    matmul, then a `lax.scan` of the elementwise recurrence `h' = act(xw + u h)` (the
    recurrence is nonlinear, so it stays a sequential scan), with `u` clipped to
    `[-recurrent_max_abs, recurrent_max_abs]` when that is given."""
    bound = cells.indrnn_recurrent_bound(recurrent_max_abs)

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
        u = bound(params.w_hh).reshape(1, -1)

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


# -- minGRU and minLSTM in one loop (the CPU path) -------------------------------------


class GateKernel(NamedTuple):
    """An input-gated cell's step, `h' = a h + b` with `(a, b)` from the step's input
    alone, with the factors its linearisation multiplies by.

    Attributes:
      forward: `forward(pre, h) -> (h', a, slopes)`: `pre` is the step's projection
        `x W + b` as a tuple of `blocks` arrays `(N, H)` (one per gate block, kept apart:
        XLA's CPU compiler makes slow loop code of slices of one `(N, G)` array), `h
        (N, H)` the state it reads; `a (N, H)` is the recurrence's factor and `slopes`
        the derivatives of `h'` with respect to each block of `pre`, a tuple like `pre`,
        so that the step's tangent is `d h' = a d h + sum_k slopes_k * d pre_k`.
      blocks: the number of gate blocks.
    """

    forward: Callable[[tuple, Array], tuple[Array, Array, tuple]]
    blocks: int


def _candidate_and_slope(pre: Array) -> tuple[Array, Array]:
    """`positive_candidate(pre)` and its derivative, sharing one sigmoid."""
    sig = jax.nn.sigmoid(pre)
    positive = pre >= 0
    return jnp.where(positive, pre + 0.5, sig), jnp.where(positive, 1.0, sig * (1 - sig))


def _min_gru_forward(pre: tuple, h: Array) -> tuple[Array, Array, tuple]:
    # h' = (1 - z) h + z c:  d h' = (1 - z) d h + z (1 - z) (c - h) d z_pre + z c' d h_pre
    z_pre, h_pre = pre
    z = jax.nn.sigmoid(z_pre)
    candidate, candidate_slope = _candidate_and_slope(h_pre)
    a = 1 - z
    new = a * h + z * candidate
    return new, a, (z * a * (candidate - h), z * candidate_slope)


def _min_lstm_forward(pre: tuple, h: Array) -> tuple[Array, Array, tuple]:
    # h' = (f h + i c) / (f + i):  d h'/d f = (h - h') / (f + i),
    # d h'/d i = (c - h') / (f + i),  d h'/d c = i / (f + i)
    f_pre, i_pre, h_pre = pre
    f, i = jax.nn.sigmoid(f_pre), jax.nn.sigmoid(i_pre)
    candidate, candidate_slope = _candidate_and_slope(h_pre)
    total = f + i
    a, input_share = f / total, i / total
    new = a * h + input_share * candidate
    slopes = (
        f * (1 - f) * (h - new) / total,
        i * (1 - i) * (candidate - new) / total,
        input_share * candidate_slope,
    )
    return new, a, slopes


MIN_GRU_KERNEL = GateKernel(_min_gru_forward, 2)
MIN_LSTM_KERNEL = GateKernel(_min_lstm_forward, 3)


def _blocks(a: Array, blocks: int) -> tuple[Array, ...]:
    """The `blocks` equal slices of `a` along its last axis."""
    width = a.shape[-1] // blocks
    return tuple(a[..., k * width : (k + 1) * width] for k in range(blocks))


def _project(x: Array, w: Array) -> Array:
    """`x @ w` for `x (..., I)`. With one input feature, a broadcast multiply: XLA fuses
    it into the elementwise work around it, and its derivative with respect to `w` into
    a reduction, where a matmul's transpose first writes the whole product."""
    if x.shape[-1] == 1:
        return x * w.reshape((1,) * (x.ndim - 1) + w.shape[-1:])
    return _apply_to_rows(lambda rows: rows @ w, x) if x.ndim > 2 else x @ w


def _gated_loop(
    kernel: GateKernel,
    params: Any,
    xs: Array,
    state: Array,
    valid: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
    residuals: bool,
) -> tuple[Array, tuple]:
    """One `lax.scan` over the steps: `(final, (hs, a, slopes))`, or `(final, (hs,))`
    without `residuals`. Each step projects its own input, block by block (narrow
    inputs; wide ones are projected by one matmul per block before the loop, as in
    `rnnjax.fused`). Past a sequence's end the state stays, the output is zero, `a = 1`
    and the slopes are zero."""
    weights = _blocks(params.w_ih, kernel.blocks)
    biases = tuple(b[None, :] for b in _blocks(params.b, kernel.blocks))
    in_loop = xs.shape[-1] <= IN_LOOP_INPUT_MAX
    step_inputs = xs if in_loop else tuple(_project(xs, w) for w in weights)

    def body(h: Array, inputs: tuple) -> tuple[Array, tuple]:
        x_t, valid_t = inputs
        projected = tuple(x_t @ w for w in weights) if in_loop else x_t
        new, a, slopes = kernel.forward(tuple(p + b for p, b in zip(projected, biases)), h)
        new = new.astype(h.dtype)
        out = new
        if valid_t is not None:
            keep = valid_t[:, None]
            new, out, a = jnp.where(keep, new, h), jnp.where(keep, new, 0), jnp.where(keep, a, 1)
            slopes = tuple(jnp.where(keep, s, 0) for s in slopes)
        return new, (out, a, slopes) if residuals else (out,)

    return jax.lax.scan(body, state, (step_inputs, valid), reverse=reverse, unroll=unroll)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 5, 6, 7))
def _gated(
    kernel: GateKernel,
    params: Any,
    xs: Array,
    state: Array,
    valid: Array | None,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool,
) -> tuple[Array, Array]:
    # Values only (nothing differentiates): the loop saves nothing but the outputs.
    final, (hs,) = _gated_loop(
        kernel, params, xs, state, valid, reverse=reverse, unroll=unroll, residuals=False
    )
    return final, jnp.swapaxes(hs, 0, 1) if batch_major else hs


def _gated_jvp(
    kernel: GateKernel,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool,
    primals: tuple,
    tangents: tuple,
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    params, xs, state, valid = primals
    d_params, d_xs, d_state, _ = tangents
    final, (hs, a, slopes) = _gated_loop(
        kernel, params, xs, state, valid, reverse=reverse, unroll=unroll, residuals=True
    )
    # The projections' tangents for every step at once, block by block, then the part
    # of each step's tangent that does not depend on the state: u_t = sum_k slopes_k *
    # d pre_k.
    weights = _blocks(params.w_ih, kernel.blocks)
    d_weights = None if _is_zero(d_params.w_ih) else _blocks(d_params.w_ih, kernel.blocks)
    d_biases = None if _is_zero(d_params.b) else _blocks(d_params.b, kernel.blocks)
    terms = []
    for k, slope in enumerate(slopes):
        d_pre = _sum(
            [
                None if _is_zero(d_xs) else _project(d_xs, weights[k]),
                None if d_weights is None else _project(xs, d_weights[k]),
                None if d_biases is None else d_biases[k].reshape(1, 1, -1),
            ]
        )
        if d_pre is not None:
            terms.append(slope * d_pre)
    u = _sum(terms)
    u = jnp.zeros_like(hs) if u is None else u
    d_state = jnp.zeros_like(state) if _is_zero(d_state) else d_state

    # The linearised recurrence d h_t = a_t d h_{t-1} + u_t, elementwise; JAX transposes
    # it for `jax.grad` into a reverse scan of the same form.
    def tangent_body(d_h: Array, inputs: tuple) -> tuple[Array, Array]:
        a_t, u_t, valid_t = inputs
        d_h = a_t * d_h + u_t
        return d_h, d_h if valid_t is None else jnp.where(valid_t[:, None], d_h, 0)

    d_final, d_hs = jax.lax.scan(
        tangent_body, d_state, (a, u, valid), reverse=reverse, unroll=unroll
    )
    if batch_major:
        hs, d_hs = jnp.swapaxes(hs, 0, 1), jnp.swapaxes(d_hs, 0, 1)
    return (final, hs), (d_final, d_hs)


_gated.defjvp(_gated_jvp, symbolic_zeros=True)


def gated_unroll(
    kernel: GateKernel,
    params: Any,
    xs: Array,
    state: Array,
    valid: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
    batch_major: bool = False,
) -> tuple[Array, Array]:
    """minGRU or minLSTM over a time-major sequence in one loop, with a written derivative.

    The CPU path of these cells. There, the recurrence itself (a multiply-add per
    element and step) costs little; the time goes into passes over `(T, N, G)` arrays
    around it, each written to fresh memory: the projections, the gates, `a` and `b`,
    and what autodiff saves of them. Here the forward pass is one loop whose steps
    compute their gates from their own inputs and save the outputs and the factors of
    their linearisation (`GateKernel`). The derivative is a `jax.custom_jvp` whose
    tangent is the elementwise recurrence `d h_t = a_t d h_{t-1} + u_t`; JAX transposes
    it for `jax.grad` (a reverse scan, then one fused reduction per weight), and
    `jax.jvp` and second derivatives work as well.

    Args:
      kernel: `MIN_GRU_KERNEL` or `MIN_LSTM_KERNEL`.
      params: the cell's parameters (`w_ih (I, G)`, `b (G,)`).
      xs: inputs `(T, N, I)`.
      state: `h (N, H)`.
      valid: optional `(T, N)` booleans, the padding rule of `rnnjax.unroll`.
      reverse: run from the last step to the first.
      unroll: steps per loop iteration, as in `lax.scan`.
      batch_major: return `hs` as `(N, T, H)`.

    Returns:
      `(final_state, hs)`, equal to scanning the cell's `step` up to rounding.
    """
    return _gated(kernel, params, xs, state, valid, reverse, unroll, batch_major)
