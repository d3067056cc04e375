"""Sequence models: an optional embedding, a stack of recurrent layers, a dense readout.

    model = rnnjax.models.sequence_model(rnnjax.lstm(64), output_size=1)
    params = model.init(key, input_size=2)
    predictions = model.apply(params, xs, lengths=lengths)          # (B, 1)

A model reads `xs (B, T, I)` (or integer tokens `(B, T)` with `vocab_size`) and
outputs either one vector per sequence, read at each sequence's last valid
step (many-to-one), or one per step (`per_step=True`, many-to-many).

A left-to-right per-step model also generates autoregressively, as one compiled
`lax.scan` from a prompt: a token model samples its next token (greedy at
temperature 0, optionally among the top k) and reads it back; a real-valued model
whose outputs have its inputs' size feeds each prediction back as its next input
(closed-loop forecasting).

Regularisation by dropout, all driven by the explicit `key` of `apply` and
active only with `train=True`:

- `dropout`: standard dropout on the outputs of every recurrent layer but the
  last (as PyTorch's `dropout` argument of `nn.LSTM`).
- `input_dropout` and `state_dropout`: variational dropout (Gal & Ghahramani
  2016): one mask per sequence, the same at every step, on each layer's inputs
  and on the hidden state entering each step (for the LSTM, `h` but not the
  cell state `c`; for the GRU the masked `h` also feeds the `z * h` term).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _checks
from rnnjax.cells import Cell
from rnnjax.layers import Directions, bidirectional, recurrent
from rnnjax.layers import output_size as output_size_of

Array = jax.Array


class Dense(NamedTuple):
    """An affine map `x @ w + b`: `w (F, O)`, `b (O,)`."""

    w: Array
    b: Array


class ModelParams(NamedTuple):
    """Parameters of a sequence model.

    Attributes:
      embedding: `(V, E)` token embeddings, or `None` for real-valued inputs.
      layers: one entry per recurrent layer: the cell's params, or
        `Directions(forward, backward)` for a bidirectional layer.
      readout: `Dense` from the last layer's features to the outputs.
    """

    embedding: Array | None
    layers: tuple[Any, ...]
    readout: Dense


class Model(NamedTuple):
    """A sequence model: three pure functions.

    Attributes:
      init: `init(key, input_size=None, dtype=None) -> ModelParams`.
      apply: `apply(params, xs, *, lengths=None, key=None, train=False) -> outputs`.
      generate: `generate(params, prompt, *, num_steps, key=None, temperature=1.0,
        top_k=None) -> continuation`, autoregressive generation (see `sequence_model`).
    """

    init: Callable[..., ModelParams]
    apply: Callable[..., Array]
    generate: Callable[..., Array]


def _rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def _dropout(key: Array, rate: float, x: Array) -> Array:
    keep = 1.0 - rate
    return x * (jax.random.bernoulli(key, keep, x.shape) / keep).astype(x.dtype)


class _MaskedState(NamedTuple):
    """A cell's state with the per-sequence dropout masks it applies at every step."""

    state: Any
    input_mask: Array  # (B, I)
    state_mask: Array | None  # (B, H), or None without state dropout


def _mask_hidden(state: Any, mask: Array | None) -> Any:
    """`state` with its hidden part multiplied by `mask`: the whole state when it is one
    array, else its field `h` (as `LSTMState`'s). With `mask=None`, the hidden part
    itself (its shape is the mask's)."""
    if isinstance(state, (jax.Array, jax.ShapeDtypeStruct)):
        return state if mask is None else state * mask
    if hasattr(state, "_replace") and hasattr(state, "h"):
        return state.h if mask is None else state._replace(h=state.h * mask)
    raise TypeError(
        "state_dropout needs a cell whose state is one array or has an `h` field, "
        f"got a state of type {type(state).__name__}"
    )


