"""PyTorch interop: `nn.RNN`, `nn.LSTM` and `nn.GRU` weights in and out of rnnjax.

rnnjax stores weights `(in, out)` and sums PyTorch's two bias vectors (the GRU keeps
the candidate block's recurrent bias apart as `b_hn`, because its reset gate
multiplies it); the gate blocks are in PyTorch's order. So for layer `l` and
direction suffix `s` (`""`, or `"_reverse"` for the backward direction)::

    w_ih = weight_ih_l{l}{s}.T        w_hh = weight_hh_l{l}{s}.T
    b    = bias_ih_l{l}{s} + bias_hh_l{l}{s}          (RNN, LSTM)
    b    = bias_ih_l{l}{s} + [bias_hh_l{l}{s}[:2H], 0],  b_hn = bias_hh_l{l}{s}[2H:]   (GRU)

`from_torch(module)` returns an rnnjax layer (`rnnjax.stack` of the module's layers,
each `rnnjax.bidirectional` when the module is) and its parameters, in the module's
dtype; `to_torch(params, module)` writes rnnjax parameters into a module of the same
architecture. `import rnnjax` never loads PyTorch: `from_torch` reads the module's
tensors through their own methods, and `to_torch` imports `torch` when it writes.

Example (with PyTorch installed)::

    lstm = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, batch_first=True)
    layer, params = rnnjax.interop.from_torch(lstm)
    hs, _ = layer.apply(params, xs)            # equals lstm(torch.from_numpy(xs))[0]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from rnnjax import zoo
from rnnjax.cells import Cell, GRUParams, LSTMParams, RNNParams
from rnnjax.layers import Directions, Layer, bidirectional, stack

_KINDS = {"RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
_PARAMS = {"rnn": RNNParams, "lstm": LSTMParams, "gru": GRUParams}


class TorchLayout(NamedTuple):
    """What `from_torch` read from a module, beside its weights.

    Attributes:
      cell: `"rnn"`, `"lstm"` or `"gru"`.
      input_size: features per input step.
      hidden_size: units per direction.
      num_layers: stacked layers.
      bidirectional: whether every layer runs both directions.
      batch_first: whether the module reads `(B, T, I)` (else `(T, B, I)`).
      nonlinearity: the RNN's activation, `"tanh"` or `"relu"` (None for LSTM and GRU).
    """

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    nonlinearity: str | None


def _layout(module: Any) -> TorchLayout:
    kind = _KINDS.get(type(module).__name__)
    if kind is None:
        raise TypeError(
            f"module must be a torch.nn.RNN, nn.LSTM or nn.GRU, got {type(module).__name__}"
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(f"an LSTM with proj_size={module.proj_size} has no rnnjax equivalent")
    return TorchLayout(
        cell=kind,
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bidirectional=bool(module.bidirectional),
        batch_first=bool(module.batch_first),
        nonlinearity=getattr(module, "nonlinearity", None) if kind == "rnn" else None,
    )


def _cell(layout: TorchLayout) -> Cell:
    if layout.cell == "rnn":
        return zoo.rnn(layout.hidden_size, layout.nonlinearity)
    if layout.cell == "lstm":
        return zoo.lstm(layout.hidden_size, forget_bias=0.0)
    return zoo.gru(layout.hidden_size)


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _direction_params(module: Any, layout: TorchLayout, name: str) -> Any:
    """One direction of one layer, `name` the suffix `l{l}` or `l{l}_reverse`."""
    w_ih = _numpy(getattr(module, f"weight_ih_{name}")).T
    w_hh = _numpy(getattr(module, f"weight_hh_{name}")).T
    width = w_hh.shape[1]
    if module.bias:
        bias_ih = _numpy(getattr(module, f"bias_ih_{name}"))
        bias_hh = _numpy(getattr(module, f"bias_hh_{name}"))
    else:
        bias_ih = bias_hh = np.zeros(width, w_hh.dtype)
    if layout.cell != "gru":
        return _PARAMS[layout.cell](
            jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(bias_ih + bias_hh)
        )
    hidden = layout.hidden_size
    b = bias_ih + np.concatenate([bias_hh[: 2 * hidden], np.zeros(hidden, bias_hh.dtype)])
    return GRUParams(
        jnp.asarray(w_ih), jnp.asarray(w_hh), jnp.asarray(b), jnp.asarray(bias_hh[2 * hidden :])
    )


def _batch_layout_layer(inner: Layer, batch_first: bool) -> Layer:
    """`inner` whose `apply` reads the module's layout unless told otherwise."""

    def apply(params: Any, xs: Any, *, time_major: bool | None = None, **options: Any) -> Any:
        time_major = (not batch_first) if time_major is None else time_major
        return inner.apply(params, xs, time_major=time_major, **options)

    return Layer(inner.init, inner.initial_state, apply)


