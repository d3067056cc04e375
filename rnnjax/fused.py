"""The fast paths of the built-in cells: whole-sequence implementations for `Cell.sequence`.

`rnnjax.cells` holds each cell as its readable equations (`cell.step`). This module
runs the same equations over a whole sequence the way cuDNN does, which on a CPU is
where the time goes, and hands the result to a cell as its `sequence` (the public
constructors `rnnjax.rnn`, `rnnjax.lstm` and `rnnjax.gru` attach them; see
`rnnjax.zoo`):

1. the input projection of every step, `xs @ w_ih`, is one matmul before the
   loop for inputs wider than `IN_LOOP_INPUT_MAX` features, so the loop body
   holds a single matmul (`h @ w_hh`), the bias and the gate nonlinearities;
   narrower inputs are projected inside the loop, which spares a `(T, N, G)`
   buffer that costs more to write than the small per-step product;
2. the derivative is written by hand as a `jax.custom_jvp` over the whole
   sequence: the forward scan saves, per step, the factors the linearised step
   multiplies by, and a second scan runs the linearised recurrence. The
   tangents that the weights contribute, `h_prev @ d_w_hh` and `xs @ d_w_ih`,
   are one matmul each over all `T * N` rows, outside the loop. JAX transposes
   this linear scan for reverse mode, so `jax.grad` gets the cuDNN-style
   backward pass (a reverse scan with one matmul per step, then the weight
   gradients `h_prev^T @ d_gates` and `xs^T @ d_gates` as one matmul each)
   while `jax.jvp`, `jax.jacfwd` and Hessians work as well;
3. without differentiation (inference) the sequence runs the kernel's forward
   equations in a loop that saves nothing and writes batch-major outputs in
   that layout as it goes (`kernel_values`, `scan_outputs`).

Beside the kernels (`kernel_sequence`) sits a tuned scan of a cell's step
(`scan_sequence`): the same `lax.scan` as the reference path, with several steps per
loop iteration and a step written for speed (`recurrent_product`, and the GRU's
`I = 1` form, `gru_tuned_step`). The GRU runs on it by default: whether its kernel
wins depends on the shapes and on the program around it (the performance page of
the documentation has the measurements behind each choice).

Every path here equals `cell.step` scanned with autodiff up to floating-point
rounding (tested in float64: outputs, `grad`, `jvp`, second derivatives, padded,
reversed, both layouts).

Shapes inside this module are time-major and flat: `xs (T, N, I)`, states
`(N, H)`, `G` the width of all gate blocks (`H`, `4H` or `3H`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from rnnjax.cells import _with_bias

Array = jax.Array

IN_LOOP_INPUT_MAX = 32
"""The widest input (`I`) that the differentiated fused loop projects step by step.

