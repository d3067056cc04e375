"""Recurrent cells: vanilla RNN, LSTM and GRU as pure functions.

The contract, shared by every cell (stated once here, as `stax` does)::

    cell = rnnjax.lstm(hidden_size=128)                  # captures hyper-parameters only
    params = cell.init(key, input_size)                  # NamedTuple of arrays only
    state = cell.initial_state(params, batch_shape=(B,))  # zeros: `(B, H)`, or LSTMState(h, c)
    state, h = cell.step(params, state, x)               # x: `(*batch, I)` -> h: `(*batch, H)`

A constructor returns a `Cell`, a NamedTuple of three pure functions, the way an
optax constructor returns a `GradientTransformation`. Parameters are pytrees of
arrays and nothing else, so `jax.jit`, `jax.grad`, `jax.vmap`, optax and
checkpointing take them as they are.

Weights are stored `(in, out)` and applied as `x @ w`, so any leading batch
dimensions broadcast. Gate blocks are laid side by side along the last axis in
PyTorch's order, so a PyTorch `nn.RNN`/`nn.LSTM`/`nn.GRU` maps onto rnnjax by
transposing its weights and summing its two bias vectors::

    w_ih = weight_ih_l0.T        w_hh = weight_hh_l0.T        b = bias_ih_l0 + bias_hh_l0

with one exception: the GRU keeps the recurrent bias of its candidate block
apart (`b_hn`), because the reset gate multiplies it (see `gru`).

dtype follows the parameters: `init(..., dtype=jnp.float64)` (with
`jax_enable_x64`) or `jnp.bfloat16` give cells that compute in that dtype.
Without a `dtype`, `init` uses JAX's default float (float32, or float64 under
`jax_enable_x64`).

This module holds the equations and nothing else: each cell once, as in its paper.
A cell may also carry a whole-sequence implementation (`Cell.sequence`) that
`rnnjax.unroll` runs in place of scanning `step`; the public constructors
`rnnjax.rnn`, `rnnjax.lstm` and `rnnjax.gru` (`rnnjax.zoo`) attach the fast paths of
`rnnjax.fused` to the equations here. The constructors of this module return cells
without one, which `unroll` scans step by step: the reference path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp

from rnnjax import _checks

Array = jax.Array
Initializer = Callable[..., Array]
Params = Any
State = Any


class Sequence(Protocol):
    """A whole-sequence implementation of a cell: what `Cell.sequence` holds.

    `sequence(params, xs, state, valid, *, reverse, unroll, batch_major)
    -> (final_state, hs)` runs the cell over a time-major, flat batch:

    - `xs`: `(T, N, I)` inputs in the compute dtype;
    - `state`: the initial state, a pytree of `(N, ...)` arrays;
    - `valid`: `(T, N)` booleans or None; where False (past a sequence's length)
      the step must leave the state unchanged and output zeros;
    - `reverse`: run from the last step to the first;
    - `unroll`: steps per loop iteration as in `lax.scan`, or None for the
      implementation's own choice;
    - `batch_major`: return `hs` as `(N, T, H)` instead of `(T, N, H)`.

    It must equal scanning `Cell.step` over `xs` (with the padding rule above), in
    values and in every derivative, up to floating-point rounding: `rnnjax.unroll`
    treats the two as interchangeable.
    """

    def __call__(
        self,
        params: Params,
        xs: Array,
        state: State,
        valid: Array | None,
        *,
        reverse: bool,
        unroll: int | bool | None,
        batch_major: bool,
    ) -> tuple[State, Array]: ...


class Cell(NamedTuple):
    """A recurrent cell: three pure functions that close over hyper-parameters.

    Attributes:
      init: `init(key, input_size, dtype=None) -> params`.
      initial_state: `initial_state(params, batch_shape=()) -> state`, all zeros; a
        pytree of `(*batch_shape, ...)` arrays.
      step: `step(params, state, x) -> (state, h)` for `x` of shape `(*batch, I)`
        and `h` of shape `(*batch, H)`.
      sequence: optional whole-sequence implementation (a `Sequence`) that
        `rnnjax.unroll` runs instead of scanning `step`, for example a fused kernel or
        a parallel scan; None (the default) for cells that only have `step`. It must
        equal scanning `step`. A function that wraps `step` (changing what a step
        computes) must drop it, or replace it with one that computes the new step.
    """

    init: Callable[..., Params]
    initial_state: Callable[..., State]
    step: Callable[[Params, State, Array], tuple[State, Array]]
    sequence: Sequence | None = None


class RNNParams(NamedTuple):
    """Parameters of a vanilla RNN cell: `h' = act(x @ w_ih + h @ w_hh + b)`.

    Attributes:
      w_ih: input weights, `(I, H)`.
      w_hh: recurrent weights, `(H, H)`.
      b: bias, `(H,)` (PyTorch's `bias_ih + bias_hh`).
    """

    w_ih: Array
    w_hh: Array
    b: Array


class LSTMParams(NamedTuple):
    """Parameters of an LSTM cell; gate blocks in the order i, f, g, o.

    Attributes:
      w_ih: input weights, `(I, 4H)`.
      w_hh: recurrent weights, `(H, 4H)`.
      b: bias, `(4H,)` (PyTorch's `bias_ih + bias_hh`).
    """

    w_ih: Array
    w_hh: Array
    b: Array


class LSTMState(NamedTuple):
    """State of an LSTM: hidden `h` and cell `c`, each `(*batch, H)`."""

    h: Array
    c: Array


class GRUParams(NamedTuple):
    """Parameters of a GRU cell; gate blocks in the order r, z, n.

    Attributes:
      w_ih: input weights, `(I, 3H)`.
      w_hh: recurrent weights, `(H, 3H)`.
      b: bias, `(3H,)`: PyTorch's `bias_ih + bias_hh` for r and z, and only
        `bias_ih` for n.
      b_hn: recurrent bias of the candidate block, `(H,)` (PyTorch's
        `bias_hh[2H:]`), kept apart because the reset gate multiplies it.
    """

    w_ih: Array
    w_hh: Array
    b: Array
    b_hn: Array


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}

Activation = Union[str, Callable[[Array], Array]]


def _resolve_activation(activation: Activation) -> Callable[[Array], Array]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}"
            )
        return ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(
            f"activation must be a name in {sorted(ACTIVATIONS)} or a callable, "
            f"got {type(activation).__name__}"
        )
    return activation


def _check_initializer(name: str, initializer: Any) -> Initializer:
    if not callable(initializer):
        raise TypeError(
            f"{name} must be an initializer `(key, shape, dtype) -> array` such as "
            f"jax.nn.initializers.zeros, got {type(initializer).__name__}"
        )
    return initializer


def _init_weights(
    key: Array,
    input_size: int,
    hidden_size: int,
    num_blocks: int,
    dtype: Any,
    input_init: Initializer,
    recurrent_init: Initializer,
    bias_init: Initializer,
) -> tuple[Array, Array, Array]:
    """Draws `w_ih (I, nH)`, `w_hh (H, nH)` and `b (nH,)` for `n = num_blocks` gates.

    The recurrent matrix is drawn one `(H, H)` block per gate, so with the
    orthogonal default each gate's recurrent map is orthogonal on its own.
    Weights are drawn in at least float32 (QR has no bfloat16 kernel) and then
    cast to `dtype`.
    """
    input_size = _checks.positive_int("input_size", input_size)
    dtype = _checks.floating_dtype("dtype", jnp.result_type(float) if dtype is None else dtype)
    draw_dtype = jnp.promote_types(dtype, jnp.float32)
    width = num_blocks * hidden_size
    k_input, k_recurrent, k_bias = jax.random.split(key, 3)
    w_ih = input_init(k_input, (input_size, width), draw_dtype)
    w_hh = jnp.concatenate(
        [
            recurrent_init(k, (hidden_size, hidden_size), draw_dtype)
            for k in jax.random.split(k_recurrent, num_blocks)
        ],
        axis=1,
    )
    b = bias_init(k_bias, (width,), draw_dtype)
    return w_ih.astype(dtype), w_hh.astype(dtype), b.astype(dtype)


def _zeros(params: Any, batch_shape: Any) -> Array:
    """A zero state `(*batch_shape, H)` in the dtype of the recurrent weights."""
    try:
        batch_shape = tuple(_checks.positive_int("batch_shape", d) for d in batch_shape)
    except TypeError:
        raise TypeError(
            f"batch_shape must be a tuple of positive integers, got {batch_shape!r}"
        ) from None
    hidden_size = params.w_hh.shape[0]
    return jnp.zeros((*batch_shape, hidden_size), params.w_hh.dtype)


def _with_bias(y: Array, b: Array) -> Array:
    """`y + b` for `b` of shape `(N,)`, broadcast explicitly over `y`'s leading axes."""
    return y + jnp.reshape(b, (1,) * (y.ndim - 1) + b.shape)


def _check_input(params: Any, x: Array) -> None:
    input_size = params.w_ih.shape[0]
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != input_size:
        raise ValueError(
            f"x must have shape (*batch, {input_size}) to match params.w_ih "
            f"{_checks.shape_str(params.w_ih.shape)}, got {_checks.shape_str(jnp.shape(x))}"
        )


_default_input_init = jax.nn.initializers.lecun_normal()
_default_recurrent_init = jax.nn.initializers.orthogonal()
_default_bias_init = jax.nn.initializers.zeros


def rnn(
    hidden_size: int,
    activation: Activation = "tanh",
    *,
    input_init: Initializer = _default_input_init,
    recurrent_init: Initializer = _default_recurrent_init,
    bias_init: Initializer = _default_bias_init,
) -> Cell:
    """A vanilla (Elman) RNN cell.

    .. math:: h' = \\mathrm{act}(x W_{ih} + h W_{hh} + b)

    Args:
      hidden_size: number of hidden units `H`.
      activation: `"tanh"` (default), `"relu"`, or any elementwise callable.
      input_init: initializer of `w_ih (I, H)`; default LeCun normal (variance 1/I).
      recurrent_init: initializer of `w_hh (H, H)`; default orthogonal.
      bias_init: initializer of `b (H,)`; default zeros.

    Returns:
      A `Cell` whose params are `RNNParams` and whose state is `h`, `(*batch, H)`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.rnn(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> state, h = cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 3)))
      >>> h.shape
      (2, 4)

    PyTorch `nn.RNN` maps as `w_ih = weight_ih_l0.T`, `w_hh = weight_hh_l0.T`,
    `b = bias_ih_l0 + bias_hh_l0`.
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    act = _resolve_activation(activation)
    input_init = _check_initializer("input_init", input_init)
    recurrent_init = _check_initializer("recurrent_init", recurrent_init)
    bias_init = _check_initializer("bias_init", bias_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> RNNParams:
        return RNNParams(
            *_init_weights(
                key, input_size, hidden_size, 1, dtype, input_init, recurrent_init, bias_init
            )
        )

    def initial_state(params: RNNParams, batch_shape: tuple[int, ...] = ()) -> Array:
        return _zeros(params, batch_shape)

    def step(params: RNNParams, state: Array, x: Array) -> tuple[Array, Array]:
        _check_input(params, x)
        h = act(_with_bias(x @ params.w_ih + state @ params.w_hh, params.b))
        return h, h

    return Cell(init, initial_state, step)


def lstm(
    hidden_size: int,
    forget_bias: float = 1.0,
    *,
    input_init: Initializer = _default_input_init,
    recurrent_init: Initializer = _default_recurrent_init,
    bias_init: Initializer = _default_bias_init,
) -> Cell:
    """A long short-term memory cell (Hochreiter & Schmidhuber 1997), gates i, f, g, o.

    .. math::

        [i, f, g, o] &= x W_{ih} + h W_{hh} + b \\\\
        c' &= \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g) \\\\
        h' &= \\sigma(o) \\odot \\tanh(c')

    The forget-gate bias starts at `forget_bias` (+1 by default) so that at
    initialisation the cell keeps most of its memory (`sigmoid(1) = 0.73`) and
    gradients flow back through many steps; Gers, Schmidhuber & Cummins (2000)
    introduced it and Jozefowicz, Zaremba & Sutskever (2015) found it closes most
    of the gap to the best recurrent architectures they searched.

    Args:
      hidden_size: number of hidden units `H`.
      forget_bias: added to the forget-gate block `b[H:2H]` at `init`.
      input_init: initializer of `w_ih (I, 4H)`; default LeCun normal.
      recurrent_init: initializer of each `(H, H)` gate block of `w_hh`; default orthogonal.
      bias_init: initializer of `b (4H,)` before `forget_bias` is added; default zeros.

    Returns:
      A `Cell` whose params are `LSTMParams` and whose state is `LSTMState(h, c)`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.lstm(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> state, h = cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 3)))
      >>> state.c.shape, h.shape
      ((2, 4), (2, 4))

    PyTorch `nn.LSTM` maps as `w_ih = weight_ih_l0.T`, `w_hh = weight_hh_l0.T`,
    `b = bias_ih_l0 + bias_hh_l0` (same gate order).
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    if not isinstance(forget_bias, (int, float)) or isinstance(forget_bias, bool):
        raise TypeError(f"forget_bias must be a real number, got {forget_bias!r}")
    input_init = _check_initializer("input_init", input_init)
    recurrent_init = _check_initializer("recurrent_init", recurrent_init)
    bias_init = _check_initializer("bias_init", bias_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> LSTMParams:
        w_ih, w_hh, b = _init_weights(
            key, input_size, hidden_size, 4, dtype, input_init, recurrent_init, bias_init
        )
        b = b.at[hidden_size : 2 * hidden_size].add(jnp.asarray(forget_bias, b.dtype))
        return LSTMParams(w_ih, w_hh, b)

    def initial_state(params: LSTMParams, batch_shape: tuple[int, ...] = ()) -> LSTMState:
        zeros = _zeros(params, batch_shape)
        return LSTMState(h=zeros, c=zeros)

    def step(params: LSTMParams, state: LSTMState, x: Array) -> tuple[LSTMState, Array]:
        _check_input(params, x)
        gates = _with_bias(x @ params.w_ih + state.h @ params.w_hh, params.b)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return LSTMState(h, c), h

    return Cell(init, initial_state, step)


def gru(
    hidden_size: int,
    *,
    input_init: Initializer = _default_input_init,
    recurrent_init: Initializer = _default_recurrent_init,
    bias_init: Initializer = _default_bias_init,
) -> Cell:
    """A gated recurrent unit (Cho et al. 2014), gates r, z, n, reset after the matmul.

    .. math::

        r &= \\sigma(x W_{ir} + h W_{hr} + b_r) \\\\
        z &= \\sigma(x W_{iz} + h W_{hz} + b_z) \\\\
        n &= \\tanh(x W_{in} + b_n + r \\odot (h W_{hn} + b_{hn})) \\\\
        h' &= (1 - z) \\odot n + z \\odot h

    The reset gate multiplies the recurrent projection *after* the matmul (the
    PyTorch and cuDNN convention, "v3" in Cho et al.), which lets the recurrent
    matmul of all three gates run as one; that is why `b_hn` stays apart from `b`.

    Args:
      hidden_size: number of hidden units `H`.
      input_init: initializer of `w_ih (I, 3H)`; default LeCun normal.
      recurrent_init: initializer of each `(H, H)` gate block of `w_hh`; default orthogonal.
      bias_init: initializer of `b (3H,)` and `b_hn (H,)`; default zeros.

    Returns:
      A `Cell` whose params are `GRUParams` and whose state is `h`, `(*batch, H)`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.gru(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> state, h = cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 3)))
      >>> h.shape
      (2, 4)

    PyTorch `nn.GRU` maps as `w_ih = weight_ih_l0.T`, `w_hh = weight_hh_l0.T`,
    `b = bias_ih_l0 + concat(bias_hh_l0[:2H], zeros(H))`, `b_hn = bias_hh_l0[2H:]`.
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    input_init = _check_initializer("input_init", input_init)
    recurrent_init = _check_initializer("recurrent_init", recurrent_init)
    bias_init = _check_initializer("bias_init", bias_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> GRUParams:
        key, k_hn = jax.random.split(key)
        w_ih, w_hh, b = _init_weights(
            key, input_size, hidden_size, 3, dtype, input_init, recurrent_init, bias_init
        )
        b_hn = bias_init(k_hn, (hidden_size,), jnp.promote_types(b.dtype, jnp.float32))
        return GRUParams(w_ih, w_hh, b, b_hn.astype(b.dtype))

    def initial_state(params: GRUParams, batch_shape: tuple[int, ...] = ()) -> Array:
        return _zeros(params, batch_shape)

    def step(params: GRUParams, state: Array, x: Array) -> tuple[Array, Array]:
        _check_input(params, x)
        input_part = _with_bias(x @ params.w_ih, params.b)
        recurrent_part = state @ params.w_hh
        x_r, x_z, x_n = jnp.split(input_part, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(recurrent_part, 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * _with_bias(h_n, params.b_hn))
        h = (1 - z) * n + z * state
        return h, h

    return Cell(init, initial_state, step)


def chrono_bias_init(max_length: int) -> Initializer:
    """Chrono initialisation of an LSTM bias (Tallec & Ollivier 2018).

    Draws the forget-gate bias as `b_f = log(u)`, `u ~ U[1, max_length - 1]`, and
    sets the input-gate bias to `-b_f`; the other blocks are zero. A forget gate
    `sigmoid(b_f)` then keeps memory for about `u` steps, so the cell's time
    scales spread over `1..max_length`, the range of dependencies to learn. Use
    it with `forget_bias=0`: `rnnjax.lstm(H, forget_bias=0.0,
    bias_init=rnnjax.chrono_bias_init(T))`.

    Args:
      max_length: the longest dependency expected, in steps (at least 3).

    Returns:
      An initializer `(key, (4H,), dtype) -> b` for `lstm(bias_init=...)`.

    Example:
      >>> import jax, rnnjax
      >>> cell = rnnjax.lstm(4, forget_bias=0.0, bias_init=rnnjax.chrono_bias_init(100))
      >>> b = cell.init(jax.random.key(0), 1).b
      >>> bool((b[4:8] >= 0).all() and (b[4:8] <= 4.6).all() and (b[:4] == -b[4:8]).all())
      True
    """
    max_length = _checks.positive_int("max_length", max_length)
    if max_length < 3:
        raise ValueError(f"max_length must be at least 3, got {max_length}")

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        if len(shape) != 1 or shape[0] % 4:
            raise ValueError(
                f"chrono_bias_init initialises an LSTM bias of shape (4H,), got {shape}"
            )
        hidden = shape[0] // 4
        forget = jnp.log(jax.random.uniform(key, (hidden,), dtype, 1.0, max_length - 1.0))
        return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(forget).at[:hidden].set(-forget)

    return init
