"""`unroll`: run a cell over a whole sequence with one `jax.lax.scan`.

Shapes: `T` time steps, `B` sequences, `I` input features, `H` hidden units.
Time is always a `lax.scan`, never a Python loop, so the compiled program has
one loop body whatever `T` is: compile time does not grow with the sequence
length. A new *shape* (another `B`, `T` or `I`) does trigger a new compilation,
as everywhere in JAX; pad sequences to a few fixed lengths and pass `lengths`
to keep the number of compilations small.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks, parallel
from rnnjax.cells import Cell
from rnnjax.fused import scan_step

Array = jax.Array


def unroll(
    cell: Cell,
    params: Any,
    xs: Array,
    *,
    state: Any = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool | None = None,
    checkpoint_every: int | None = None,
    fused: bool | None = None,
) -> tuple[Array, Any]:
    """Runs `cell` over every step of `xs` and returns all outputs and the final state.

    Args:
      cell: a `Cell` from `rnnjax.rnn`, `rnnjax.lstm`, `rnnjax.gru` (or your own).
      params: the cell's parameters, from `cell.init`.
      xs: inputs `(B, T, I)`; `(T, B, I)` when `time_major=True`; or one
        unbatched sequence `(T, I)`. Integer inputs are cast to the compute dtype.
      state: initial state with batch shape `(B,)` (or `()` for unbatched
        input); zeros from `cell.initial_state` when omitted.
      lengths: optional integer array `(B,)` (a scalar for unbatched input) of
        true lengths in `1..T` for a right-padded batch. Steps at or past a
        sequence's length leave its state unchanged and output zeros, so the
        final state is each sequence's state at its own last step. Values are
        checked when `lengths` is concrete; under `jit` they cannot be, and a
        length above `T` then acts as `T`, one below 1 as an empty sequence.
      reverse: run from the last step to the first (with `lengths`, from each
        sequence's own last valid step). Outputs stay in input order.
      time_major: whether batched `xs` and the returned `hs` are `(T, B, ...)`.
      unroll: how many steps `lax.scan` places in one loop iteration (`True`:
        all of them). Only speed and compile time change: results are the same
        up to floating-point rounding. `None` lets the path choose: 1 on the
        reference path, the cell's own choice on its fast path.
      checkpoint_every: gradient checkpointing over chunks of this many steps:
        the backward pass keeps only the state at the start of each chunk and
        recomputes the chunk's forward pass when it reaches it, so the memory
        of training grows with `T / checkpoint_every + checkpoint_every` steps
        of activations instead of `T` (about `sqrt(T)` is a good choice), for
        one more forward pass of compute. Outputs and gradients are unchanged.
        On a CPU it can make long sequences train faster as well, since smaller
        scratch blocks are cheaper for the host allocator to hand out (the
        performance page of the documentation measures when).
      fused: which path runs the sequence. `None` (the default) runs the cell's
        whole-sequence implementation, `cell.sequence`, when it has one (every
        cell of `rnnjax.CELLS` does: `rnnjax.fused`, `rnnjax.scans`) and scans
        `cell.step` otherwise. `True`
        requires `cell.sequence` and raises `ValueError` for a cell without one.
        `False` runs the reference path: `cell.step` in a `lax.scan`,
        differentiated by JAX. Both paths are equal up to floating-point rounding,
        in values and derivatives (forward mode and second derivatives included).

    Returns:
      `(hs, final_state)`: `hs` is `(B, T, H)` (`(T, B, H)` time-major, `(T, H)`
      unbatched) and `final_state` has the structure of `state`.

    The computation runs in the promoted dtype of `xs`, `params` and `state`, so
    float64 parameters give a float64 unroll and bfloat16 ones a bfloat16 unroll.

    Under a mesh set with `jax.set_mesh` whose `"batch"` axis spans several devices
    (`rnnjax.parallel.device_mesh`), the batch is split over them: each device runs
    the whole loop on its share of the sequences, and the parameters' gradients are
    summed across devices once, after the loop (`rnnjax.parallel`). Results equal
    the unsplit ones up to the order of that sum. A batch that does not divide by
    the device count runs unsplit. A cell of your own must then keep per-sequence
    values (masks, say) in its state, not in a closure, so that they split with the
    sequences.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax
      >>> cell = rnnjax.gru(hidden_size=8)
      >>> params = cell.init(jax.random.key(0), input_size=2)
      >>> hs, h_last = rnnjax.unroll(cell, params, jnp.ones((4, 10, 2)))
      >>> hs.shape, h_last.shape
      ((4, 10, 8), (4, 8))
    """
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell must be an rnnjax.Cell (from rnnjax.rnn/lstm/gru), got {type(cell).__name__}"
        )
    if fused and cell.sequence is None:
        raise ValueError(
            "fused=True needs a cell with a whole-sequence implementation (cell.sequence), "
            "but this cell has none: pass fused=None or False to scan its step"
        )
    if unroll is not None and not isinstance(unroll, bool):
        unroll = _checks.positive_int("unroll", unroll)
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"fused must be True, False or None, got {fused!r}")
    xs = jnp.asarray(xs)
    if xs.ndim not in (2, 3):
        layout = "(T, B, I)" if time_major else "(B, T, I)"
        raise ValueError(
            f"xs must have shape {layout} or (T, I), got rank {xs.ndim} "
            f"shape {_checks.shape_str(xs.shape)}"
        )
    _check_input_size(params, xs)

    dtype = jnp.result_type(xs, *jax.tree.leaves(params), *jax.tree.leaves(state))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"params must hold floating-point arrays, got dtype {dtype}")
    xs = xs.astype(dtype)
    if xs.ndim == 3 and not time_major:
        xs = jnp.swapaxes(xs, 0, 1)  # scan runs over the leading axis
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    if num_steps == 0:
        raise ValueError("xs must have at least one time step, got T = 0")

    state = _initial_carry(cell, params, state, batch_shape, dtype)
    valid = None
    if lengths is not None:
        lengths = _check_lengths(lengths, batch_shape, num_steps)
        steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch_shape))
        valid = steps < lengths[None]
    if checkpoint_every is not None:
        checkpoint_every = _checks.positive_int("checkpoint_every", checkpoint_every)

    # Both paths see one flat batch: xs (T, N, I), states (N, ...), valid (T, N).
    flat = int(np.prod(batch_shape, dtype=int))
    xs = xs.reshape(num_steps, flat, xs.shape[-1])
    rank = len(batch_shape)
    state = jax.tree.map(lambda s: s.reshape(flat, *s.shape[rank:]), state)
    if valid is not None:
        valid = valid.reshape(num_steps, flat)
    sequence = cell.sequence if fused is not False else None
    chunked = checkpoint_every is not None and checkpoint_every < num_steps
    # A whole-sequence implementation returns batch-major outputs when asked (the
    # fused kernels' inference loops write them so); the reference path runs
    # time-major and is transposed at the end.
    batch_major = sequence is not None and not chunked and bool(batch_shape) and not time_major

    if sequence is not None:

        def run(params: Any, state: Any, xs: Array, valid: Array | None) -> tuple[Any, Array]:
            return sequence(
                params,
                xs,
                state,
                valid,
                reverse=reverse,
                unroll=unroll,
                batch_major=batch_major,
            )

    else:

        def run(params: Any, state: Any, xs: Array, valid: Array | None) -> tuple[Any, Array]:
            steps = 1 if unroll is None else unroll
            return scan_step(cell.step, params, xs, state, valid, reverse=reverse, unroll=steps)

    if chunked:
        run = functools.partial(checkpointed, run, chunk=checkpoint_every, reverse=reverse)
    mesh = parallel.ambient_batch_mesh(flat)
    if mesh is not None:
        run = _split_over_batch(run, mesh, outputs_batch_major=batch_major)
    final_state, hs = run(params, state, xs, valid)

    final_state = jax.tree.map(lambda s: s.reshape(*batch_shape, *s.shape[1:]), final_state)
    if batch_major:
        return hs.reshape(*batch_shape, num_steps, hs.shape[-1]), final_state
    hs = hs.reshape(num_steps, *batch_shape, hs.shape[-1])
    if hs.ndim == 3 and not time_major:
        hs = jnp.swapaxes(hs, 0, 1)
    return hs, final_state


def _split_over_batch(
    run: Callable[..., tuple[Any, Array]], mesh: Any, *, outputs_batch_major: bool = False
) -> Callable:
    """`run` on every device of `mesh` at once, each on its share of the batch.

    The recurrence never mixes sequences, so each device runs the whole loop on
    `N / devices` sequences with no communication between steps: only the
    parameters' gradients are summed over the devices, once, by the transpose of
    `jax.shard_map` (parameters enter replicated). `run` returns outputs `(T, N, H)`,
    or `(N, T, H)` with `outputs_batch_major`.
    """
    whole, rows = parallel.batch_spec(None), parallel.batch_spec(0)
    steps_rows = parallel.batch_spec(1)  # (T, N, ...): split along N

    def run_share(params: Any, state: Any, xs: Array, valid: Array | None) -> tuple[Any, Array]:
        # Marked as varying over the devices here, outside the loop: the sum of the
        # parameters' gradients (this cast's transpose) then runs once, not every step.
        params = jax.lax.pcast(params, parallel.BATCH_AXIS, to="varying")
        return run(params, state, xs, valid)

    def split_run(params: Any, state: Any, xs: Array, valid: Array | None) -> tuple[Any, Array]:
        specs = (whole, rows, steps_rows, None if valid is None else steps_rows)
        outputs = rows if outputs_batch_major else steps_rows
        sharded = jax.shard_map(run_share, mesh=mesh, in_specs=specs, out_specs=(rows, outputs))
        return sharded(params, state, xs, valid)

    return split_run


def checkpointed(
    run: Callable[..., tuple[Any, Array]],
    params: Any,
    state: Any,
    xs: Array,
    valid: Array | None,
    *,
    chunk: int,
    reverse: bool,
) -> tuple[Any, Array]:
    """`run(params, state, xs (T, N, I), valid) -> (state, hs (T, N, H))` over chunks of
    `chunk` steps, each under `jax.checkpoint`.

    An outer `lax.scan` walks the chunks, so autodiff saves only each chunk's
    starting state; the backward pass re-runs a chunk's forward pass to get its
    activations. Steps left over after the last whole chunk (fewer than `chunk`)
    run as one plain segment, first when the sequence runs in reverse.
    """
    num_steps = xs.shape[0]
    num_chunks, tail = divmod(num_steps, chunk)
    split = num_chunks * chunk

    def chunks(a: Array | None) -> Array | None:
        return None if a is None else a[:split].reshape(num_chunks, chunk, *a.shape[1:])

    def rest(a: Array | None) -> Array | None:
        return None if a is None else a[split:]

    run_chunk = jax.checkpoint(run)

    def body(carry: Any, chunk_inputs: tuple) -> tuple[Any, Array]:
        return run_chunk(params, carry, *chunk_inputs)

    def head(state: Any) -> tuple[Any, Array]:
        state, hs = jax.lax.scan(body, state, (chunks(xs), chunks(valid)), reverse=reverse)
        return state, hs.reshape(split, *hs.shape[2:])

    if not tail:
        return head(state)
    if reverse:
        state, hs_tail = run(params, state, rest(xs), rest(valid))
        state, hs_head = head(state)
    else:
        state, hs_head = head(state)
        state, hs_tail = run(params, state, rest(xs), rest(valid))
    return state, jnp.concatenate([hs_head, hs_tail], axis=0)


def _check_input_size(params: Any, xs: Array) -> None:
    w_ih = getattr(params, "w_ih", None)
    if w_ih is not None and xs.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"xs must have {w_ih.shape[0]} input features (last axis) to match params.w_ih "
            f"{_checks.shape_str(w_ih.shape)}, got xs of shape {_checks.shape_str(xs.shape)}"
        )


def _initial_carry(
    cell: Cell, params: Any, state: Any, batch_shape: tuple[int, ...], dtype: Any
) -> Any:
    """The scan's first carry: `state` (checked) or zeros, in the compute dtype."""
    expected = jax.eval_shape(lambda p: cell.initial_state(p, batch_shape), params)
    if state is None:
        state = cell.initial_state(params, batch_shape)
    else:
        got_shapes = jax.tree.map(jnp.shape, state)
        want_shapes = jax.tree.map(lambda s: s.shape, expected)
        if jax.tree.structure(state) != jax.tree.structure(expected) or got_shapes != want_shapes:
            raise ValueError(
                f"state must match the batch of xs {_checks.shape_str(batch_shape)}: expected "
                f"shapes {want_shapes}, got {got_shapes}"
            )
    return jax.tree.map(lambda s: jnp.asarray(s, dtype), state)


def _check_lengths(lengths: Any, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    lengths = jnp.asarray(lengths)
    if lengths.shape != batch_shape:
        raise ValueError(
            f"lengths must have shape {_checks.shape_str(batch_shape)}, one length per "
            f"sequence in xs, got shape {_checks.shape_str(lengths.shape)}"
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be an integer array, got dtype {lengths.dtype}")
    try:
        concrete = np.asarray(lengths)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return lengths  # traced under jit: values are unknown until run time
    if concrete.size and (concrete.min() < 1 or concrete.max() > num_steps):
        raise ValueError(
            f"lengths must lie in 1..{num_steps} (T of xs), got values from "
            f"{concrete.min()} to {concrete.max()}"
        )
    return lengths