Projected before the loop, the inputs become a `(T, N, G)` array that every call
writes into fresh memory, and over which the loop then writes its gate-wide
residuals (`_forward_loop`); projected inside it, each step multiplies
`(N, I) x (I, G)` and the loop stacks those residuals in a `(T, N, G)` array of its
own. For narrow inputs the per-step product was the faster of the two on a CPU, for
wide ones the matmul before the loop (see the performance page of the docs).
"""


class Kernel(NamedTuple):
    """The per-step equations of one cell type, forward and linearised.

    Attributes:
      forward: `forward(state, xw, hw) -> (state, h, residual)`, where
        `xw (N, G)` is the step's input projection `x @ w_ih + b` and `hw (N, G)`
        its recurrent projection `h @ w_hh` (plus `recurrent_bias(params)`);
        `residual`, a tuple, holds what the linearised step multiplies by, its
        first element `(N, G)` wide like `xw` (the differentiated loop may write it
        over the step's input projection, see `_forward_loop`).
      tangent: `tangent(residual, d_state, d_xw, d_hw) -> (d_state, d_h)`: the
        step linearised where `forward` evaluated it, a linear function of the
        tangents of the state it read, of `xw` and of `hw`.
      hidden: `hidden(state) -> h`, the part of the state that meets `w_hh`.
      recurrent_bias: `recurrent_bias(params) -> (G,)`, a bias inside the
        recurrent projection (the GRU's `b_hn`, which its reset gate
        multiplies), linear in `params`; None for cells without one.
    """

    forward: Callable[..., tuple[Any, Array, Any]]
    tangent: Callable[..., tuple[Any, Array]]
    hidden: Callable[[Any], Array]
    recurrent_bias: Callable[[Any], Array] | None = None


def _identity(state: Any) -> Any:
    return state


# -- vanilla RNN -------------------------------------------------------------------------

_ACTIVATION_SLOPES: dict[str, Callable[[Array], Array]] = {
    # d act(pre) / d pre, written in terms of the output h = act(pre)
    "tanh": lambda h: 1 - h * h,
    "relu": lambda h: (h > 0).astype(h.dtype),
}
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def rnn_kernel(activation: str) -> Kernel:
    """The kernel of `rnnjax.rnn(H, activation)` for `activation` in {"tanh", "relu"}."""
    act, slope = _ACTIVATIONS[activation], _ACTIVATION_SLOPES[activation]

    def forward(h: Array, xw: Array, hw: Array) -> tuple[Array, Array, Array]:
        h = act(xw + hw)
        return h, h, (slope(h),)

    def tangent(residual: tuple, d_h_prev: Array, d_xw: Array, d_hw: Array) -> tuple[Array, Array]:
        (slope_h,) = residual
        d_h = slope_h * (d_xw + d_hw)
        return d_h, d_h

    return Kernel(forward, tangent, _identity)


# -- LSTM ------------------------------------------------------------------------------


def _g_block_doubled(hidden: int, dtype: Any) -> Array:
    """`(4H,)`: 2 on the g block, 1 on the i, f and o blocks."""
    return jnp.concatenate(
        [jnp.ones(2 * hidden, dtype), jnp.full(hidden, 2, dtype), jnp.ones(hidden, dtype)]
    )


def _lstm_forward(state: Any, xw: Array, hw: Array) -> tuple[Any, Array, tuple]:
    hidden = state.h.shape[-1]
    pre = xw + hw
    # One sigmoid over all four blocks, then slices: XLA's CPU backend runs one wide
    # elementwise loop faster than four narrow ones. The g block's tanh comes from the
    # same sigmoid, tanh(x) = 2 sigmoid(2x) - 1, which spares a second pass over all
    # four blocks.
    sig = jax.nn.sigmoid(pre * _g_block_doubled(hidden, pre.dtype)[None, :])
    i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
    g = 2 * sig[:, 2 * hidden : 3 * hidden] - 1
    c = f * state.c + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    # The linearised step: d_pre * [f_i, f_f, f_g, f_o] gives the four blocks' parts,
    # d_c = f d_c_prev + (sum of the first three), d_h = (the fourth) + d_c * o (1 - tanh(c)^2).
    factors = jnp.concatenate(
        [g * i * (1 - i), state.c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], axis=-1
    )
    residual = (factors, o * (1 - tanh_c * tanh_c), f)
    return type(state)(h, c), h, residual


def _lstm_tangent(residual: tuple, d_state: Any, d_xw: Array, d_hw: Array) -> tuple[Any, Array]:
    factors, d_c_from_h, f = residual
    # jnp.split, not slices: its transpose (the backward pass) is one concatenation.
    d_i, d_f, d_g, d_o = jnp.split((d_xw + d_hw) * factors, 4, axis=-1)
    d_c = f * d_state.c + d_i + d_f + d_g
    d_h = d_o + d_c_from_h * d_c
    return type(d_state)(d_h, d_c), d_h


LSTM_KERNEL = Kernel(_lstm_forward, _lstm_tangent, lambda state: state.h)


# -- GRU -------------------------------------------------------------------------------


def _gru_forward(h: Array, xw: Array, hw: Array) -> tuple[Array, Array, tuple]:
    hidden = h.shape[-1]
    rz = jax.nn.sigmoid(xw[:, : 2 * hidden] + hw[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    h_n = hw[:, 2 * hidden :]  # h @ w_hn + b_hn
    n = jnp.tanh(xw[:, 2 * hidden :] + r * h_n)
    new_h = (1 - z) * n + z * h
    # The linearised step is d_xw and d_hw times factors known now:
    # d_h = sum of blocks(d_xw * [f_r, f_z, f_n] + d_hw * [f_r, f_z, f_n r]) + z d_h_prev.
    f_n = (1 - z) * (1 - n * n)
    f_r = f_n * h_n * r * (1 - r)
    f_z = (h - n) * z * (1 - z)
    residual = (
        jnp.concatenate([f_r, f_z, f_n], axis=-1),
        jnp.concatenate([f_r, f_z, f_n * r], axis=-1),
        z,
    )
    return new_h, new_h, residual


def _gru_tangent(residual: tuple, d_h_prev: Array, d_xw: Array, d_hw: Array) -> tuple[Array, Array]:
    x_factors, h_factors, z = residual
    d_r, d_z, d_n = jnp.split(d_xw * x_factors + d_hw * h_factors, 3, axis=-1)
    d_h = d_r + d_z + d_n + z * d_h_prev
    return d_h, d_h


def _gru_recurrent_bias(params: Any) -> Array:
    return jnp.concatenate([jnp.zeros(2 * params.b_hn.shape[0], params.b_hn.dtype), params.b_hn])


GRU_KERNEL = Kernel(_gru_forward, _gru_tangent, _identity, _gru_recurrent_bias)


# -- the sequence ----------------------------------------------------------------------


def masked_step(valid: Array | None, new: Any, old: Any, outputs: Any) -> tuple[Any, Any]:
    """One step of a right-padded batch: where `valid (N,)` is False (past a sequence's
    length) the state stays `old` and the `outputs` are zeros; `valid=None` keeps all.

    The one rule for padding, shared by both paths of `unroll` and by the fused
    linearised scan (where the "state" is the state's tangent).
    """
    if valid is None:
        return new, outputs
    keep = valid[:, None]
    state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
    return state, jax.tree.map(lambda a: jnp.where(keep, a, 0), outputs)


def scan_outputs(
    step_fn: Callable[[Any, Array, Array | None], tuple[Any, Array]],
    state: Any,
    xs: Array,
    valid: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool = False,
) -> tuple[Any, Array]:
    """`step_fn(state, x_t, valid_t) -> (state, h_t)` over the leading axis of `xs (T, N, I)`.

    Returns `(final_state, hs)`, with `hs (T, N, H)`, or `(N, T, H)` when `batch_major`.
    Batch-major outputs are written step by step into an `(N, T, H)` buffer that the
    loop carries (`h_t` into column `t`), so no transpose of the whole sequence
    follows the loop, which on a CPU is a copy of every output into fresh memory. The
    values are the same either way; only where they are stored changes.
    """
    if not batch_major:

        def body(carry: Any, step_inputs: tuple) -> tuple[Any, Array]:
            return step_fn(carry, *step_inputs)

        return jax.lax.scan(body, state, (xs, valid), reverse=reverse, unroll=unroll)

    num_steps = xs.shape[0]
    first_valid = None if valid is None else valid[0]
    h_type = jax.eval_shape(lambda s, x, v: step_fn(s, x, v)[1], state, xs[0], first_valid)
    # zeros_like keeps the state's sharding type inside `jax.shard_map` (varying over
    # the devices), as the loop's carry must.
    buffer = jnp.zeros_like(
        jax.tree.leaves(state)[0],
        dtype=h_type.dtype,
        shape=(h_type.shape[0], num_steps, *h_type.shape[1:]),
    )

    def buffer_body(carry: tuple, step_inputs: tuple) -> tuple[tuple, None]:
        state, buffer = carry
        x_t, valid_t, t = step_inputs
        state, h = step_fn(state, x_t, valid_t)
        buffer = jax.lax.dynamic_update_slice_in_dim(buffer, h[:, None], t, axis=1)
        return (state, buffer), None

    (final, hs), _ = jax.lax.scan(
        buffer_body,
        (state, buffer),
        (xs, valid, jnp.arange(num_steps)),
        reverse=reverse,
        unroll=unroll,
    )
    return final, hs


def scan_step(
    step: Callable,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool = False,
) -> tuple[Any, Array]:
    """A cell's `step` in a `lax.scan`: `xs (T, N, I)` -> `(final_state, hs (T, N, H))`.

    The loop of the reference path of `rnnjax.unroll` (JAX differentiates it), of
    `scan_sequence`, and of a kernel's values when it takes them from a step
    (`kernel_sequence(..., values_step=...)`); `batch_major` as in `scan_outputs`. The
    state keeps its dtype from step to step, as `lax.scan` requires of its carry.
    """

    def step_fn(carry: Any, x: Array, valid_t: Array | None) -> tuple[Any, Array]:
        new, h = step(params, carry, x)
        new = jax.tree.map(lambda a, b: a.astype(b.dtype), new, carry)
        return masked_step(valid_t, new, carry, h)

    return scan_outputs(
        step_fn, state, xs, valid, reverse=reverse, unroll=unroll, batch_major=batch_major
    )


def kernel_values(
    kernel: Kernel,
    step: Callable | None,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool = False,
) -> tuple[Any, Array]:
    """The sequence's values only, `(final_state, hs)`, for `xs (T, N, I)`.

    What the fused path computes when nothing differentiates: the kernel's
    `forward`, or `step` when one is given, in a loop that saves nothing for a
    derivative (XLA drops the residuals `forward` returns). Each step projects its
    own input (`x_t @ w_ih + b`, inside the loop: inference has no backward pass to
    share a `(T, N, G)` projection buffer with). `hs` is `(T, N, H)`, or `(N, T, H)`
    when `batch_major` (`scan_outputs`). Equal to `cell.step` in a loop up to float
    rounding.
    """
    options = {"reverse": reverse, "unroll": unroll, "batch_major": batch_major}
    if step is not None:
        return scan_step(step, params, xs, state, valid, **options)
    bias = params.b[None, :]

    def step_fn(carry: Any, x: Array, valid_t: Array | None) -> tuple[Any, Array]:
        new, h, _ = _kernel_step(kernel, params, carry, x @ params.w_ih + bias)
        new = jax.tree.map(lambda a, b: a.astype(b.dtype), new, carry)
        return masked_step(valid_t, new, carry, h)

    return scan_outputs(step_fn, state, xs, valid, **options)


def _apply_to_rows(fn: Callable[[Array], Array], xs: Array) -> Array:
    """`fn` on the `(T * N, K)` matrix of a `(T, N, K)` array: XLA's CPU backend runs a
    plain 2-D matmul faster than the same product written over three axes."""
    rows = fn(xs.reshape(-1, xs.shape[-1]))
    return rows.reshape(*xs.shape[:-1], rows.shape[-1])


def _is_zero(tangent: Any) -> bool:
    return isinstance(tangent, SymbolicZero)


def _sum(terms: list) -> Array | None:
    """The sum of the terms that are not None (tangents known to be zero), or None."""
    terms = [t for t in terms if t is not None]
    return functools.reduce(jnp.add, terms) if terms else None


def times_transposed(x: Array, w_t: Array) -> Array:
    """`x @ w_t.T` for `x (..., K)` and `w_t (N, K)`, written as a contraction with
    `w_t`'s second axis, so that its transpose (the backward pass, `d @ w_t`) multiplies
    by `w_t` as it is. Given `w_t = w.T`, made once before a loop, a loop of `x @ w`
    differentiates into a loop of plain matmuls; against `w` itself, XLA's CPU matmul
    transposes `w` at every step."""
    return jax.lax.dot_general(x, w_t, (((x.ndim - 1,), (1,)), ((), ())))


def _recurrent_projection(kernel: Kernel, params: Any, h: Array) -> Array:
    hw = h @ params.w_hh
    if kernel.recurrent_bias is None:
        return hw
    return hw + kernel.recurrent_bias(params)[None, :]


def _kernel_step(kernel: Kernel, params: Any, carry: Any, xw: Array) -> tuple[Any, Array, Any]:
    """`kernel.forward` at one step, given the step's input projection `xw (N, G)`."""
    hw = _recurrent_projection(kernel, params, kernel.hidden(carry))
    return kernel.forward(carry, xw, hw)


def _forward_loop(
    kernel: Kernel,
    params: Any,
    xs: Array,
    projections: Array | None,
    state: Any,
    valid: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
) -> tuple[Any, Array, Array | None, tuple]:
    """The differentiated forward pass: `(final_state, hs, h_prev, residuals)`.

    `projections (T, N, G)` is `xs @ w_ih` made before the loop, or None to project
    each step's `xs (T, N, I)` inside it. `residuals` stacks every step's
    `kernel.forward` residual (`(T, ...)` each), and `h_prev (T, N, H)` the hidden
    state each step read, saved only for a padded batch (`valid` given): without
    padding it is the previous step's output, already in `hs`, and is None here.

    With `projections`, the loop carries that buffer and writes each step's first,
    gate-wide residual over the row it has just read, so the residual that fills most
    memory takes none of its own: no `(T, N, G)` buffer to zero, page-fault in and
    stream out to memory while the loop runs, its rows written while still in cache.
    """
    bias = params.b[None, :]
    save_h_prev = valid is not None

    def body(carry: tuple, step_inputs: tuple) -> tuple[tuple, tuple]:
        state, projections = carry
        x_t, valid_t, t = step_inputs
        if projections is None:
            xw_t = x_t @ params.w_ih
        else:
            xw_t = jax.lax.dynamic_index_in_dim(projections, t, keepdims=False)
        new, h, (gate_factors, *rest) = _kernel_step(kernel, params, state, xw_t + bias)
        new, h = masked_step(valid_t, new, state, h)
        h_prev = kernel.hidden(state) if save_h_prev else None
        if projections is None:
            return (new, None), (h, h_prev, gate_factors, rest)
        projections = jax.lax.dynamic_update_index_in_dim(projections, gate_factors, t, 0)
        return (new, projections), (h, h_prev, None, rest)

    # Each step reads its own input, or its row of the projections by its index.
    step_xs, steps = (xs, None) if projections is None else (None, jnp.arange(xs.shape[0]))
    (final, projections), (hs, h_prev, gate_factors, rest) = jax.lax.scan(
        body,
        (state, projections),
        (step_xs, valid, steps),
        reverse=reverse,
        unroll=unroll,
    )
    gate_factors = projections if gate_factors is None else gate_factors
    return final, hs, h_prev, (gate_factors, *rest)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 6, 7, 8))
