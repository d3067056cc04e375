"""Recurrent cells as pure functions: vanilla RNN, LSTM, GRU and the later cures for vanishing
gradients (IndRNN, expRNN, LRU, minGRU, minLSTM).

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
(`rnnjax.rnn`, `rnnjax.lstm`, `rnnjax.gru` and the later cells, in `rnnjax.zoo`) attach
the fast paths of `rnnjax.fused` and `rnnjax.scans` to the equations here. The
constructors of this module return cells without one, which `unroll` scans step by
step: the reference path.
"""

from __future__ import annotations

import math
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


def _dtypes(dtype: Any) -> tuple[Any, Any]:
    """`(dtype, draw_dtype)`: the parameters' dtype (JAX's default float when None), and
    the at-least-float32 dtype their initializers draw in (QR and friends have no
    bfloat16 kernels)."""
    dtype = _checks.floating_dtype("dtype", jnp.result_type(float) if dtype is None else dtype)
    return dtype, jnp.promote_types(dtype, jnp.float32)


def _batch_zeros(batch_shape: Any, size: int, dtype: Any) -> Array:
    try:
        batch_shape = tuple(_checks.positive_int("batch_shape", d) for d in batch_shape)
    except TypeError:
        raise TypeError(
            f"batch_shape must be a tuple of positive integers, got {batch_shape!r}"
        ) from None
    return jnp.zeros((*batch_shape, size), dtype)


def _draw(key: Array, dtype: Any, *parts: tuple[Initializer, tuple[int, ...]]) -> list[Array]:
    """One array per `(initializer, shape)` in `parts`, each with its own key, drawn in at
    least float32 and cast to `dtype` (JAX's default float when None)."""
    dtype, draw = _dtypes(dtype)
    keys = jax.random.split(key, len(parts))
    return [init(k, shape, draw).astype(dtype) for k, (init, shape) in zip(keys, parts)]


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
    dtype, draw_dtype = _dtypes(dtype)
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
    return _batch_zeros(batch_shape, params.w_hh.shape[0], params.w_hh.dtype)


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


# -- the cures since the LSTM ------------------------------------------------------------

_unit_uniform = jax.nn.initializers.uniform(1.0)
_he_normal = jax.nn.initializers.he_normal()
_small_uniform = jax.nn.initializers.uniform(0.01)
_standard_normal = jax.nn.initializers.normal(1.0)


def _along_last(v: Array, like: Array) -> Array:
    """`v (N,)` shaped to broadcast explicitly over `like (*batch, N)`'s leading axes."""
    return jnp.reshape(v, (1,) * (like.ndim - 1) + v.shape)


def _check_width(name: str, w: Array, x: Array) -> None:
    if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != w.shape[0]:
        raise ValueError(
            f"x must have shape (*batch, {w.shape[0]}) to match params.{name} "
            f"{_checks.shape_str(w.shape)}, got {_checks.shape_str(jnp.shape(x))}"
        )


class IndRNNParams(NamedTuple):
    """Parameters of an IndRNN cell: `h' = act(x @ w_ih + w_hh * h + b)`.

    Attributes:
      w_ih: input weights, `(I, H)`.
      w_hh: the recurrent weights, one per unit (a diagonal recurrent matrix), `(H,)`.
      b: bias, `(H,)`.
    """

    w_ih: Array
    w_hh: Array
    b: Array


