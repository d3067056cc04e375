"""Checkpoints: round trips, readable without rnnjax, atomic, and loud about damage."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import checkpoint, train
from rnnjax.checkpoint import CheckpointError
from rnnjax.models import sequence_model


def a_state():
    model = sequence_model(rnnjax.lstm(4), output_size=1, num_layers=2)
    params = model.init(jax.random.key(0), 2)
    optimizer = train.make_optimizer("adam")
    state = train.init_state(params, optimizer, jax.random.key(5))
    return state._replace(step=jnp.asarray(17, jnp.int32))


def test_round_trip_with_config_and_key(tmp_path):
    state = a_state()
    path = checkpoint.save(tmp_path / "c.npz", state, {"cell": "lstm", "hidden": 4})
    restored = checkpoint.load(path, a_state()._replace(step=jnp.zeros((), jnp.int32)))
    jax.tree.map(
        np.testing.assert_array_equal,
        jax.tree.map(np.asarray, restored._replace(key=None)),
        jax.tree.map(np.asarray, state._replace(key=None)),
    )
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))
    assert checkpoint.load_config(path) == {"cell": "lstm", "hidden": 4}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_every_dtype_round_trips(tmp_path, dtype):
    """A train state in each compute dtype, with integer, boolean and key leaves beside it."""
    cell = rnnjax.lstm(3)
    params = cell.init(jax.random.key(0), 2, dtype)
    state = train.init_state(params, train.make_optimizer("adam"), jax.random.key(1))
    tree = {
        "state": state,
        "counts": jnp.arange(4, dtype=jnp.int64),
        "mask": jnp.array([True, False]),
        "keys": jax.random.split(jax.random.key(2), 3),
    }
    path = checkpoint.save(tmp_path / "c.npz", tree)
    restored = checkpoint.load(path, tree)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(tree)):
        if jnp.issubdtype(want.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    if dtype == jnp.bfloat16:  # plain NumPy reads the raw values, as the docs say
        with np.load(path) as file:
            raw = file["['state'].params.w_hh"]
        as_float32 = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(as_float32, np.asarray(params.w_hh, np.float32))


def test_a_non_finite_bfloat16_array_is_refused(tmp_path):
    tree = {"w": jnp.array([1.0, jnp.inf], jnp.bfloat16)}
    path = checkpoint.save(tmp_path / "c.npz", tree)
    with pytest.raises(checkpoint.CheckpointError, match="NaN or infinite"):
        checkpoint.load(path, tree)


def test_readable_with_plain_numpy(tmp_path):
    path = checkpoint.save(tmp_path / "c.npz", a_state(), {"task": "adding"})
    with np.load(path, allow_pickle=False) as file:
        assert json.loads(bytes(file["__config__"])) == {"task": "adding"}
        assert file[".params.layers[0].w_hh"].shape == (4, 16)
        assert int(file[".step"]) == 17


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, a_state(), {"version": 1})
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, a_state(), {"version": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_truncated_and_corrupted_files_are_reported(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, a_state())
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load(truncated, a_state())
    corrupted = tmp_path / "corrupted.npz"
    middle = len(data) // 3
    corrupted.write_bytes(
        data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
    )
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        checkpoint.load(corrupted, a_state())
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.npz", a_state())


def test_structure_shape_dtype_and_finiteness_are_checked(tmp_path):
    state = a_state()
    path = checkpoint.save(tmp_path / "c.npz", state)
    other_model = sequence_model(rnnjax.lstm(5), output_size=1, num_layers=2)
    other_params = other_model.init(jax.random.key(0), 2)
    wider = train.init_state(other_params, train.make_optimizer("adam"), jax.random.key(0))
    with pytest.raises(
        CheckpointError,
        match=r"\.params\.layers\[0\]\.w_ih should be float64\[2, 20\], got float64\[2, 16\]",
    ):
        checkpoint.load(path, wider)
    shallower = sequence_model(rnnjax.lstm(4), output_size=1).init(jax.random.key(0), 2)
    with pytest.raises(CheckpointError, match="does not match the expected state: missing"):
        checkpoint.load(path, train.init_state(shallower, train.make_optimizer("adam"), state.key))
    as_float32 = jax.tree.map(
        lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, state._replace(key=None)
    )._replace(key=state.key)
    with pytest.raises(CheckpointError, match="should be float32"):
        checkpoint.load(path, as_float32)
    broken = state._replace(
        params=state.params._replace(readout=state.params.readout._replace(b=jnp.array([jnp.nan])))
    )
    checkpoint.save(path, broken)
    with pytest.raises(CheckpointError, match=r"\.params\.readout\.b holds NaN or infinite values"):
        checkpoint.load(path, state)
