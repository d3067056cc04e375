"""Fused sequence kernels: the fast path of `rnnjax.unroll` for the built-in cells.

`cells.py` holds each cell as its readable equations (`cell.step`); this module
runs the same equations over a whole sequence the way cuDNN does, which on a
CPU is where the time goes:

1. the input projection of every step, `xs @ w_ih + b`, is one matmul before
   the loop, so the loop body holds a single matmul (`h @ w_hh`) and the gate
   nonlinearities;
2. the backward pass is written by hand (`jax.custom_vjp`): a reverse scan
   computes the gradient of each step's gate pre-activations `(T, N, G)`, and the
   weight gradients are then *one* matmul each over all `T * N` rows,
   `h_prev^T @ d_gates` and `xs^T @ d_gates`, instead of a `(H, G)` accumulation
   in every iteration of the loop; the input gradient `d_gates @ w_ih^T` is one
   matmul too;
3. the forward pass saves only what the backward pass reads (gate activations
   and states), and inference saves nothing.

The kernels are equal to `cell.step` unrolled with autodiff up to floating-point
rounding (tested in float64, outputs and every gradient). A cell has a kernel
when it comes from `rnnjax.rnn` (tanh or relu), `rnnjax.lstm` or `rnnjax.gru`;
`kernel_for` finds it from the cell's `step` function, so a cell you assemble
yourself, or wrap (as variational dropout does), runs on the reference path.
`rnnjax.unroll(..., fused=True)` uses them; they are opt-in because whether they
win depends on the shapes and on the program around them (`benchmarks/speed.py`
and the README's speed section).

Shapes inside this module are time-major and flat: `xs (T, N, I)`, states
`(N, H)`, `G` the width of all gate blocks (`H`, `4H` or `3H`).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class Kernel(NamedTuple):
    """The per-step forward and backward equations of one cell type.

    Attributes:
      forward: `forward(params, state, xw) -> (state, h, residual)`, where
        `xw (N, G)` is the step's input projection `x @ w_ih + b`.
      backward: `backward(params, residual, h_prev, d_state, d_h) ->
        (d_prev_state, d_xw, d_hw)`: `h_prev` is the hidden state the step read,
        `d_state` the cotangent of the state it produced, `d_h` that of its
        output; `d_xw (N, G)` is the cotangent of `xw` and `d_hw (N, G)` that of
        the recurrent projection `h @ w_hh`, or None where the two are equal
        (RNN, LSTM), which saves writing a second `(T, N, G)` array.
      hidden: `hidden(state) -> h`, the part of the state that meets `w_hh`.
      extra_grads: `extra_grads(params, d_hw_sum) -> dict` of cotangents of any
        parameter besides `w_ih`, `w_hh` and `b` (the GRU's `b_hn`), from
        `d_hw` summed over time and batch.
    """

    forward: Callable[..., tuple[Any, Array, Any]]
    backward: Callable[..., tuple[Any, Array, Array]]
    hidden: Callable[[Any], Array]
    extra_grads: Callable[[Any, Array], dict]


_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register(step: Callable, kernel: Kernel) -> None:
    """Declares that `kernel` computes the same thing as the cell function `step`."""
    _KERNELS[step] = kernel


def kernel_for(cell: Any) -> Kernel | None:
    """The fused kernel of `cell`, or None when it has none (use `cell.step`)."""
    try:
        return _KERNELS.get(cell.step)
    except TypeError:  # a step that cannot be weakly referenced has no kernel
        return None


def _no_extra_grads(params: Any, d_hw_sum: Array) -> dict:
    return {}


def _identity(state: Any) -> Any:
    return state


# -- vanilla RNN -------------------------------------------------------------------------

_ACTIVATION_GRADS: dict[str, Callable[[Array, Array], Array]] = {
    # d act(pre) / d pre, written in terms of the output h = act(pre)
    "tanh": lambda h, d_h: d_h * (1 - h * h),
    "relu": lambda h, d_h: jnp.where(h > 0, d_h, 0),
}
_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def rnn_kernel(activation: str) -> Kernel:
    """The kernel of `rnnjax.rnn(H, activation)` for `activation` in {"tanh", "relu"}."""
    act, act_grad = _ACTIVATIONS[activation], _ACTIVATION_GRADS[activation]

    def forward(params: Any, h: Array, xw: Array) -> tuple[Array, Array, Array]:
        h = act(xw + h @ params.w_hh)
        return h, h, h

    def backward(
        params: Any, h: Array, h_prev: Array, d_state: Array, d_h: Array
    ) -> tuple[Array, Array, Array]:
        d_pre = act_grad(h, d_state + d_h)
        return d_pre @ params.w_hh.T, d_pre, None

    return Kernel(forward, backward, _identity, _no_extra_grads)


# -- LSTM ------------------------------------------------------------------------------


def _lstm_forward(params: Any, state: Any, xw: Array) -> tuple[Any, Array, Array]:
    hidden = state.h.shape[-1]
    pre = xw + state.h @ params.w_hh
    # Both nonlinearities on all four blocks, then slices: XLA's CPU backend runs one
    # wide elementwise loop several times faster than four narrow ones (measured).
    sig, tanh = jax.nn.sigmoid(pre), jnp.tanh(pre)
    i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
    g = tanh[:, 2 * hidden : 3 * hidden]
    c = f * state.c + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    # What the backward pass multiplies by, computed here while the values are at hand:
    # d pre = [d_c, d_c, d_c, d_h] * factors, d_c += d_h * o * (1 - tanh(c)^2).
    residual = jnp.concatenate(
        [
            g * i * (1 - i),
            state.c * f * (1 - f),
            i * (1 - g * g),
            tanh_c * o * (1 - o),
            o * (1 - tanh_c * tanh_c),
            f,
        ],
        axis=-1,
    )
    return type(state)(h, c), h, residual


def _lstm_backward(
    params: Any, residual: Array, h_prev: Array, d_state: Any, d_h: Array
) -> tuple[Any, Array, None]:
    hidden = h_prev.shape[-1]
    factors = residual[:, : 4 * hidden]
    d_c_from_h, f = residual[:, 4 * hidden : 5 * hidden], residual[:, 5 * hidden :]
    d_h = d_state.h + d_h
    d_c = d_state.c + d_h * d_c_from_h
    d_pre = jnp.concatenate([d_c, d_c, d_c, d_h], axis=-1) * factors
    d_prev = type(d_state)(d_pre @ params.w_hh.T, d_c * f)
    return d_prev, d_pre, None


LSTM_KERNEL = Kernel(_lstm_forward, _lstm_backward, lambda state: state.h, _no_extra_grads)


# -- GRU -------------------------------------------------------------------------------


def _gru_forward(params: Any, h: Array, xw: Array) -> tuple[Array, Array, Array]:
    hidden = h.shape[-1]
    hw = h @ params.w_hh
    rz = jax.nn.sigmoid(xw[:, : 2 * hidden] + hw[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    h_n = hw[:, 2 * hidden :] + params.b_hn[None, :]
    n = jnp.tanh(xw[:, 2 * hidden :] + r * h_n)
    new_h = (1 - z) * n + z * h
    # Every pre-activation gradient is d_h times a factor known now:
    # d xw = d_h * [f_r, f_z, f_n] and d hw = d_h * [f_r, f_z, f_n * r].
    f_n = (1 - z) * (1 - n * n)
    f_r = f_n * h_n * r * (1 - r)
    f_z = (h - n) * z * (1 - z)
    residual = jnp.concatenate([f_r, f_z, f_n, f_r, f_z, f_n * r, z], axis=-1)
    return new_h, new_h, residual


def _gru_backward(
    params: Any, residual: Array, h_prev: Array, d_state: Array, d_h: Array
) -> tuple[Array, Array, Array]:
    hidden = h_prev.shape[-1]
    d_h = d_state + d_h
    d_h3 = jnp.concatenate([d_h, d_h, d_h], axis=-1)
    d_xw = d_h3 * residual[:, : 3 * hidden]
    d_hw = d_h3 * residual[:, 3 * hidden : 6 * hidden]
    return d_h * residual[:, 6 * hidden :] + d_hw @ params.w_hh.T, d_xw, d_hw


def _gru_extra_grads(params: Any, d_hw_sum: Array) -> dict:
    hidden = params.b_hn.shape[0]
    return {"b_hn": d_hw_sum[2 * hidden :]}


GRU_KERNEL = Kernel(_gru_forward, _gru_backward, _identity, _gru_extra_grads)


# -- the sequence ----------------------------------------------------------------------


def masked_step(valid: Array | None, new: Any, old: Any, outputs: Any) -> tuple[Any, Any]:
    """One step of a right-padded batch: where `valid (N,)` is False (past a sequence's
    length) the state stays `old` and the `outputs` are zeros; `valid=None` keeps all.

    The one rule for padding, shared by both paths of `unroll` and by the fused
    backward pass (where the "state" is the state's cotangent).
    """
    if valid is None:
        return new, outputs
    keep = valid[:, None]
    state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
    return state, jax.tree.map(lambda a: jnp.where(keep, a, 0), outputs)


def _input_projection(params: Any, xs: Array) -> Array:
    """`xs @ w_ih + b` for all steps at once: `(T, N, I) -> (T, N, G)`."""
    return _apply_to_rows(lambda rows: rows @ params.w_ih + params.b[None, :], xs)


def _apply_to_rows(fn: Callable[[Array], Array], xs: Array) -> Array:
    """`fn` on the `(T * N, K)` matrix of a `(T, N, K)` array: XLA's CPU backend runs a
    plain 2-D matmul about twice as fast as the same product written over three axes."""
    rows = fn(xs.reshape(-1, xs.shape[-1]))
    return rows.reshape(*xs.shape[:-1], rows.shape[-1])


def _rows(xs: Array) -> Array:
    return xs.reshape(-1, xs.shape[-1])


def _scan_forward(
    kernel: Kernel,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    reverse: bool,
    unroll: int | bool,
    keep_residuals: bool,
) -> tuple[Any, Array, Any]:
    xw = _input_projection(params, xs)

    def body(carry: Any, step_inputs: tuple) -> tuple[Any, tuple]:
        xw_t, valid_t = step_inputs
        new, h, residual = kernel.forward(params, carry, xw_t)
        new, h = masked_step(valid_t, new, carry, h)
        saved = (kernel.hidden(carry), residual) if keep_residuals else None
        return new, (h, saved)

    final, (hs, saved) = jax.lax.scan(body, state, (xw, valid), reverse=reverse, unroll=unroll)
    return final, hs, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5, 6))
def _fused(
    kernel: Kernel,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    reverse: bool,
    unroll: int | bool,
) -> tuple[Any, Array]:
    final, hs, _ = _scan_forward(kernel, params, xs, state, valid, reverse, unroll, False)
    return final, hs


def _fused_fwd(
    kernel: Kernel,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None,
    reverse: bool,
    unroll: int | bool,
) -> tuple[tuple[Any, Array], tuple]:
    final, hs, (h_prev, residuals) = _scan_forward(
        kernel, params, xs, state, valid, reverse, unroll, True
    )
    return (final, hs), (params, xs, valid, h_prev, residuals)


def _fused_bwd(
    kernel: Kernel, reverse: bool, unroll: int | bool, saved: tuple, cotangents: tuple
) -> tuple:
    params, xs, valid, h_prev, residuals = saved
    d_final, d_hs = cotangents

    def body(d_carry: Any, step_inputs: tuple) -> tuple[Any, tuple[Array, Array | None]]:
        residual, h_prev_t, d_h, valid_t = step_inputs
        d_prev, d_xw, d_hw = kernel.backward(params, residual, h_prev_t, d_carry, d_h)
        return masked_step(valid_t, d_prev, d_carry, (d_xw, d_hw))

    d_state, (d_xw, d_hw) = jax.lax.scan(
        body,
        d_final,
        (residuals, h_prev, d_hs, valid),
        reverse=not reverse,
        unroll=unroll,
    )
    d_hw = d_xw if d_hw is None else d_hw
    grads = params._replace(
        w_ih=_rows(xs).T @ _rows(d_xw),
        w_hh=_rows(h_prev).T @ _rows(d_hw),
        b=jnp.sum(d_xw, axis=(0, 1)),
        **kernel.extra_grads(params, jnp.sum(d_hw, axis=(0, 1))),
    )
    d_xs = _apply_to_rows(lambda rows: rows @ params.w_ih.T, d_xw)
    return grads, d_xs, d_state, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_unroll(
    kernel: Kernel,
    params: Any,
    xs: Array,
    state: Any,
    valid: Array | None = None,
    *,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Array]:
    """Runs `kernel` over a time-major sequence with the hand-written backward pass.

    Args:
      kernel: from `kernel_for(cell)`.
      params: the cell's parameters.
      xs: inputs `(T, N, I)` in the compute dtype.
      state: initial state, arrays `(N, H)` in the compute dtype.
      valid: optional boolean `(T, N)`: where False the step leaves the state
        unchanged and outputs zeros (padding past a sequence's length).
      reverse: run from the last step to the first.
      unroll: steps per loop iteration, as in `lax.scan`.

    Returns:
      `(final_state, hs)` with `hs` of shape `(T, N, H)`.
    """
    return _fused(kernel, params, xs, state, valid, reverse, unroll)
