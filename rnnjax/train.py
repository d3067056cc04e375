"""Training with optax: optimizers by name, a compiled train step, and `fit`.

The pieces, each usable on its own::

    optimizer = rnnjax.train.make_optimizer("adam", 1e-3, clip_norm=1.0)
    state = rnnjax.train.init_state(params, optimizer, key)
    batches = rnnjax.train.sampled_batches(task, batch_size=64, length=100)
    step = rnnjax.train.make_train_step(loss_fn, optimizer, batches)
    state, history = rnnjax.train.fit(state, step, batches, num_steps=3000)

Determinism: the mini-batch and the dropout key of step `s` are functions of
`(state.key, s)` alone, so a run is reproduced exactly from its seed, and a run
resumed from a checkpoint continues bit for bit.

No host synchronisation per step: the train step returns its metrics as device
arrays, and `fit` reads them back once per `log_every` steps (the Python loop
runs ahead of the computation, as JAX's asynchronous dispatch allows).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rnnjax import _checks, losses, parallel
from rnnjax.models import Model
from rnnjax.tasks import Task, TaskData

Array = jax.Array
LossFn = Callable[[Any, TaskData, Array], tuple[Array, dict]]

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


class TrainState(NamedTuple):
    """Everything a training run carries from step to step.

    Attributes:
      params: the model's parameters.
      opt_state: the optimizer's state.
      step: int32 scalar, the number of steps taken.
      key: the run's PRNG key; step `s` draws its batch and dropout masks from
        `fold_in(key, s)`, so the key itself never changes.
    """

    params: Any
    opt_state: Any
    step: Array
    key: Array


class NonFiniteError(FloatingPointError):
    """Raised by `fit` when the loss or the gradient stops being finite.

    Attributes:
      step: the first step found non-finite.
      history: `fit`'s history up to that step (its records are all finite but for
        the evaluation that found it, if an evaluation did).
    """

    def __init__(self, message: str, step: int | None = None, history: dict | None = None):
        super().__init__(message)
        self.step = step
        self.history = history


def init_state(params: Any, optimizer: optax.GradientTransformation, key: Array) -> TrainState:
    """A fresh `TrainState` at step 0."""
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), key)


def _weights_only(params: Any) -> Any:
    """Weight decay applies to matrices (rank >= 2), never to biases."""
    return jax.tree.map(losses.is_weight_matrix, params)


def make_optimizer(
    name: str = "adam",
    learning_rate: float | optax.Schedule = 1e-3,
    *,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """An optax optimizer by name, with clipping and weight decay.

    Args:
      name: `"adam"`, `"adamw"`, `"rmsprop"` or `"sgd"`.
      learning_rate: a float or an optax schedule (e.g. `optax.cosine_decay_schedule`).
      clip_norm: clip gradients to this global norm first; `None` or 0 turns it off.
      weight_decay: decay of the weight matrices (not biases). Decoupled from
        the gradient for `"adamw"` (Loshchilov & Hutter 2019); for the others it
        is added to the gradient, which is L2 regularisation.

    Returns:
      `optax.chain(clip_by_global_norm, [add_decayed_weights], optimizer)`.

    Example:
      >>> from rnnjax.train import make_optimizer
      >>> optimizer = make_optimizer("rmsprop", 1e-3, clip_norm=1.0, weight_decay=1e-4)
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    if not callable(learning_rate) and not (
        isinstance(learning_rate, (int, float)) and learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be positive or a schedule, got {learning_rate!r}")
    if clip_norm is not None and clip_norm < 0:
        raise ValueError(f"clip_norm must be positive, 0 or None (no clipping), got {clip_norm}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    parts = []
    if clip_norm:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name == "adamw":
        parts.append(optax.adamw(learning_rate, weight_decay=weight_decay, mask=_weights_only))
    else:
        if weight_decay:
            parts.append(optax.add_decayed_weights(weight_decay, mask=_weights_only))
        base = {"adam": optax.adam, "rmsprop": optax.rmsprop, "sgd": optax.sgd}[name]
        parts.append(base(learning_rate))
    return optax.chain(*parts)


class Batches(NamedTuple):
    """A keyed source of mini-batches.

    Attributes:
      data: arrays handed to the compiled step as an argument (so a data set is
        never baked into the program as a constant); `()` for sampled batches.
      select: `select(data, key, step) -> TaskData`, pure and jit-compatible.
      batch_size: sequences per batch.
    """

    data: Any
    select: Callable[[Any, Array, Array], TaskData]
    batch_size: int


def shuffled_batches(data: TaskData, batch_size: int) -> Batches:
    """Mini-batches of a fixed data set, reshuffled every epoch.

    Epoch `e` visits the sequences in the order `permutation(fold_in(key, e))`;
    a final partial batch of each epoch is dropped so that every batch has the
    same shape (no recompilation).
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    num_examples = jax.tree.leaves(data)[0].shape[0]
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size must be at most the number of sequences ({num_examples}), got {batch_size}"
        )
    batches_per_epoch = num_examples // batch_size

    def select(data: TaskData, key: Array, step: Array) -> TaskData:
        epoch, position = jnp.divmod(step, batches_per_epoch)
        order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
        index = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
        return jax.tree.map(lambda array: jnp.take(array, index, axis=0), data)

    return Batches(data, select, batch_size)


def sampled_batches(task: Task, batch_size: int, length: int) -> Batches:
    """Fresh batches drawn from `task` at every step (an endless training set)."""
    batch_size = _checks.positive_int("batch_size", batch_size)
    length = _checks.positive_int("length", length)
    task.generate(jax.random.key(0), 1, length)  # validates the length for this task

    def select(data: Any, key: Array, step: Array) -> TaskData:
        return task.generate(jax.random.fold_in(key, step), batch_size, length)

    return Batches((), select, batch_size)


def iterate(batches: Batches, key: Array, start: int = 0) -> Iterator[TaskData]:
    """The batches of steps `start, start + 1, ...` as a Python iterator."""
    for step in itertools.count(start):
        yield batches.select(batches.data, key, jnp.asarray(step))


def _batch_key(key: Array, step: Array) -> Array:
    return jax.random.fold_in(jax.random.fold_in(key, 0), step)


def _dropout_key(key: Array, step: Array) -> Array:
    return jax.random.fold_in(jax.random.fold_in(key, 1), step)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    batches: Batches | None = None,
    *,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """A compiled train step `step(state, batches.data) -> (state, metrics)`.

    Without `batches`, the step takes the batch itself: `step(state, batch) ->
    (state, metrics)`, for batches that come from a host iterator (a NumPy
    generator, a PyTorch `DataLoader`, grain, tf.data; see `fit`). A batch is any
    pytree of arrays with the batch on the leading axis (a tuple, a NamedTuple, a
    dict), passed to `loss_fn` as it is.

    `loss_fn(params, batch, key) -> (loss, aux)` is differentiated with respect
    to `params`. `metrics` holds device scalars: `loss`, `grad_norm` (global
    gradient norm before clipping) and `finite`. A step whose loss or gradient
    is not finite leaves the state unchanged (`fit` then stops). Calls with the
    same shapes reuse one compilation.

    With a `mesh` (`rnnjax.parallel.device_mesh`), every batch is split along its
    batch axis over the mesh's devices and the state stays replicated; each
    device runs the recurrence on its share and the gradients are summed across
    devices once per step (`rnnjax.parallel`). Place the state (and any data set)
    on the mesh first with `rnnjax.parallel.replicate` (`rnnjax.runs.build` does).
    The batch size must divide evenly.
    """
    if batches is not None:
        parallel.check_batch_size(batches.batch_size, mesh)

    @jax.jit
    def step(state: TrainState, data: Any) -> tuple[TrainState, dict]:
        if batches is None:
            batch = data
        else:
            batch = batches.select(data, _batch_key(state.key, state.step), state.step)
        batch = parallel.shard_batch(batch, mesh)
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, _dropout_key(state.key, state.step)
        )
        grad_norm = optax.tree_utils.tree_norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        candidate = TrainState(params, opt_state, state.step + 1, state.key)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), candidate, state)
        new_state = parallel.keep_replicated(new_state, mesh)
        return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

    on_mesh = parallel.on_mesh(step, mesh)

    def placed(state: TrainState, data: Any) -> tuple[TrainState, dict]:
        return on_mesh(state, data)

    placed.mesh = mesh  # where `fit` places the batches of an iterator
    placed._cache_size = step._cache_size  # compilations so far, for the tests
    return placed


def _duration(seconds: float) -> str:
    """`seconds` as a person reads it: `45s`, `12m05s`, `3h07m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Progress:
    """Progress on stderr: a live tqdm bar on a terminal (`tqdm.auto`, so a notebook gets
    its widget), plain lines anywhere else (a log file, `nohup`, a pipe), at most one
    every `every` seconds plus one at the end, nothing when disabled. The bar counts
    steps as they are dispatched; the loss shown is the mean of the last interval `fit`
    read back."""

    def __init__(self, start: int, total: int, enabled: bool, every: float):
        self.start, self.total, self.every = start, total, every
        self.enabled = enabled
        self.bar = None
        self.started = time.perf_counter()
        self.last_line = -math.inf
        self.loss: float | None = None
        self.eval_loss: float | None = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def step(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def metrics(self, step: int, loss: float, eval_loss: float | None) -> None:
        """At each read of the training metrics: the bar's loss, or a plain line when
        `every` seconds have passed since the last one (the first read always gets one)."""
        self.loss, self.eval_loss = loss, eval_loss
        if self.bar is not None:
            shown = {"loss": f"{loss:.4g}"}
            if eval_loss is not None:
                shown["eval"] = f"{eval_loss:.4g}"
            self.bar.set_postfix(shown, refresh=False)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every:
            self._line(step)

    def _line(self, step: int) -> None:
        self.last_line = now = time.perf_counter()
        done = step - self.start
        rate = done / max(now - self.started, 1e-9)
        parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4g}")
        if done:
            parts.append(f"{rate:.3g} steps/s")
            parts.append(f"ETA {_duration((self.total - step) / max(rate, 1e-9))}")
        print("  ".join(parts), file=sys.stderr, flush=True)

    def close(self, step: int) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line(step)


def fit(
    state: TrainState,
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    batches: Batches | Iterable[Any],
    *,
    num_steps: int,
    evaluate: Callable[[Any], dict] | None = None,
    eval_every: int = 250,
    log_every: int = 50,
    target_loss: float | None = None,
    callback: Callable[[TrainState, dict], bool | None] | None = None,
    progress: bool | None = None,
    progress_every: float = 30.0,
    log: Callable[[dict], None] | None = None,
    save: Callable[[TrainState], str] | None = None,
    save_every: int | None = None,
) -> tuple[TrainState, dict]:
    """Trains until `state.step == num_steps` (or the target is met) and returns the history.

    Args:
      state: where to start (step 0, or a resumed checkpoint's step).
      train_step: from `make_train_step`.
      batches: the same `Batches` the step was built with (its data is passed in), or,
        for a step built without `Batches`, any iterable of batches: NumPy or JAX
        arrays in a tuple, NamedTuple or dict, one batch per step, placed on the step's
        mesh (split along the batch axis) when it has one. An iterable that ends stops
        training (`stopped` is `"data"`). Training is as deterministic as the iterable:
        to resume a run bit for bit, hand `fit` the batches from `state.step` on.
      num_steps: the total number of steps, counted from step 0.
      evaluate: `evaluate(params) -> {"loss": ..., ...}` on held-out data,
        called every `eval_every` steps and at the end.
      eval_every: steps between evaluations.
      log_every: steps between reads of the training metrics (host syncs).
      target_loss: stop at the first evaluation whose loss is at or below this.
      callback: `callback(state, history)` after every evaluation; returning
        `True` stops training (the vanishing-gradient benchmark records its
        diagnostics here). It is the hook for TensorBoard or W&B: log
        `history["eval"][-1]` there (the documentation has an example).
      progress: progress on stderr: `None` or `True` show a live bar on a terminal
        (tqdm; a widget in a notebook) and one plain line every `progress_every`
        seconds anywhere else; `False` shows nothing.
      progress_every: seconds between the plain progress lines.
      log: `log(record)` for every record as training goes: `{"kind": "train",
        "step", "loss", "grad_norm", "seconds"}` at each read of the training metrics
        and `{"kind": "eval", "step", "seconds", **metrics}` at each evaluation
        (`rnnjax.runs` streams them to `metrics.jsonl`).
      save: `save(state) -> path`, writing a checkpoint; called every
        `save_every` steps (default: at evaluations) and at the end.
      save_every: steps between checkpoints.

    Returns:
      `(state, history)`. `history` has `step`, `loss`, `grad_norm` (means over
      each log interval), `eval` (a list of `{"step", **metrics}`), `seconds`
      (wall time of the run) and `stopped` (`"num_steps"`, `"target"`, `"callback"`
      or `"data"`).

    Raises:
      NonFiniteError: a loss or gradient was NaN or infinite. The message names
        the first bad step and the last checkpoint written, which stays intact.
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    eval_every = _checks.positive_int("eval_every", eval_every)
    log_every = _checks.positive_int("log_every", log_every)
    save_every = (
        eval_every if save_every is None else _checks.positive_int("save_every", save_every)
    )
    history: dict = {"step": [], "loss": [], "grad_norm": [], "eval": [], "stopped": "num_steps"}
    keyed = isinstance(batches, Batches)
    if not keyed and not isinstance(batches, Iterable):
        kind = type(batches).__name__
        raise TypeError(f"batches must be rnnjax Batches or an iterable of batches, got {kind}")
    source = None if keyed else iter(batches)
    mesh = getattr(train_step, "mesh", None)
    placement = None if mesh is None else parallel.batch_sharded(mesh)
    display = _Progress(int(state.step), num_steps, progress is not False, progress_every)
    started = time.perf_counter()
    last_saved = "none written"
    pending: list[dict] = []
    step = int(state.step)
    last_eval: float | None = None

    def flush() -> None:
        if not pending:
            return
        metrics = jax.device_get(pending)
        first = step - len(metrics) + 1
        bad = [i for i, m in enumerate(metrics) if not m["finite"]]
        if bad:
            display.close(step)
            worst = metrics[bad[0]]
            raise NonFiniteError(
                f"non-finite loss or gradient at step {first + bad[0]} (loss {worst['loss']}, "
                f"gradient norm {worst['grad_norm']}); training stopped. "
                f"Last good checkpoint: {last_saved}",
                step=first + bad[0],
                history=history,
            )
        history["step"].append(step)
        history["loss"].append(float(sum(m["loss"] for m in metrics) / len(metrics)))
        history["grad_norm"].append(float(sum(m["grad_norm"] for m in metrics) / len(metrics)))
        pending.clear()
        display.metrics(step, history["loss"][-1], last_eval)
        if log is not None:
            log(
                {
                    "kind": "train",
                    "step": step,
                    "loss": history["loss"][-1],
                    "grad_norm": history["grad_norm"][-1],
                    "seconds": time.perf_counter() - started,
                }
            )

    first_step = step
    while step < num_steps:
        if keyed:
            data = batches.data
        else:
            try:
                data = next(source)
            except StopIteration:
                history["stopped"] = "data"
                break
            data = jax.tree.map(jnp.asarray, data)
            if placement is not None:
                data = jax.device_put(data, placement)
        state, metrics = train_step(state, data)
        step += 1
        pending.append(metrics)
        display.step(step)
        at_eval = step % eval_every == 0 or step == num_steps
        # The first step is read back at once, so that progress shows from the start.
        if step % log_every == 0 or at_eval or step == first_step + 1:
            flush()
        if at_eval and evaluate is not None:
            result = {k: float(v) for k, v in jax.device_get(evaluate(state.params)).items()}
            last_eval = result["loss"]
            history["eval"].append({"step": step, **result})
            if log is not None:
                log(
                    {
                        "kind": "eval",
                        "step": step,
                        "seconds": time.perf_counter() - started,
                        **result,
                    }
                )
            if not math.isfinite(last_eval):
                display.close(step)
                raise NonFiniteError(
                    f"non-finite evaluation loss at step {step}; training stopped. "
                    f"Last good checkpoint: {last_saved}",
                    step=step,
                    history=history,
                )
            if target_loss is not None and last_eval <= target_loss:
                history["stopped"] = "target"
        if save is not None and (step % save_every == 0 or step == num_steps):
            flush()  # never checkpoint past a step whose metrics were not checked
            last_saved = f"{save(state)} (step {step})"
        if at_eval and callback is not None and callback(state, history):
            history["stopped"] = "callback"
        if history["stopped"] != "num_steps":
            if save is not None and step % save_every != 0:
                flush()
                last_saved = f"{save(state)} (step {step})"
            break
    flush()
    display.close(step)
    history["seconds"] = time.perf_counter() - started
    return state, history


def _task_metrics(task: Task, outputs: Array, batch: TaskData) -> dict:
    """The loss (and accuracy) of `outputs`; per-step losses of padded sequences
    (`batch.lengths`) cover only the steps inside each sequence."""
    valid = None
    if task.per_step and batch.lengths is not None:
        steps = jnp.arange(outputs.shape[1])
        valid = steps.reshape(1, -1) < batch.lengths.reshape(-1, 1)
    if task.loss == "mse":
        return {"loss": losses.mse(outputs, batch.targets, valid)}
    shown = batch.mask if valid is None else (valid if batch.mask is None else batch.mask & valid)
    return {
        "loss": losses.cross_entropy(outputs, batch.targets, valid),
        "accuracy": losses.accuracy(outputs, batch.targets, shown),
    }


def task_loss(model: Model, task: Task, *, l2: float = 0.0) -> LossFn:
    """The training loss of `model` on `task`: MSE or cross-entropy, plus `l2 * l2_penalty`.

    Dropout is on (`train=True`) with the key the train step passes in.
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")

    def loss_fn(params: Any, batch: TaskData, key: Array) -> tuple[Array, dict]:
        outputs = model.apply(params, batch.inputs, lengths=batch.lengths, key=key, train=True)
        metrics = _task_metrics(task, outputs, batch)
        loss = metrics["loss"] + l2 * losses.l2_penalty(params) if l2 else metrics["loss"]
        return loss, metrics

    return loss_fn


def make_evaluate(model: Model, task: Task, data: TaskData) -> Callable[[Any], dict]:
    """`evaluate(params) -> {"loss", ["accuracy"]}` on `data`, compiled once.

    The accuracy (classification tasks) covers the steps `data.mask` marks, or
    every label when it has no mask.
    """

    @jax.jit
    def metrics(params: Any, data: TaskData) -> dict:
        outputs = model.apply(params, data.inputs, lengths=data.lengths)
        return _task_metrics(task, outputs, data)

    return lambda params: metrics(params, data)
