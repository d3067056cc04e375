"""Parity with PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`, with converted weights.

Skipped when torch is not installed (it is an oracle here, never a dependency).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

from helpers import make_cell

torch = pytest.importorskip("torch")

TORCH_MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def params_from_torch(name, module):
    """The documented conversion: transpose the weights, sum the biases (GRU keeps b_hn)."""
    w_ih = jnp.asarray(module.weight_ih_l0.detach().numpy().T)
    w_hh = jnp.asarray(module.weight_hh_l0.detach().numpy().T)
    b_ih = module.bias_ih_l0.detach().numpy()
    b_hh = module.bias_hh_l0.detach().numpy()
    if name == "gru":
        hidden = w_hh.shape[0]
        b = b_ih + np.concatenate([b_hh[: 2 * hidden], np.zeros(hidden)])
        return rnnjax.GRUParams(w_ih, w_hh, jnp.asarray(b), jnp.asarray(b_hh[2 * hidden :]))
    params_type = rnnjax.LSTMParams if name == "lstm" else rnnjax.RNNParams
    return params_type(w_ih, w_hh, jnp.asarray(b_ih + b_hh))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_outputs_and_gradients_match_pytorch(cell_name, bidirectional):
    batch, steps, inputs, hidden = 3, 9, 4, 5
    torch.manual_seed(0)
    module = getattr(torch.nn, TORCH_MODULES[cell_name])(
        inputs, hidden, batch_first=True, bidirectional=bidirectional
    ).double()
    xs = np.random.default_rng(0).normal(size=(batch, steps, inputs))

    xs_torch = torch.tensor(xs, requires_grad=True)
    out, _ = module(xs_torch)
    (out**2).sum().backward()

    cell = make_cell(cell_name, hidden)
    if bidirectional:
        reverse = {
            k.removesuffix("_reverse"): v
            for k, v in module.named_parameters()
            if k.endswith("_reverse")
        }
        backward_module = type("Reverse", (), reverse)
        params = rnnjax.Directions(
            params_from_torch(cell_name, module), params_from_torch(cell_name, backward_module)
        )
        layer = rnnjax.bidirectional(cell)
    else:
        params = params_from_torch(cell_name, module)
        layer = rnnjax.recurrent(cell)

    def loss(xs):
        return jnp.sum(layer.apply(params, xs)[0] ** 2)

    hs, _ = layer.apply(params, jnp.asarray(xs))
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        jax.grad(loss)(jnp.asarray(xs)), xs_torch.grad.numpy(), rtol=1e-11, atol=1e-12
    )