def from_torch(module: Any) -> tuple[Layer, tuple[Any, ...]]:
    """An rnnjax layer and its parameters that compute what the PyTorch `module` computes.

    Args:
      module: a `torch.nn.RNN` (tanh or relu), `nn.LSTM` (without `proj_size`) or
        `nn.GRU`, with any `num_layers`, `bidirectional`, `batch_first` and `bias`.

    Returns:
      `(layer, params)`: `layer` is `rnnjax.stack` of `num_layers` layers, each
      `rnnjax.bidirectional` for a bidirectional module; `params` is a tuple with one
      entry per layer (`Directions(forward, backward)` when bidirectional), arrays in
      the module's dtype. `layer.apply(params, xs)` reads `xs` in the module's layout
      (`(B, T, I)` when `batch_first`, else `(T, B, I)`; pass `time_major` to choose)
      and returns `(hs, final_states)`; `hs` equals the module's `output`. Dropout
      between layers (the module's `dropout`, active only in training) is not carried
      over. A module with `bias=False` maps to zero biases, which rnnjax's cells keep
      as parameters (mask their updates to keep them at zero).

    Raises:
      TypeError: `module` is not one of the three. ValueError: an LSTM with
        `proj_size`.
    """
    layout = _layout(module)
    cell = _cell(layout)
    layers, params = [], []
    for index in range(layout.num_layers):
        forward = _direction_params(module, layout, f"l{index}")
        if layout.bidirectional:
            backward = _direction_params(module, layout, f"l{index}_reverse")
            layers.append(bidirectional(cell))
            params.append(Directions(forward, backward))
        else:
            layers.append(cell)
            params.append(forward)
    return _batch_layout_layer(stack(*layers), layout.batch_first), tuple(params)


def _write(tensor: Any, value: np.ndarray, name: str) -> None:
    import torch  # only here: `to_torch` is given a module, so PyTorch is installed

    if tuple(tensor.shape) != value.shape:
        raise ValueError(
            f"{name} of the module has shape {tuple(tensor.shape)}, the rnnjax parameters "
            f"give {value.shape}: the module's architecture differs"
        )
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.array(value, copy=True)).to(tensor.dtype))


def to_torch(params: Any, module: Any) -> Any:
    """Writes rnnjax parameters (as `from_torch` returns them) into `module`, in place.

    The module must have the architecture the parameters describe (cell type,
    sizes, layers, directions). Each rnnjax bias goes to `bias_ih` with `bias_hh`
    set to zero (the GRU's `b_hn` to `bias_hh`'s candidate block), which gives the
    same sums. A module with `bias=False` takes only parameters whose biases are zero.

    Returns:
      `module`, whose outputs now equal the rnnjax layer's.

    Raises:
      ValueError: the parameters do not fit the module, or nonzero biases meet a
        module without them.
    """
    layout = _layout(module)
    params = tuple(params)
    if len(params) != layout.num_layers:
        raise ValueError(f"params hold {len(params)} layers, the module {layout.num_layers}")
    expected = _PARAMS[layout.cell]
    for index, layer_params in enumerate(params):
        if layout.bidirectional and not isinstance(layer_params, Directions):
            raise ValueError(
                f"layer {index} holds {type(layer_params).__name__}, the bidirectional module "
                "needs Directions(forward, backward)"
            )
        directions = (
            [(layer_params.forward, ""), (layer_params.backward, "_reverse")]
            if layout.bidirectional
            else [(layer_params, "")]
        )
        for direction, suffix in directions:
            if not isinstance(direction, expected):
                raise ValueError(
                    f"layer {index} holds {type(direction).__name__}, the module needs "
                    f"{expected.__name__}"
                )
            name = f"l{index}{suffix}"
            _write(
                getattr(module, f"weight_ih_{name}"),
                np.asarray(direction.w_ih).T,
                f"weight_ih_{name}",
            )
            _write(
                getattr(module, f"weight_hh_{name}"),
                np.asarray(direction.w_hh).T,
                f"weight_hh_{name}",
            )
            b = np.asarray(direction.b)
            bias_hh = np.zeros_like(b)
            if layout.cell == "gru":
                bias_hh[2 * layout.hidden_size :] = np.asarray(direction.b_hn)
            if module.bias:
                _write(getattr(module, f"bias_ih_{name}"), b, f"bias_ih_{name}")
                _write(getattr(module, f"bias_hh_{name}"), bias_hh, f"bias_hh_{name}")
            elif np.any(b) or np.any(bias_hh):
                raise ValueError(f"the module has no biases, but layer {name}'s are not zero")
    return module