def _fused(
    kernel: Kernel,
    step: Callable | None,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool,
) -> tuple[Any, Array]:
    # Values only (nothing differentiates): the forward equations, saving nothing.
    return kernel_values(
        kernel,
        step,
        params,
        xs,
        state,
        valid,
        reverse=reverse,
        unroll=unroll,
        batch_major=batch_major,
    )


def _fused_jvp(
    kernel: Kernel,
    step: Callable | None,
    reverse: bool,
    unroll: int | bool,
    batch_major: bool,
    primals: tuple,
    tangents: tuple,
) -> tuple[tuple[Any, Array], tuple[Any, Array]]:
    params, xs, state, valid = primals
    d_params, d_xs, d_state, _ = tangents
    gates_shape = (*xs.shape[:-1], params.w_hh.shape[-1])  # (T, N, G)

    # The forward pass, saving each step's residual. Narrow inputs are projected inside
    # the loop, wide ones by one matmul before it: a (T, N, G) projection buffer is
    # written, and page-faulted in, at every call, which costs more than the per-step
    # product when I is small (see IN_LOOP_INPUT_MAX). The bias joins inside the loop,
    # where it fuses into the step's elementwise work.
    project_in_loop = xs.shape[-1] <= IN_LOOP_INPUT_MAX
    # Projected before the loop, the projections are the loop's carry, and each step
    # overwrites the row it has just read with its gate-wide residual (`_forward_loop`).
    projections = None if project_in_loop else _apply_to_rows(lambda rows: rows @ params.w_ih, xs)
    final, hs, h_prev, residuals = _forward_loop(
        kernel, params, xs, projections, state, valid, reverse=reverse, unroll=unroll
    )
    if h_prev is None:
        h_0 = kernel.hidden(state)[None]
        h_prev = jnp.concatenate([hs[1:], h_0] if reverse else [h_0, hs[:-1]])

    # Tangents of xw and of the weights' part of hw, for every step at once.
    def rows_times(a: Array, w: Any) -> Array | None:
        return None if _is_zero(w) else _apply_to_rows(lambda rows: rows @ w, a)

    d_xw = _sum(
        [
            None if _is_zero(d_xs) else _apply_to_rows(lambda rows: rows @ params.w_ih, d_xs),
            rows_times(xs, d_params.w_ih),
            None if _is_zero(d_params.b) else d_params.b[None, None, :],
        ]
    )
    d_hw_weights = rows_times(h_prev, d_params.w_hh)
    if kernel.recurrent_bias is not None and not _is_zero(d_params.b_hn):
        d_hw_weights = _sum([d_hw_weights, kernel.recurrent_bias(d_params)[None, None, :]])
    if kernel.recurrent_bias is None:
        # The step reads only xw + hw: add the two tangents here, so the loop (and
        # its transpose, the backward pass) carries one (T, N, G) array, not two.
        d_xw, d_hw_weights = _sum([d_xw, d_hw_weights]), None
    d_xw = jnp.zeros(gates_shape, xs.dtype) if d_xw is None else jnp.broadcast_to(d_xw, gates_shape)
    if d_hw_weights is not None:
        d_hw_weights = jnp.broadcast_to(d_hw_weights, gates_shape)
    d_state = jax.tree.map(
        lambda t, s: jnp.zeros_like(s) if _is_zero(t) else t,
        d_state,
        state,
        is_leaf=_is_zero,
    )

    # The linearised recurrence: one matmul per step, d_h_prev @ w_hh, written against a
    # transposed copy made once here, so that the backward pass multiplies by that copy
    # as a plain (G, H) matrix.
    w_hh_t = params.w_hh.T

    def tangent_body(d_carry: Any, step_inputs: tuple) -> tuple[Any, Array]:
        residual, d_xw_t, d_hw_t, valid_t = step_inputs
        d_hw = times_transposed(kernel.hidden(d_carry), w_hh_t)
        if d_hw_t is not None:
            d_hw = d_hw + d_hw_t
        new, d_h = kernel.tangent(residual, d_carry, d_xw_t, d_hw)
        return masked_step(valid_t, new, d_carry, d_h)

    d_final, d_hs = jax.lax.scan(
        tangent_body,
        d_state,
        (residuals, d_xw, d_hw_weights, valid),
        reverse=reverse,
        unroll=unroll,
    )
    if batch_major:  # (T, N, H) -> (N, T, H), for values and tangents alike
        hs, d_hs = jnp.swapaxes(hs, 0, 1), jnp.swapaxes(d_hs, 0, 1)
    return (final, hs), (d_final, d_hs)


