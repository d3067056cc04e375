"""Sequence layers built on `unroll`: one cell, a stack, a bidirectional pair.

A `Layer` maps a whole sequence to a sequence, and follows the same pattern as
a `Cell` (a NamedTuple of pure functions closed over hyper-parameters)::

    layer = rnnjax.stack(rnnjax.lstm(64), rnnjax.bidirectional(rnnjax.gru(32)))
    params = layer.init(key, input_size)                  # pytree of arrays
    hs, final_state = layer.apply(params, xs, lengths=lengths)

Layers compose: `stack` takes cells or layers, and `bidirectional` takes cells,
so a two-layer bidirectional LSTM is
`stack(bidirectional(lstm(H)), bidirectional(lstm(H)))`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Union

import jax
import jax.numpy as jnp

from rnnjax.cells import Cell
from rnnjax.sequence import unroll as unroll_cell

Array = jax.Array


class Layer(NamedTuple):
    """A sequence-to-sequence layer: three pure functions.

    Attributes:
      init: `init(key, input_size, dtype=None) -> params`.
      initial_state: `initial_state(params, batch_shape=()) -> state`, all zeros.
      apply: `apply(params, xs, *, state=None, lengths=None, time_major=False,
        unroll=None, checkpoint_every=None, fused=None) -> (hs, final_state)`,
        with the shapes and options of `rnnjax.unroll`.
    """

    init: Callable[..., Any]
    initial_state: Callable[..., Any]
    apply: Callable[..., tuple[Array, Any]]


class Directions(NamedTuple):
    """Params or state of a bidirectional layer: one entry per direction."""

    forward: Any
    backward: Any


def recurrent(cell: Cell, *, reverse: bool = False) -> Layer:
    """One cell unrolled over the sequence (right to left when `reverse`).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> layer = rnnjax.recurrent(rnnjax.rnn(8))
      >>> params = layer.init(jax.random.key(0), 3)
      >>> layer.apply(params, jnp.ones((2, 5, 3)))[0].shape
      (2, 5, 8)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")

    def apply(
        params: Any,
        xs: Array,
        *,
        state: Any = None,
        lengths: Array | None = None,
        time_major: bool = False,
        unroll: int | bool | None = None,
        checkpoint_every: int | None = None,
        fused: bool | None = None,
    ) -> tuple[Array, Any]:
        return unroll_cell(
            cell,
            params,
            xs,
            state=state,
            lengths=lengths,
            reverse=reverse,
            time_major=time_major,
            unroll=unroll,
            checkpoint_every=checkpoint_every,
            fused=fused,
        )

    return Layer(cell.init, cell.initial_state, apply)


def _as_layer(name: str, item: Union[Cell, Layer]) -> Layer:
    if isinstance(item, Cell):
        return recurrent(item)
    if isinstance(item, Layer):
        return item
    raise TypeError(f"{name} must be an rnnjax.Cell or rnnjax.Layer, got {type(item).__name__}")


def output_size(layer: Layer, params: Any, input_size: int) -> int:
    """The number of features `layer.apply(params, ...)` outputs, found without running it."""
    dtype = jnp.result_type(*jax.tree.leaves(params))
    probe = jax.ShapeDtypeStruct((1, input_size), dtype)
    hs = jax.eval_shape(lambda p, x: layer.apply(p, x)[0], params, probe)
    return hs.shape[-1]


