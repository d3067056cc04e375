"""Data parallelism over many devices, CPU cores and hosts, on JAX's own sharding.

Every mini-batch is split along its batch axis over a one-axis device mesh
(`jax.sharding.Mesh` with the axis `"batch"`); parameters and optimizer state are
replicated on every device. With one device nothing is sharded and nothing costs
extra.

The recurrence itself runs split by hand: under a mesh set with `jax.set_mesh`
(`train.make_train_step(..., mesh=mesh)` sets it), `rnnjax.unroll` runs the whole
loop on each device's share of the sequences with `jax.shard_map`, with no
communication between time steps, and the parameters' gradients are summed over
the devices once, after the loop. (Left to XLA's automatic partitioning, the
gradient sum runs inside the backward loop, at every time step, and two devices
can train slower than one.) The loss and the optimizer see the global batch as before, so any loss,
masked means included, is the one-device loss, up to the order of the gradient
sums. It works under `jax.jit` and eagerly, for `jax.grad`, `jax.jvp` and `vmap`.

On a CPU, the devices can be the cores: `use_cpu_cores()` (called first thing)
gives JAX one CPU device per core, and each device then runs its share of the
batch on its own core. XLA runs the small matrix product of each recurrent step
on one core whatever the machine has, so this is how rnnjax uses a second core.

Several processes or hosts: `rnnjax.distributed.initialize` (or `rnnjax train
--coordinator HOST:PORT --num-processes N --process-id I`) first, in every process;
the mesh then spans every process's devices (`jax.devices()`), each process computes
its own slice of every global batch inside the compiled step, and the batches, being
functions of `(key, step)`, are the same on every host. To feed batches from the host
instead, give each process its own shard with `process_shard` and assemble the global
array with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def use_cpu_cores(count: int | None = None) -> int:
    """Makes JAX's CPU backend expose `count` devices, one per core, and returns `count`.

    Call it first thing, before JAX's first computation (JAX fixes its devices
    then). A mesh over these devices (`device_mesh(count)`, or `rnnjax train
    --devices N`) then splits each batch over the cores. It changes only the CPU
    backend, so it is harmless on a machine whose default devices are GPUs.

    Args:
      count: how many CPU devices; by default the number of cores this process
        may run on (`os.sched_getaffinity`, or `os.cpu_count()`).

    Raises:
      RuntimeError: JAX has already started its backends with another count.
    """
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
        present = jax.local_device_count("cpu")
        if present != count:
            raise RuntimeError(
                f"JAX already started with {present} CPU device(s); call "
                f"rnnjax.parallel.use_cpu_cores({count}) before JAX's first computation"
            ) from None
    return count


def device_mesh(devices: int | Sequence[Any] | None = None) -> Mesh | None:
    """A one-axis mesh over `devices` (a count, or a list of `jax.Device`); `None` for one.

    Args:
      devices: how many of `jax.devices()` to use (the first ones), or the devices
        themselves; `None` or 1 means a single device, no mesh.

    Raises:
      ValueError: a count below 1 or above the number of devices present.
    """
    if devices is None:
        return None
    if isinstance(devices, int) and not isinstance(devices, bool):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            hint = ""
            if available[0].platform == "cpu":
                hint = "; for one CPU device per core call rnnjax.parallel.use_cpu_cores() first"
            raise ValueError(
                f"devices must be between 1 and the {len(available)} device(s) present "
                f"({available[0].platform}), got {devices}{hint}"
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must name at least one device, got an empty list")
    if len(chosen) == 1:
        return None
    return Mesh(np.asarray(chosen), (BATCH_AXIS,))


def ambient_batch_mesh(batch_size: int) -> Any:
    """The mesh set with `jax.set_mesh` if it splits a batch of `batch_size`, else `None`.

    `None` when no mesh is set, when it has no `"batch"` axis or only one device
    on it, when `batch_size` does not divide by that count (the computation then
    runs unsplit, with the same result), and inside a `jax.shard_map` that is
    already manual over `"batch"`.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or BATCH_AXIS not in mesh.axis_names or BATCH_AXIS in mesh.manual_axes:
        return None
    count = mesh.shape[BATCH_AXIS]
    if count == 1 or batch_size % count:
        return None
    return mesh


def batch_spec(axis: int | None = 0) -> PartitionSpec:
    """The spec of an array split along `axis` over the `"batch"` axis (`None`: whole)."""
    if axis is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * axis), BATCH_AXIS)


def on_mesh(fn: Callable, mesh: Mesh | None) -> Callable:
    """`fn` called with `mesh` set (`jax.set_mesh`), so that `rnnjax.unroll` splits the
    batch over it; `fn` itself when `mesh` is `None`."""
    if mesh is None:
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        with jax.set_mesh(mesh):
            return fn(*args, **kwargs)

    return call


def collectives_in_loops(compiled_text: str) -> int:
    """How many collective operations (all-reduce, all-gather, reduce-scatter) sit in the
    bodies of while loops of a compiled computation, from `jitted.lower(...).compile().as_text()`.

    A recurrent training step split well over devices has none: its devices talk
    once per step, not once per time step.
    """
    bodies = set(re.findall(r"body=%([\w.\-]+)", compiled_text))
    collective = re.compile(r"(all-reduce|all-gather|reduce-scatter)(-start)?\(")
    count = 0
    for computation in re.split(r"\n(?=%|ENTRY)", compiled_text):
        if computation.split(" ", 1)[0].lstrip("%") in bodies:
            count += len(collective.findall(computation))
    return count


def check_batch_size(batch_size: int, mesh: Mesh | None) -> None:
    """Raises unless `batch_size` divides evenly over the mesh's devices."""
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of devices "
            f"({mesh.size}) so that every device gets the same share of each batch"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split over the devices."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def shard_batch(batch: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: lay `batch` out split along its leading axis."""
    if mesh is None:
        return batch
    return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Outside jit: places `tree` on every device of the mesh.

    With a mesh over several processes, each process places its own copy on its own
    devices (`jax.make_array_from_callback`), so `tree` must hold the same values in
    every process, as a run's initial state, its checkpoint and its data do."""
    if mesh is None:
        return tree
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _replicated_global(leaf, sharding), tree)


def _replicated_global(leaf: Any, sharding: NamedSharding) -> jax.Array:
    """One array of a multi-process replicated tree, from this process's copy."""
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        data = _replicated_global(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def keep_replicated(tree: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: lay `tree` out replicated on the mesh."""
    if mesh is None:
        return tree
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))


def process_shard(
    global_batch: Any,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Any:
    """This process's contiguous slice of a global batch, for feeding data from the host.

    Process `i` of `n` takes rows `[i * B / n, (i + 1) * B / n)` of every array, so
    the shards of all processes, in process order, make up the global batch.

    Example:
      >>> import numpy as np
      >>> from rnnjax.parallel import process_shard
      >>> process_shard(np.arange(8), process_index=1, process_count=4)
      array([2, 3])
    """
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if not 0 <= index < count:
        raise ValueError(f"process_index must be in 0..{count - 1}, got {index}")
    size = jax.tree.leaves(global_batch)[0].shape[0]
    if size % count:
        raise ValueError(
            f"the global batch ({size}) must be divisible by the number of processes ({count})"
        )
    share = size // count
    return jax.tree.map(lambda a: a[index * share : (index + 1) * share], global_batch)