_fused.defjvp(_fused_jvp, symbolic_zeros=True)


def fused_unroll(
    kernel: Kernel,
    values_step: Callable | None,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
    batch_major: bool = False,
) -> tuple[Any, Array]:
    """Runs a cell over a time-major sequence, differentiated through `kernel`.

    Args:
      kernel: the cell type's `Kernel` (`RNN_KERNELS`, `LSTM_KERNEL`, `GRU_KERNEL`).
      values_step: a step function that computes the values when nothing
        differentiates, or None to run `kernel.forward` then.
      params: the cell's parameters.
      xs: inputs `(T, N, I)` in the compute dtype.
      state: initial state, arrays `(N, H)` in the compute dtype.
      valid: optional boolean `(T, N)`: where False the step leaves the state
        unchanged and outputs zeros (padding past a sequence's length).
      reverse: run from the last step to the first.
      unroll: steps per loop iteration, as in `lax.scan`.
      batch_major: return `hs` as `(N, T, H)` instead of `(T, N, H)`; without
        differentiation the loop then writes them in that layout itself
        (`scan_outputs`), with it they are transposed after the loop.

    Returns:
      `(final_state, hs)` with `hs` of shape `(T, N, H)`, or `(N, T, H)`.
    """
    return _fused(kernel, values_step, params, xs, state, valid, reverse, unroll, batch_major)


