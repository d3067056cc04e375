"""`rnnjax.interop`: PyTorch modules of every shape in and out, equal outputs in float64."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import interop

torch = pytest.importorskip("torch")


def torch_outputs(module, xs):
    with torch.no_grad():
        return module(torch.from_numpy(xs))[0].numpy()


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True)),
        ("GRU", dict(num_layers=2, batch_first=False)),
        ("RNN", dict(nonlinearity="relu", bias=False, bidirectional=True, batch_first=True)),
    ],
)
def test_from_torch_matches_the_module(kind, options):
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, **options).double()
    shape = (4, 7, 3) if options.get("batch_first") else (7, 4, 3)
    xs = np.random.default_rng(1).normal(size=shape)
    layer, params = interop.from_torch(module)
    hs, _ = layer.apply(params, jnp.asarray(xs))  # in the module's own layout
    assert hs.dtype == jnp.float64 and len(params) == module.num_layers
    np.testing.assert_allclose(hs, torch_outputs(module, xs), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_to_torch_writes_rnnjax_parameters_into_a_module(kind):
    cell = rnnjax.make_cell(kind.lower(), 4)
    layer = rnnjax.stack(rnnjax.bidirectional(cell), cell)
    params = layer.init(jax.random.key(0), 3, jnp.float64)
    params = (params[0], params[1])
    module = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    with pytest.raises(ValueError, match=r"needs Directions"):  # layer 1: one direction only
        interop.to_torch(params, module.double())
    twin = rnnjax.stack(rnnjax.bidirectional(cell), rnnjax.bidirectional(cell))
    params = twin.init(jax.random.key(0), 3, jnp.float64)
    module = interop.to_torch(params, module.double())
    xs = np.random.default_rng(2).normal(size=(2, 6, 3))
    np.testing.assert_allclose(
        twin.apply(params, jnp.asarray(xs))[0], torch_outputs(module, xs), rtol=1e-12, atol=1e-13
    )
    _, params_back = interop.from_torch(module)
    for got, want in zip(jax.tree.leaves(params_back), jax.tree.leaves(params)):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)


def test_errors_name_what_does_not_fit():
    with pytest.raises(TypeError, match=r"nn.RNN, nn.LSTM or nn.GRU, got Linear"):
        interop.from_torch(torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match="proj_size=2"):
        interop.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    module = torch.nn.GRU(3, 4, bias=False)
    params = rnnjax.stack(rnnjax.gru(4)).init(jax.random.key(0), 3)
    params = (params[0]._replace(b=params[0].b + 1.0),)
    with pytest.raises(ValueError, match="no biases"):
        interop.to_torch(params, module)


def test_import_rnnjax_does_not_load_torch():
    code = "import sys, rnnjax; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
