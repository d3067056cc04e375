"""Parity with PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`, weights converted by
`rnnjax.interop.from_torch`.

Skipped when torch is not installed (it is an oracle here, never a dependency).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax

torch = pytest.importorskip("torch")

TORCH_MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


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

    layer, params = rnnjax.interop.from_torch(module)  # the documented conversion

    def loss(xs):
        return jnp.sum(layer.apply(params, xs)[0] ** 2)

    hs, _ = layer.apply(params, jnp.asarray(xs))
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        jax.grad(loss)(jnp.asarray(xs)), xs_torch.grad.numpy(), rtol=1e-11, atol=1e-12
    )