# -- tuned steps ---------------------------------------------------------------------


@jax.custom_jvp
def recurrent_product(h: Array, w_hh: Array) -> Array:
    """`h @ w_hh` for `h (*batch, H)` and `w_hh (H, G)`, with a faster derivative in loops.

    The value is exactly `h @ w_hh`, and so are the derivatives, up to float rounding.
    Only how the backward pass multiplies changes: autodiff of `h @ w_hh` gives
    `d_h = d_out @ w_hh.T`, which XLA's CPU backend runs as a matmul against a
    transposed operand and transposes `w_hh` again at every step of a `lax.scan`;
    here the derivative is written against `w_hh.T`, which JAX computes once, outside
    the loop, so that every step of the backward pass is a plain matmul
    (`times_transposed`). A step of your own can use it for its recurrent matmul.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.fused import recurrent_product
      >>> recurrent_product(jnp.ones((2, 3)), jnp.ones((3, 4))).shape
      (2, 4)
    """
    return h @ w_hh


def _recurrent_product_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    h, w_hh = primals
    d_h, d_w_hh = tangents
    out = h @ w_hh
    terms = []
    if not _is_zero(d_h):
        terms.append(times_transposed(d_h, w_hh.T))  # d_h @ w_hh
    if not _is_zero(d_w_hh):
        terms.append(h @ d_w_hh)
    if not terms:
        return out, jnp.zeros_like(out)
    return out, _sum(terms)


