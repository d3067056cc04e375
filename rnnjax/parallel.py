"""Data-parallel training over many devices and hosts, on JAX's own sharding.

Every mini-batch is split along its batch axis over a one-axis device mesh
(`jax.sharding.Mesh` with the axis `"batch"`); parameters and optimizer state are
replicated on every device. The loss is a mean over the whole (global) batch, so
XLA inserts the all-reduce of the gradients itself: there is no hand-written
communication. With one device nothing is sharded and nothing costs extra.

Several hosts: start the same program on every host, after

    jax.distributed.initialize(coordinator_address="host0:1234",
                               num_processes=N, process_id=i)

The mesh then spans every process's devices (`jax.devices()`), each process
computes its own slice of every global batch inside the compiled step, and the
batches, being functions of `(key, step)`, are the same on every host. To feed
batches from the host instead, give each process its own shard with
`process_shard` and assemble the global array with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


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
            raise ValueError(
                f"devices must be between 1 and the {len(available)} device(s) present "
                f"({available[0].platform}), got {devices}"
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must name at least one device, got an empty list")
    if len(chosen) == 1:
        return None
    return Mesh(np.asarray(chosen), (BATCH_AXIS,))


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
    """Outside jit: places `tree` on every device of the mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


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