def indrnn(
    hidden_size: int,
    activation: Activation = "relu",
    *,
    input_init: Initializer = _default_input_init,
    recurrent_init: Initializer = _unit_uniform,
    bias_init: Initializer = _default_bias_init,
    recurrent_max_abs: float | None = None,
) -> Cell:
    """An independently recurrent neural network cell (Li, Li, Cook, Zhu & Gao 2018).

    .. math:: h' = \\mathrm{act}(x W_{ih} + \\mathrm{clip}(u, -m, m) \\odot h + b)

    Each unit sees only its own past: `u` is a vector, the diagonal of a recurrent
    matrix. The gradient through `T - t` steps is then, unit by unit, a product of
    scalars `u act'`; with ReLU it neither vanishes nor explodes while `|u|` stays
    near 1. The paper bounds `|u|` to keep it so: over `T` steps a gradient grows at
    most `γ`-fold when `|u| <= γ^(1/T)`, and its adding-problem networks use `γ = 2`,
    `m = 2^(1/T)`. `recurrent_max_abs = m` applies that bound in the step itself (the
    reference implementations' way: the stored `u` may leave `[-m, m]`, the step uses
    it clipped, and the gradient of a clipped entry is zero). Depth, not the
    recurrence, mixes the units: stack IndRNN layers.

    Args:
      hidden_size: number of units `H`.
      activation: `"relu"` (the paper's; the default), `"tanh"`, or any elementwise
        callable.
      input_init: initializer of `w_ih (I, H)`; default LeCun normal.
      recurrent_init: initializer of `w_hh (H,)`; default uniform on `[0, 1)`, the
        paper's initialisation of its ReLU networks.
      bias_init: initializer of `b (H,)`; default zeros.
      recurrent_max_abs: the bound `m > 0` on `|u|`, or None (the default) for none.

    Returns:
      A `Cell` whose params are `IndRNNParams` and whose state is `h`, `(*batch, H)`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.cells.indrnn(4)
      >>> params = cell.init(jax.random.key(0), 3)
      >>> cell.step(params, cell.initial_state(params, (2,)), jnp.ones((2, 3)))[1].shape
      (2, 4)
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    act = _resolve_activation(activation)
    input_init = _check_initializer("input_init", input_init)
    recurrent_init = _check_initializer("recurrent_init", recurrent_init)
    bias_init = _check_initializer("bias_init", bias_init)
    bound = indrnn_recurrent_bound(recurrent_max_abs)

    def init(key: Array, input_size: int, dtype: Any = None) -> IndRNNParams:
        input_size = _checks.positive_int("input_size", input_size)
        return IndRNNParams(
            *_draw(
                key,
                dtype,
                (input_init, (input_size, hidden_size)),
                (recurrent_init, (hidden_size,)),
                (bias_init, (hidden_size,)),
            )
        )

    def initial_state(params: IndRNNParams, batch_shape: tuple[int, ...] = ()) -> Array:
        return _batch_zeros(batch_shape, hidden_size, params.b.dtype)

    def step(params: IndRNNParams, state: Array, x: Array) -> tuple[Array, Array]:
        _check_width("w_ih", params.w_ih, x)
        recurrent = _along_last(bound(params.w_hh), state) * state
        h = act(_with_bias(x @ params.w_ih + recurrent, params.b))
        return h, h

    return Cell(init, initial_state, step)


def indrnn_recurrent_bound(recurrent_max_abs: float | None) -> Callable[[Array], Array]:
    """The map IndRNN's step applies to `u`: `clip(u, -m, m)`, or the identity for None.

    Raises:
      ValueError: `recurrent_max_abs` is not a positive finite number.
    """
    if recurrent_max_abs is None:
        return lambda u: u
    if isinstance(recurrent_max_abs, bool) or not isinstance(recurrent_max_abs, (int, float)):
        raise TypeError(
            f"recurrent_max_abs must be a positive number or None, got {recurrent_max_abs!r}"
        )
    if not 0 < recurrent_max_abs < math.inf:
        raise ValueError(
            f"recurrent_max_abs must be a positive finite number, got {recurrent_max_abs}"
        )
    m = float(recurrent_max_abs)
    return lambda u: jnp.clip(u, -m, m)


class ExpRNNParams(NamedTuple):
    """Parameters of an expRNN cell; the recurrent matrix is `expm(a - a.T)`.

    Attributes:
      w_ih: input weights, `(I, H)`.
      a: the matrix whose skew-symmetric part `a - a.T` parametrises the orthogonal
        recurrent matrix, `(H, H)`.
      b: the modReLU bias, `(H,)`.
    """

    w_ih: Array
    a: Array
    b: Array


def henaff_init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """Henaff, Szlam & LeCun (2016)'s initialisation of an orthogonal RNN's skew part.

    For `(H, H)`: zero but for `a[2k, 2k+1] = s_k`, `s_k ~ U[-pi, pi]`, so
    `expm(a - a.T)` is block diagonal with 2 x 2 rotations by angles `2 s_k`: the
    eigenvalues spread evenly around the unit circle.
    """
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"henaff_init draws a square matrix, got shape {shape}")
    size = shape[0]
    angles = jax.random.uniform(key, (size // 2,), dtype, -jnp.pi, jnp.pi)
    rows = jnp.arange(0, 2 * (size // 2), 2)
    return jnp.zeros(shape, dtype).at[rows, rows + 1].set(angles)


def modrelu(z: Array, b: Array) -> Array:
    """modReLU (Arjovsky, Shah & Bengio 2016) on real numbers: `sign(z) relu(|z| + b)`."""
    return jnp.sign(z) * jax.nn.relu(jnp.abs(z) + _along_last(b, z))


def exprnn(
    hidden_size: int,
    *,
    input_init: Initializer = _he_normal,
    recurrent_init: Initializer = henaff_init,
    bias_init: Initializer = _small_uniform,
) -> Cell:
    """An orthogonal RNN by the exponential map: expRNN (Lezcano-Casado & Martinez-Rubio 2019).

    .. math::

        W = \\exp(A - A^\\top), \\qquad h' = \\mathrm{modReLU}(x W_{ih} + h W, b)

    `A - A^T` is skew-symmetric, so `W` is exactly orthogonal for any `A`: the
    recurrence preserves the norm of what it carries, and the gradient neither
    vanishes nor explodes through it (only through modReLU). Training updates `A`
    freely; the exponential keeps `W` on the orthogonal group.

    The step computes `W` from `a` every time it runs; the public `rnnjax.exprnn`
    carries a whole-sequence implementation that computes it once per sequence.

    Args:
      hidden_size: number of units `H`.
      input_init: initializer of `w_ih (I, H)`; default He normal.
      recurrent_init: initializer of `a (H, H)`; default `henaff_init`.
      bias_init: initializer of the modReLU bias `b (H,)`; default uniform on
        `[0, 0.01)`.

    Returns:
      A `Cell` whose params are `ExpRNNParams` and whose state is `h`, `(*batch, H)`.
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    input_init = _check_initializer("input_init", input_init)
    recurrent_init = _check_initializer("recurrent_init", recurrent_init)
    bias_init = _check_initializer("bias_init", bias_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> ExpRNNParams:
        input_size = _checks.positive_int("input_size", input_size)
        return ExpRNNParams(
            *_draw(
                key,
                dtype,
                (input_init, (input_size, hidden_size)),
                (recurrent_init, (hidden_size, hidden_size)),
                (bias_init, (hidden_size,)),
            )
        )

    def initial_state(params: ExpRNNParams, batch_shape: tuple[int, ...] = ()) -> Array:
        return _batch_zeros(batch_shape, hidden_size, params.b.dtype)

    def step(params: ExpRNNParams, state: Array, x: Array) -> tuple[Array, Array]:
        return exprnn_step(orthogonal_matrix(params.a), params, state, x)

    return Cell(init, initial_state, step)


def orthogonal_matrix(a: Array) -> Array:
    """`expm(a - a.T)`, orthogonal for any square `a` (in at least float32: JAX's matrix
    exponential has no bfloat16 kernel)."""
    skew = (a - a.T).astype(jnp.promote_types(a.dtype, jnp.float32))
    return jax.scipy.linalg.expm(skew).astype(a.dtype)


def exprnn_step(w_hh: Array, params: ExpRNNParams, state: Array, x: Array) -> tuple[Array, Array]:
    """expRNN's step given its recurrent matrix `w_hh = orthogonal_matrix(params.a)`."""
    _check_width("w_ih", params.w_ih, x)
    h = modrelu(x @ params.w_ih + state @ w_hh, params.b)
    return h, h


class LRUParams(NamedTuple):
    """Parameters of a linear recurrent unit, the complex numbers as real pairs.

    Attributes:
      nu_log: `log nu`, `(N,)`: the eigenvalues' moduli are `exp(-nu)`.
      theta_log: `log theta`, `(N,)`: their phases are `theta`.
      gamma_log: `log gamma`, `(N,)`: the input normalisation.
      b_re, b_im: the complex input matrix `B`, `(I, N)` each.
      c_re, c_im: the complex output matrix `C`, `(N, H)` each.
      d: the real skip matrix `D`, `(I, H)`.
    """

    nu_log: Array
    theta_log: Array
    gamma_log: Array
    b_re: Array
    b_im: Array
    c_re: Array
    c_im: Array
    d: Array


class LRUState(NamedTuple):
    """The LRU's complex state as its real and imaginary parts, `(*batch, N)` each."""

    re: Array
    im: Array


def lru_lambda(params: LRUParams) -> tuple[Array, Array]:
    """The eigenvalues `lambda = exp(-exp(nu_log) + i exp(theta_log))` as `(re, im)`."""
    modulus = jnp.exp(-jnp.exp(params.nu_log))
    phase = jnp.exp(params.theta_log)
    return modulus * jnp.cos(phase), modulus * jnp.sin(phase)


def lru(
    hidden_size: int,
    state_size: int | None = None,
    *,
    r_min: float = 0.9,
    r_max: float = 0.999,
    max_phase: float = 2 * math.pi,
    input_init: Initializer = _standard_normal,
    output_init: Initializer = _standard_normal,
    skip_init: Initializer = _default_input_init,
) -> Cell:
    """A linear recurrent unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023).

    .. math::

        \\lambda &= \\exp(-e^{\\nu} + i e^{\\theta}), \\qquad
        s' = \\lambda \\odot s + \\gamma \\odot (x B) \\\\
        h' &= \\mathrm{Re}(s' C) + x D

    A linear, complex, diagonal recurrence: state `s` in `C^N`, its eigenvalues
    `lambda` parametrised exponentially so that `|lambda| = exp(-e^nu) < 1` always
    (stable), and initialised on a ring `r_min <= |lambda| <= r_max` near the unit
    circle, phases uniform on `[0, max_phase)` ("ring initialisation"); `gamma =
    sqrt(1 - |lambda|^2)` (initialised, then trained as `gamma_log`) keeps the state's
    scale independent of how close to 1 the eigenvalues are. The output is real. The
    nonlinearity lives outside the recurrence (in the paper, an MLP between stacked
    layers), which is what makes the recurrence one `associative_scan`.

    Args:
      hidden_size: output features `H` per step.
      state_size: complex state dimension `N`; default `H`.
      r_min: the inner radius of the ring of the eigenvalues' moduli at initialisation.
      r_max: its outer radius.
      max_phase: the largest initial phase.
      input_init: initializer of `b_re`, `b_im` `(I, N)`, scaled by `1/sqrt(2 I)`
        (the paper's `B ~ N(0, 1/(2I))` per real part); default standard normal.
      output_init: initializer of `c_re`, `c_im` `(N, H)`, scaled by `1/sqrt(N)`;
        default standard normal.
      skip_init: initializer of `d (I, H)`; default LeCun normal.

    Returns:
      A `Cell` whose params are `LRUParams` and whose state is `LRUState(re, im)`.
    """
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    state_size = (
        hidden_size if state_size is None else _checks.positive_int("state_size", state_size)
    )
    if not 0 <= r_min < r_max <= 1:
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    if not max_phase > 0:
        raise ValueError(f"max_phase must be positive, got {max_phase}")
    input_init = _check_initializer("input_init", input_init)
    output_init = _check_initializer("output_init", output_init)
    skip_init = _check_initializer("skip_init", skip_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> LRUParams:
        input_size = _checks.positive_int("input_size", input_size)
        dtype, draw = _dtypes(dtype)
        keys = jax.random.split(key, 7)
        u1 = jax.random.uniform(keys[0], (state_size,), draw)
        u2 = jax.random.uniform(keys[1], (state_size,), draw)
        nu = -0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        theta = u2 * max_phase
        modulus = jnp.exp(-nu)
        gamma = jnp.sqrt(1 - modulus**2)
        b_scale = 1 / math.sqrt(2 * input_size)
        c_scale = 1 / math.sqrt(state_size)
        parts = LRUParams(
            jnp.log(nu),
            jnp.log(theta),
            jnp.log(gamma),
            b_scale * input_init(keys[2], (input_size, state_size), draw),
            b_scale * input_init(keys[3], (input_size, state_size), draw),
            c_scale * output_init(keys[4], (state_size, hidden_size), draw),
            c_scale * output_init(keys[5], (state_size, hidden_size), draw),
            skip_init(keys[6], (input_size, hidden_size), draw),
        )
        return jax.tree.map(lambda a: a.astype(dtype), parts)

    def initial_state(params: LRUParams, batch_shape: tuple[int, ...] = ()) -> LRUState:
        zeros = _batch_zeros(batch_shape, state_size, params.d.dtype)
        return LRUState(zeros, zeros)

    def step(params: LRUParams, state: LRUState, x: Array) -> tuple[LRUState, Array]:
        _check_width("d", params.d, x)
        lam_re, lam_im = lru_lambda(params)
        gamma = jnp.exp(params.gamma_log)
        u_re, u_im = lru_inputs(params, x)
        lam_re, lam_im = _along_last(lam_re, state.re), _along_last(lam_im, state.re)
        re = lam_re * state.re - lam_im * state.im + _along_last(gamma, u_re) * u_re
        im = lam_re * state.im + lam_im * state.re + _along_last(gamma, u_im) * u_im
        return LRUState(re, im), lru_output(params, re, im, x)

    return Cell(init, initial_state, step)


def lru_inputs(params: LRUParams, x: Array) -> tuple[Array, Array]:
    """`x B` as `(re, im)`, `(*batch, N)` each."""
    return x @ params.b_re, x @ params.b_im


def lru_output(params: LRUParams, re: Array, im: Array, x: Array) -> Array:
    """`Re(s C) + x D` for the state `s = re + i im`."""
    return re @ params.c_re - im @ params.c_im + x @ params.d


def positive_candidate(x: Array) -> Array:
    """`g(x) = x + 1/2` for `x >= 0`, `sigmoid(x)` below (Feng et al. 2024): a positive,
    continuous, monotone candidate for minGRU and minLSTM."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


class MinGRUParams(NamedTuple):
    """Parameters of a minGRU cell; blocks z, h.

    Attributes:
      w_ih: input weights, `(I, 2H)`.
      b: bias, `(2H,)`.
    """

    w_ih: Array
    b: Array


class MinLSTMParams(NamedTuple):
    """Parameters of a minLSTM cell; blocks f, i, h.

    Attributes:
      w_ih: input weights, `(I, 3H)`.
      b: bias, `(3H,)`.
    """

    w_ih: Array
    b: Array


def _input_gated_cell(
    params_type: type,
    blocks: int,
    coefficients: Callable[[Any, Array], tuple[Array, Array]],
    hidden_size: int,
    input_init: Initializer,
    bias_init: Initializer,
) -> Cell:
    """A cell whose step is `h' = a h + b`, `(a, b) = coefficients(params, x)`, with
    parameters `params_type(w_ih (I, blocks H), b (blocks H,))`: minGRU and minLSTM."""
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    input_init = _check_initializer("input_init", input_init)
    bias_init = _check_initializer("bias_init", bias_init)

    def init(key: Array, input_size: int, dtype: Any = None) -> Any:
        input_size = _checks.positive_int("input_size", input_size)
        width = blocks * hidden_size
        return params_type(
            *_draw(key, dtype, (input_init, (input_size, width)), (bias_init, (width,)))
        )

    def initial_state(params: Any, batch_shape: tuple[int, ...] = ()) -> Array:
        return _batch_zeros(batch_shape, hidden_size, params.b.dtype)

    def step(params: Any, state: Array, x: Array) -> tuple[Array, Array]:
        _check_width("w_ih", params.w_ih, x)
        a, b = coefficients(params, x)
        h = a * state + b
        return h, h

    return Cell(init, initial_state, step)


def min_gru_coefficients(params: MinGRUParams, x: Array) -> tuple[Array, Array]:
    """`(a, b)` of minGRU's linear recurrence `h' = a h + b`: `a = 1 - z`, `b = z g(h~)`."""
    z_pre, h_pre = jnp.split(_with_bias(x @ params.w_ih, params.b), 2, axis=-1)
    z = jax.nn.sigmoid(z_pre)
    return 1 - z, z * positive_candidate(h_pre)


def min_lstm_coefficients(params: MinLSTMParams, x: Array) -> tuple[Array, Array]:
    """`(a, b)` of minLSTM's linear recurrence `h' = a h + b`, with the gates normalised:
    `a = f / (f + i)`, `b = i / (f + i) g(h~)`."""
    f_pre, i_pre, h_pre = jnp.split(_with_bias(x @ params.w_ih, params.b), 3, axis=-1)
    f, i = jax.nn.sigmoid(f_pre), jax.nn.sigmoid(i_pre)
    return f / (f + i), i / (f + i) * positive_candidate(h_pre)


def min_gru(
    hidden_size: int,
    *,
    input_init: Initializer = _default_input_init,
    bias_init: Initializer = _default_bias_init,
) -> Cell:
    """minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs all we needed?").

    .. math::

        z = \\sigma(x W_z + b_z), \\quad \\tilde h = g(x W_h + b_h), \\quad
        h' = (1 - z) \\odot h + z \\odot \\tilde h

    The GRU with its gates and candidate depending on the input only (no reset gate,
    no `h W_hh`): the recurrence is linear in `h`, `h' = a h + b` with `a, b` known
    from `x` alone, so the whole sequence is one parallel scan after one matmul for
    all steps' projections. `g` (`positive_candidate`) keeps the candidate positive,
    as in the paper's log-space version.

    Args:
      hidden_size: number of units `H`.
      input_init: initializer of `w_ih (I, 2H)`; default LeCun normal.
      bias_init: initializer of `b (2H,)`; default zeros.

    Returns:
      A `Cell` whose params are `MinGRUParams` and whose state is `h`, `(*batch, H)`.
    """
    return _input_gated_cell(
        MinGRUParams, 2, min_gru_coefficients, hidden_size, input_init, bias_init
    )


def min_lstm(
    hidden_size: int,
    *,
    input_init: Initializer = _default_input_init,
    bias_init: Initializer = _default_bias_init,
) -> Cell:
    """minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024).

    .. math::

        f = \\sigma(x W_f + b_f), \\quad i = \\sigma(x W_i + b_i), \\quad
        \\tilde h = g(x W_h + b_h) \\\\
        h' = \\frac{f}{f + i} \\odot h + \\frac{i}{f + i} \\odot \\tilde h

    The LSTM reduced to gates of the input only, without an output gate or a separate
    cell state, and with the forget and input gates normalised to sum to one (which
    makes the state's scale independent of time). Linear in `h`, so the sequence is one
    parallel scan, as for `min_gru`.

    Args:
      hidden_size: number of units `H`.
      input_init: initializer of `w_ih (I, 3H)`; default LeCun normal.
      bias_init: initializer of `b (3H,)`; default zeros.

    Returns:
      A `Cell` whose params are `MinLSTMParams` and whose state is `h`, `(*batch, H)`.
    """
    return _input_gated_cell(
        MinLSTMParams, 3, min_lstm_coefficients, hidden_size, input_init, bias_init
    )


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