recurrent_product.defjvp(_recurrent_product_jvp, symbolic_zeros=True)


def _gru_equations(params: Any, state: Array, x: Array) -> tuple[Array, Array]:
    """`rnnjax.cells.gru`'s step with `recurrent_product` for its recurrent matmul."""
    input_part = _with_bias(x @ params.w_ih, params.b)
    recurrent_part = recurrent_product(state, params.w_hh)
    x_r, x_z, x_n = jnp.split(input_part, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(recurrent_part, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * _with_bias(h_n, params.b_hn))
    h = (1 - z) * n + z * state
    return h, h


def _gru_scalar_input(params: Any, state: Array, x: Array) -> tuple[Array, Array]:
    """The GRU's step with one matmul per gate block instead of slices of one.

    With one input feature, XLA's CPU compiler turns `x @ w_ih` (a `(N, 1) x (1, 3H)`
    product) into a broadcast multiply fused into the gate nonlinearities, which then
    compile to slow code; written block by block it compiles to fast code.
    """
    hidden = state.shape[-1]

    def block(a: Array, k: int) -> Array:
        return a[..., k * hidden : (k + 1) * hidden]

    x_r, x_z, x_n = (_with_bias(x @ block(params.w_ih, k), block(params.b, k)) for k in range(3))
    h_r, h_z, h_n = (state @ block(params.w_hh, k) for k in range(3))
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * _with_bias(h_n, params.b_hn))
    h = (1 - z) * n + z * state
    return h, h