def stack(*layers: Union[Cell, Layer]) -> Layer:
    """Layers applied one after another, each layer's outputs the next one's inputs.

    Params and state are tuples with one entry per layer; the final state is
    that tuple of every layer's final state. `lengths` reaches every layer.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> layer = rnnjax.stack(rnnjax.lstm(16), rnnjax.lstm(8))
      >>> params = layer.init(jax.random.key(0), 3)
      >>> hs, (state_1, state_2) = layer.apply(params, jnp.ones((2, 5, 3)))
      >>> hs.shape, state_2.h.shape
      ((2, 5, 8), (2, 8))
    """
    if not layers:
        raise ValueError("stack needs at least one cell or layer, got none")
    members = tuple(_as_layer(f"layers[{i}]", item) for i, item in enumerate(layers))

    def init(key: Array, input_size: int, dtype: Any = None) -> tuple[Any, ...]:
        params = []
        for member, member_key in zip(members, jax.random.split(key, len(members))):
            member_params = member.init(member_key, input_size, dtype)
            input_size = output_size(member, member_params, input_size)
            params.append(member_params)
        return tuple(params)

    def initial_state(params: tuple[Any, ...], batch_shape: tuple[int, ...] = ()) -> tuple:
        _check_count(params, members)
        return tuple(m.initial_state(p, batch_shape) for m, p in zip(members, params))

    def apply(
        params: tuple[Any, ...],
        xs: Array,
        *,
        state: tuple | None = None,
        lengths: Array | None = None,
        time_major: bool = False,
        unroll: int | bool | None = None,
        checkpoint_every: int | None = None,
        fused: bool | None = None,
    ) -> tuple[Array, tuple]:
        _check_count(params, members)
        states = (None,) * len(members) if state is None else state
        _check_count(states, members, name="state")
        final_states = []
        for member, member_params, member_state in zip(members, params, states):
            xs, final = member.apply(
                member_params,
                xs,
                state=member_state,
                lengths=lengths,
                time_major=time_major,
                unroll=unroll,
                checkpoint_every=checkpoint_every,
                fused=fused,
            )
            final_states.append(final)
        return xs, tuple(final_states)

    return Layer(init, initial_state, apply)


def _check_count(items: Any, members: tuple[Layer, ...], name: str = "params") -> None:
    if not isinstance(items, (tuple, list)) or len(items) != len(members):
        got = f"{len(items)} entries" if isinstance(items, (tuple, list)) else type(items).__name__
        raise ValueError(
            f"{name} must be a tuple with one entry per layer ({len(members)}), got {got}"
        )


def bidirectional(forward: Cell, backward: Cell | None = None) -> Layer:
    """A forward and a backward cell over the same sequence, outputs concatenated.

    The backward cell reads each sequence from its own last valid step (see
    `lengths` in `rnnjax.unroll`) to its first. Outputs are
    `concat([forward_hs, backward_hs], axis=-1)`, `(B, T, H_fwd + H_bwd)`;
    params and state are `Directions(forward, backward)`.

    Args:
      forward: the left-to-right cell.
      backward: the right-to-left cell; by default a cell built like `forward`
        (its own parameters, drawn with another key).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> layer = rnnjax.bidirectional(rnnjax.gru(8))
      >>> params = layer.init(jax.random.key(0), 3)
      >>> layer.apply(params, jnp.ones((2, 5, 3)))[0].shape
      (2, 5, 16)
    """
    forward_layer = recurrent(forward)
    backward_layer = recurrent(forward if backward is None else backward, reverse=True)

    def init(key: Array, input_size: int, dtype: Any = None) -> Directions:
        k_forward, k_backward = jax.random.split(key)
        return Directions(
            forward_layer.init(k_forward, input_size, dtype),
            backward_layer.init(k_backward, input_size, dtype),
        )

    def initial_state(params: Directions, batch_shape: tuple[int, ...] = ()) -> Directions:
        return Directions(
            forward_layer.initial_state(params.forward, batch_shape),
            backward_layer.initial_state(params.backward, batch_shape),
        )

    def apply(
        params: Directions,
        xs: Array,
        *,
        state: Directions | None = None,
        lengths: Array | None = None,
        time_major: bool = False,
        unroll: int | bool | None = None,
        checkpoint_every: int | None = None,
        fused: bool | None = None,
    ) -> tuple[Array, Directions]:
        state = Directions(None, None) if state is None else Directions(*state)
        options = dict(
            lengths=lengths,
            time_major=time_major,
            unroll=unroll,
            checkpoint_every=checkpoint_every,
            fused=fused,
        )
        hs_forward, final_forward = forward_layer.apply(
            params.forward, xs, state=state.forward, **options
        )
        hs_backward, final_backward = backward_layer.apply(
            params.backward, xs, state=state.backward, **options
        )
        hs = jnp.concatenate([hs_forward, hs_backward], axis=-1)
        return hs, Directions(final_forward, final_backward)

    return Layer(init, initial_state, apply)
