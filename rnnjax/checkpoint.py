"""Checkpoints: a training state and its configuration in one `.npz` file.

The format is NumPy's `.npz` (a zip of `.npy` arrays), loaded with
`allow_pickle=False`: nothing in a checkpoint can run code, and any NumPy reads
it without rnnjax::

    import json, numpy as np
    with np.load("run/checkpoint.npz") as f:
        config = json.loads(bytes(f["__config__"]))
        w_hh = f[".params.layers[0].w_hh"]

Every array of the state is stored under its pytree path; PRNG keys as their raw
`uint32` data; the configuration as UTF-8 JSON bytes under `__config__`. Files
are written atomically (a temporary file in the same folder, then a rename), so
a crash never leaves a half-written checkpoint in place of a good one.

Every dtype rnnjax computes in round-trips: float32, float64, integers, booleans, PRNG
keys and bfloat16. NumPy has no bfloat16 of its own, so `.npy` stores a bfloat16 array
as raw 2-byte values (dtype `|V2`); `load` views them as bfloat16 again, and plain
NumPy reads them as `f[name].view(ml_dtypes.bfloat16)` (`ml_dtypes` comes with JAX),
or without it as float32: `(f[name].view(np.uint16).astype(np.uint32) << 16).view(np.float32)`.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _files

_CONFIG = "__config__"
_FORMAT = "__format__"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupted, or does not fit the expected state."""


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key)


def save(path: str | os.PathLike, state: Any, config: dict | None = None) -> str:
    """Writes `state` (any pytree of arrays) and a JSON-able `config` to `path`, atomically.

    Returns the path written.
    """
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    for name, leaf in _named_leaves(state):
        arrays[name] = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
    arrays[_CONFIG] = np.frombuffer(json.dumps(config or {}).encode(), dtype=np.uint8)
    arrays[_FORMAT] = np.asarray(FORMAT_VERSION)
    _files.write_atomically(path, lambda file: np.savez(file, **arrays))
    return path


def _open(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as file:
            return {name: file[name] for name in file.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted and cannot be read ({error})"
        ) from None


def load_config(path: str | os.PathLike) -> dict:
    """The configuration stored with a checkpoint."""
    arrays = _open(path)
    if _CONFIG not in arrays:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} has no configuration")
    return json.loads(arrays[_CONFIG].tobytes().decode())


def load(path: str | os.PathLike, template: Any) -> Any:
    """Reads a state saved by `save`, checked against `template` (a state of the same run).

    The file must hold exactly the template's arrays, each with the template's
    shape and dtype, and every float array must be finite.

    Raises:
      CheckpointError: naming the file and the first array that does not fit.
    """
    path = os.fspath(path)
    arrays = _open(path)
    named = _named_leaves(template)
    expected = {name for name, _ in named}
    stored = set(arrays) - {_CONFIG, _FORMAT}
    if stored != expected:
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        raise CheckpointError(
            f"checkpoint {path!r} does not match the expected state: missing {missing}, "
            f"unexpected {extra}"
        )
    leaves = []
    for name, leaf in named:
        array = arrays[name]
        want = jax.random.key_data(leaf) if _is_key(leaf) else jnp.asarray(leaf)
        if array.dtype.kind == "V" and array.dtype.itemsize == want.dtype.itemsize:
            array = array.view(want.dtype)  # bfloat16 and other dtypes NumPy stores raw
        if array.shape != want.shape or array.dtype != want.dtype:
            raise CheckpointError(
                f"checkpoint {path!r}: {name} should be {want.dtype}{list(want.shape)}, "
                f"got {array.dtype}{list(array.shape)}"
            )
        if jnp.issubdtype(array.dtype, jnp.floating):
            # NumPy's isfinite knows its own floats; the others (bfloat16) fit in float32.
            values = array if array.dtype.kind == "f" else array.astype(np.float32)
        if jnp.issubdtype(array.dtype, jnp.floating) and not np.all(np.isfinite(values)):
            raise CheckpointError(f"checkpoint {path!r}: {name} holds NaN or infinite values")
        if _is_key(leaf):
            leaves.append(jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf)))
        else:
            leaves.append(jnp.asarray(array))
    return jax.tree.unflatten(jax.tree.structure(template), leaves)