@jax.custom_jvp
def gru_tuned_step(params: Any, state: Array, x: Array) -> tuple[Array, Array]:
    """The GRU's step for the fast path: `rnnjax.cells.gru`'s equations, tuned for a CPU.

    Values come from `_gru_scalar_input` when `I = 1` and from the equations otherwise;
    every derivative (`jax.grad`, `jax.vjp`, `jax.jvp`) is that of the equations with
    `recurrent_product`, so training differentiates the readable equations. Equal to
    `rnnjax.cells.gru`'s step up to float rounding.
    """
    if x.shape[-1] == 1:
        return _gru_scalar_input(params, state, x)
    return _gru_equations(params, state, x)


gru_tuned_step.defjvp(lambda primals, tangents: jax.jvp(_gru_equations, primals, tangents))


# -- whole-sequence implementations (`Cell.sequence`) ---------------------------------------


def _steps_per_iteration(unroll: int | bool | None, preferred: int, num_steps: int) -> int | bool:
    """The caller's `unroll`, or `preferred` where it divides the steps (a remainder step
    made the loop slower), else 1."""
    if unroll is not None:
        return unroll
    return preferred if num_steps % preferred == 0 else 1


def kernel_sequence(
    kernel: Kernel, *, values_step: Callable | None = None, steps_per_iteration: int = 1
) -> Callable[..., tuple[Any, Array]]:
    """A `Cell.sequence` that runs `kernel`: `fused_unroll` with the protocol's signature.

    Args:
      kernel: the cell type's `Kernel`.
      values_step: a step that computes the values when nothing differentiates (see
        `fused_unroll`); None runs the kernel's forward equations.
      steps_per_iteration: steps per loop iteration when the caller leaves `unroll`
        to the implementation (and the sequence length divides by it).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> from rnnjax import fused
      >>> cell = rnnjax.cells.gru(4)._replace(sequence=fused.kernel_sequence(fused.GRU_KERNEL))
      >>> params = cell.init(jax.random.key(0), 2)
      >>> rnnjax.unroll(cell, params, jnp.ones((3, 5, 2)), fused=True)[0].shape
      (3, 5, 4)
    """
    steps_per_iteration = int(steps_per_iteration)

    def sequence(
        params: Any,
        xs: Array,
        state: Any,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[Any, Array]:
        steps = _steps_per_iteration(unroll, steps_per_iteration, xs.shape[0])
        return fused_unroll(
            kernel,
            values_step,
            params,
            xs,
            state,
            valid,
            reverse=reverse,
            unroll=steps,
            batch_major=batch_major,
        )

    return sequence


def scan_sequence(step: Callable, *, steps_per_iteration: int = 1) -> Callable[..., tuple]:
    """A `Cell.sequence` that scans `step` (a tuned form of the cell's own step).

    The same loop as the reference path (`scan_step`), time-major, transposed after
    the loop when the caller asks for batch-major outputs; only the step function and
    the steps per loop iteration differ.
    """
    steps_per_iteration = int(steps_per_iteration)

    def sequence(
        params: Any,
        xs: Array,
        state: Any,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[Any, Array]:
        steps = _steps_per_iteration(unroll, steps_per_iteration, xs.shape[0])
        final, hs = scan_step(step, params, xs, state, valid, reverse=reverse, unroll=steps)
        return final, jnp.swapaxes(hs, 0, 1) if batch_major else hs

    return sequence


RNN_KERNELS = {name: rnn_kernel(name) for name in _ACTIVATIONS}
"""The RNN's kernel for each named activation, `"tanh"` and `"relu"`."""


def rnn_sequence(activation: str) -> Callable[..., tuple]:
    """The RNN's default fast path: its kernel, two steps per loop iteration."""
    return kernel_sequence(RNN_KERNELS[activation], steps_per_iteration=2)


def lstm_sequence() -> Callable[..., tuple]:
    """The LSTM's default fast path: its kernel, one step per loop iteration."""
    return kernel_sequence(LSTM_KERNEL)


def gru_sequence() -> Callable[..., tuple]:
    """The GRU's default fast path: `gru_tuned_step` scanned two steps per loop iteration.

    `gru_kernel_sequence` is the GRU's fused kernel, an alternative whose speed
    relative to this one depends on the shapes.
    """
    return scan_sequence(gru_tuned_step, steps_per_iteration=2)


def gru_kernel_sequence() -> Callable[..., tuple]:
    """The GRU's fused kernel as a `Cell.sequence`, its values from `gru_tuned_step`.

    Example:
      >>> import rnnjax
      >>> from rnnjax import fused
      >>> cell = rnnjax.gru(8)._replace(sequence=fused.gru_kernel_sequence())
    """
    return kernel_sequence(GRU_KERNEL, values_step=gru_tuned_step, steps_per_iteration=2)