def _variational(cell: Cell, input_mask: Array, state_mask: Array) -> Cell:
    """`cell` with per-sequence masks on its input and on the hidden state entering each step.

    The masks travel in the state rather than in a closure, so that a batch split over
    devices (`rnnjax.parallel`) splits the masks with their sequences. The masked step
    is a new step, so the returned cell has no whole-sequence implementation
    (`sequence=None`): `rnnjax.unroll` scans it, whatever `cell.sequence` was.
    """

    def initial_state(params: Any, batch_shape: tuple[int, ...] = ()) -> _MaskedState:
        return _MaskedState(cell.initial_state(params, batch_shape), input_mask, state_mask)

    def step(params: Any, masked: _MaskedState, x: Array) -> tuple[_MaskedState, Array]:
        state = masked.state
        if masked.state_mask is not None:  # None: no state dropout
            state = _mask_hidden(state, masked.state_mask)
        new_state, h = cell.step(params, state, x * masked.input_mask)
        return masked._replace(state=new_state), h

    return Cell(cell.init, initial_state, step, sequence=None)


def sequence_model(
    cell: Cell,
    *,
    output_size: int,
    num_layers: int = 1,
    bidirectional_layers: bool = False,
    per_step: bool = False,
    vocab_size: int | None = None,
    embedding_size: int | None = None,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    state_dropout: float = 0.0,
    checkpoint_every: int | None = None,
    fused: bool | None = None,
) -> Model:
    """Builds a sequence model around `cell`.

    Args:
      cell: the cell of every layer, e.g. `rnnjax.lstm(64)`.
      output_size: outputs per prediction (regression targets or class logits).
      num_layers: recurrent layers stacked; each reads the previous one's outputs.
      bidirectional_layers: make every layer bidirectional (features double).
      per_step: output at every step `(B, T, O)` instead of once per sequence `(B, O)`.
      vocab_size: read integer tokens `(B, T)` through an embedding of this many rows.
      embedding_size: embedding width for token inputs (default 32).
      dropout: dropout rate between recurrent layers.
      input_dropout: variational dropout rate on each layer's inputs.
      state_dropout: variational dropout rate on the recurrent hidden state.
      checkpoint_every: gradient checkpointing in every layer over chunks of
        this many steps (see `rnnjax.unroll`): training memory grows with about
        `T / checkpoint_every + checkpoint_every` steps instead of `T`.
      fused: run every layer on its cell's fast path (True; `Cell.sequence`), on the
        reference path (False), or on its fast path where it has one (None: see
        `rnnjax.unroll`). Variational dropout (`input_dropout`, `state_dropout`)
        changes the step, so while training with it the layers scan their steps.

    Returns:
      A `Model`. `apply(params, xs, *, lengths=None, key=None, train=False)`:
      `xs` is `(B, T, I)` float (or `(B, T)` int tokens), `lengths` `(B,)` marks
      right padding, and `key` is required when `train=True` and any dropout
      rate is positive.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> from rnnjax.models import sequence_model
      >>> model = sequence_model(rnnjax.gru(16), output_size=3, num_layers=2)
      >>> params = model.init(jax.random.key(0), input_size=4)
      >>> model.apply(params, jnp.ones((5, 7, 4))).shape
      (5, 3)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell must be an rnnjax.Cell, got {type(cell).__name__}")
    output_size = _checks.positive_int("output_size", output_size)
    num_layers = _checks.positive_int("num_layers", num_layers)
    dropout = _rate("dropout", dropout)
    input_dropout = _rate("input_dropout", input_dropout)
    state_dropout = _rate("state_dropout", state_dropout)
    if vocab_size is not None:
        vocab_size = _checks.positive_int("vocab_size", vocab_size)
        embedding_size = _checks.positive_int("embedding_size", embedding_size or 32)
    elif embedding_size is not None:
        raise ValueError("embedding_size needs vocab_size: embeddings are for token inputs")
    uses_dropout = dropout > 0 or input_dropout > 0 or state_dropout > 0
    if checkpoint_every is not None:
        checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)

    def make_layer(layer_cell: Cell, backward_cell: Cell | None = None) -> Any:
        if bidirectional_layers:
            return bidirectional(layer_cell, backward_cell)
        return recurrent(layer_cell)

    def init(key: Array, input_size: int | None = None, dtype: Any = None) -> ModelParams:
        k_embed, k_layers, k_readout = jax.random.split(key, 3)
        embedding = None
        if vocab_size is not None:
            if input_size is not None:
                raise ValueError(
                    f"input_size must be None for a token model (its inputs are "
                    f"{embedding_size}-wide embeddings), got {input_size}"
                )
            draw_dtype = jnp.promote_types(dtype or jnp.result_type(float), jnp.float32)
            embedding = jax.random.normal(k_embed, (vocab_size, embedding_size), draw_dtype)
            embedding = embedding.astype(dtype or jnp.result_type(float))
            input_size = embedding_size
        input_size = _checks.positive_int("input_size", input_size)
        layer = make_layer(cell)
        layers = []
        for layer_key in jax.random.split(k_layers, num_layers):
            layer_params = layer.init(layer_key, input_size, dtype)
            input_size = output_size_of(layer, layer_params, input_size)
            layers.append(layer_params)
        reference = jax.tree.leaves(layers)[0]
        w = jax.nn.initializers.lecun_normal()(
            k_readout, (input_size, output_size), jnp.promote_types(reference.dtype, jnp.float32)
        ).astype(reference.dtype)
        return ModelParams(embedding, tuple(layers), Dense(w, jnp.zeros(output_size, w.dtype)))

    def _readout(params: ModelParams, features: Array) -> Array:
        w, b = params.readout
        return features @ w + b.reshape((1,) * (features.ndim - 1) + (-1,))

    def _embed(params: ModelParams, tokens: Array) -> Array:
        return jnp.take(params.embedding, tokens, axis=0)

    def apply(
        params: ModelParams,
        xs: Array,
        *,
        lengths: Array | None = None,
        key: Array | None = None,
        train: bool = False,
    ) -> Array:
        xs = jnp.asarray(xs)
        if vocab_size is not None:
            if xs.ndim != 2 or not jnp.issubdtype(xs.dtype, jnp.integer):
                raise ValueError(
                    f"xs must be integer tokens (B, T) for a token model, got "
                    f"{xs.dtype} {_checks.shape_str(xs.shape)}"
                )
            xs = _embed(params, xs)
        elif xs.ndim != 3:
            raise ValueError(f"xs must have shape (B, T, I), got {_checks.shape_str(xs.shape)}")
        if len(params.layers) != num_layers:
            raise ValueError(f"params must hold {num_layers} layers, got {len(params.layers)}")
        dropping = train and uses_dropout
        if dropping and key is None:
            raise ValueError("key is required when train=True and a dropout rate is positive")
        layer_keys = jax.random.split(key, num_layers) if dropping else [None] * num_layers
        hs = xs
        for index, (layer_params, layer_key) in enumerate(zip(params.layers, layer_keys)):
            layer, layer_fused = make_layer(cell), fused
            if dropping and (input_dropout > 0 or state_dropout > 0):
                layer = make_layer(*_masked_cells(layer_key, layer_params, hs.shape))
                layer_fused = None if fused else fused  # masked steps have no fast path
            hs, _ = layer.apply(
                layer_params,
                hs,
                lengths=lengths,
                checkpoint_every=checkpoint_every,
                fused=layer_fused,
            )
            if dropping and dropout > 0 and index < num_layers - 1:
                hs = _dropout(jax.random.fold_in(layer_key, 3), dropout, hs)
        features = hs if per_step else _last_features(hs, lengths)
        return _readout(params, features)

    def _masked_cells(layer_key: Array, layer_params: Any, xs_shape: tuple) -> list[Cell]:
        directions = layer_params if bidirectional_layers else Directions(layer_params, None)
        cells = []
        for k, params in zip(jax.random.split(layer_key, 2), directions):
            if params is None:
                continue
            k_input, k_state = jax.random.split(k)
            batch = xs_shape[0]
            dtype = jnp.result_type(*jax.tree.leaves(params))
            state = jax.eval_shape(lambda p, b=batch: cell.initial_state(p, (b,)), params)
            hidden = _mask_hidden(state, None) if state_dropout > 0 else None
            input_mask = _dropout(k_input, input_dropout, jnp.ones((batch, xs_shape[-1]), dtype))
            state_mask = (
                _dropout(k_state, state_dropout, jnp.ones(hidden.shape, dtype))
                if hidden is not None
                else None
            )
            cells.append(_variational(cell, input_mask, state_mask))
        return cells

    def _last_features(hs: Array, lengths: Array | None) -> Array:
        """Each sequence's output at its last valid step; for a bidirectional layer the
        backward half is read at step 0, where the backward pass ends."""
        last = hs.shape[1] - 1 if lengths is None else jnp.asarray(lengths) - 1
        index = jnp.broadcast_to(jnp.asarray(last), hs.shape[:1])
        at_end = jnp.take_along_axis(hs, index[:, None, None], axis=1)[:, 0]
        if not bidirectional_layers:
            return at_end
        half = hs.shape[-1] // 2
        return jnp.concatenate([at_end[:, :half], hs[:, 0, half:]], axis=-1)

    def _check_generation(params: ModelParams, prompt: Array) -> None:
        if not per_step or bidirectional_layers:
            raise ValueError(
                "generate needs a left-to-right model with an output per step "
                "(per_step=True, bidirectional_layers=False)"
            )
        if vocab_size is not None:
            if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
                raise ValueError(
                    f"prompt must be integer tokens (B, P), got {prompt.dtype} "
                    f"{_checks.shape_str(prompt.shape)}"
                )
        elif prompt.ndim != 3 or prompt.shape[-1] != params.readout.w.shape[1]:
            raise ValueError(
                f"prompt must have shape (B, P, {params.readout.w.shape[1]}) so that each "
                f"output can be fed back as the next input, got {_checks.shape_str(prompt.shape)}"
            )

    @functools.partial(jax.jit, static_argnames=("num_steps", "top_k"))
    def _generate(
        params: ModelParams,
        prompt: Array,
        key: Array,
        temperature: Array,
        num_steps: int,
        top_k: int | None,
    ) -> Array:
        hs = prompt if vocab_size is None else _embed(params, prompt)
        states = []
        for layer_params in params.layers:
            hs, final = recurrent(cell).apply(layer_params, hs)
            states.append(final)
        outputs = _readout(params, hs[:, -1])

        def choose(step_key: Array, outputs: Array) -> tuple[Array, Array]:
            """The emitted value and the next input vector."""
            if vocab_size is None:
                return outputs, outputs
            logits = outputs
            if top_k is not None:
                kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
                logits = jnp.where(logits < kth, -jnp.inf, logits)
            scaled = logits / jnp.where(temperature > 0, temperature, 1).astype(logits.dtype)
            sampled = jax.random.categorical(step_key, scaled, axis=-1)
            token = jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1))
            return token, _embed(params, token)

        def body(carry: tuple, step_key: Array) -> tuple[tuple, Array]:
            states, outputs = carry
            emitted, x = choose(step_key, outputs)
            new_states = []
            for layer_params, state in zip(params.layers, states):
                state, x = cell.step(layer_params, state, x)
                new_states.append(state)
            return (tuple(new_states), _readout(params, x)), emitted

        keys = jax.random.split(key, num_steps)
        _, emitted = jax.lax.scan(body, (tuple(states), outputs), keys)
        return jnp.swapaxes(emitted, 0, 1)

    def generate(
        params: ModelParams,
        prompt: Array,
        *,
        num_steps: int,
        key: Array | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> Array:
        prompt = jnp.asarray(prompt)
        _check_generation(params, prompt)
        num_steps = _checks.positive_int("num_steps", num_steps)
        if vocab_size is not None:
            if not temperature >= 0:
                raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
            if top_k is not None and not 1 <= _checks.positive_int("top_k", top_k) <= vocab_size:
                raise ValueError(f"top_k must be in 1..{vocab_size}, got {top_k}")
            if key is None and temperature > 0:
                raise ValueError("key is required to sample with temperature > 0")
        key = jax.random.key(0) if key is None else key
        return _generate(params, prompt, key, jnp.asarray(temperature), num_steps, top_k)

    return Model(init, apply, generate)
