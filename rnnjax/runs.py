"""A training run described by one flat configuration: build it, train it, record it.

`TrainConfig` names everything a run depends on; `build` turns it into the
task, model, optimizer and train step; `train` runs it, writes
`checkpoint.npz` and `metrics.json` to an output folder, and resumes from there.
The `rnnjax train` command and the benchmarks are thin layers over this module.

    from rnnjax.runs import TrainConfig, train
    metrics = train(TrainConfig(task="adding", cell="gru", length=100, steps=1000), "runs/gru")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import optax

from rnnjax import _files, checkpoint, distributed, parallel, zoo
from rnnjax.models import Model, sequence_model
from rnnjax.tasks import TASKS, Task, TaskData, get_task, load_data, split_data
from rnnjax.train import (
    OPTIMIZERS,
    Batches,
    TrainState,
    fit,
    init_state,
    make_evaluate,
    make_optimizer,
    make_train_step,
    sampled_batches,
    shuffled_batches,
    task_loss,
)

CELLS = tuple(zoo.CELLS)
SCHEDULES = ("constant", "cosine")
LOSSES = ("", "mse", "cross_entropy")
# The allowed values of TrainConfig's fields that take a name (the CLI's choices too).
CHOICES: dict[str, Sequence[str]] = {
    "task": sorted(TASKS),
    "cell": CELLS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "loss": LOSSES,
}
CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"
METRICS_STREAM = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults: Adam 1e-3, clip 1, 64 units, batch 64.

    Attributes:
      task: one of `rnnjax.tasks.TASKS`: seed, recall, adding, copy, order.
      cell: a name in `rnnjax.CELLS` (rnn, lstm, gru, indrnn, exprnn, lru, min_gru, min_lstm).
      length: the task's sequence length `T`.
      hidden: hidden units per layer.
      layers: recurrent layers.
      bidirectional: make every layer bidirectional.
      steps: total training steps.
      batch_size: sequences per step.
      optimizer: adam, adamw, rmsprop or sgd.
      lr: learning rate (the peak of the schedule).
      schedule: constant, or cosine decay to 0 over `steps`.
      clip: gradient clipping by global norm (0 turns it off).
      weight_decay: weight decay of the weight matrices.
      l2: L2 penalty weight added to the loss.
      dropout: dropout between layers.
      input_dropout: variational dropout of each layer's inputs (Gal & Ghahramani 2016).
      state_dropout: variational dropout of the recurrent state.
      forget_bias: the LSTM's initial forget-gate bias.
      seed: seeds the initialisation, the batches, dropout and the test set.
      train_size: a fixed training set of this many sequences, reshuffled each
        epoch; 0 draws a fresh batch at every step (the default).
      test_size: held-out sequences for evaluation.
      eval_every: steps between evaluations (and checkpoints).
      log_every: steps between reads of the training metrics (and progress).
      target_loss: stop once the test loss reaches this (None: run all steps).
      devices: split every batch over this many devices (data parallelism; the
        batch size must divide evenly). 1 runs on the default device.
      checkpoint_every: gradient checkpointing over chunks of this many steps
        (see `rnnjax.unroll`), for long sequences in bounded memory, and on a
        CPU sometimes for speed (`rnnjax.unroll` says when); 0 is off.
      fused: run the layers on the cells' fast paths (True; `Cell.sequence`), on
        the reference path (False), or each cell on its fast path where it has one
        (None, the default; see `rnnjax.unroll`).
      data: a `.npz` data set of one's own (`rnnjax.tasks.load_data`) to train on
        instead of `task`; `length`, `train_size` and `test_size` then come from it.
      loss: mse or cross_entropy for `data`; empty: from the targets' dtype.
      validation_fraction: the share of `data`'s sequences held out for evaluation.
    """

    task: str = "adding"
    cell: str = "lstm"
    length: int = 100
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = False
    steps: int = 3000
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    clip: float = 1.0
    weight_decay: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    input_dropout: float = 0.0
    state_dropout: float = 0.0
    forget_bias: float = 1.0
    seed: int = 0
    train_size: int = 0
    test_size: int = 1000
    eval_every: int = 250
    log_every: int = 50
    target_loss: float | None = None
    devices: int = 1
    checkpoint_every: int = 0
    fused: bool | None = None
    data: str = ""
    loss: str = ""
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        choices = CHOICES
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )
        for name in (
            "length",
            "hidden",
            "layers",
            "steps",
            "batch_size",
            "test_size",
            "eval_every",
            "log_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("clip", "weight_decay", "l2", "train_size", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not (self.fused is None or isinstance(self.fused, bool)):
            raise ValueError(f"fused must be True, False or None, got {self.fused!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("dropout", "input_dropout", "state_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if 0 < self.train_size < self.batch_size:
            raise ValueError(
                f"train_size must be 0 (fresh batches) or at least batch_size "
                f"({self.batch_size}), got {self.train_size}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        return cls(**values)


def _metrics_stream(path: str, step: int) -> Any:
    """`path` opened for appending, holding the records of steps up to `step` only (a
    fresh run starts it empty; a resumed one keeps its history up to the checkpoint)."""
    kept = []
    if step and os.path.isfile(path):
        with open(path) as file:
            for line in file:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if record.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
    _files.write_text(path, "".join(kept))
    return open(path, "a")  # closed by `train`


class Run(NamedTuple):
    """A run, built: what `fit` needs, plus the pieces for inspection."""

    config: TrainConfig
    task: Task
    model: Model
    optimizer: optax.GradientTransformation
    state: TrainState
    train_step: Callable
    batches: Batches
    evaluate: Callable[[Any], dict]
    test_data: TaskData
    mesh: Any = None


def make_cell(config: TrainConfig):
    """The configured cell (with the LSTM's forget bias)."""
    options = {"forget_bias": config.forget_bias} if config.cell == "lstm" else {}
    return zoo.make_cell(config.cell, config.hidden, **options)


def build(config: TrainConfig, cell: Any = None) -> Run:
    """Builds the run `config` describes; `cell` overrides the configured cell's construction
    (the benchmark passes LSTMs with other initialisations)."""
    seed_key = jax.random.key(config.seed)
    k_init, k_train, k_test, k_data = (jax.random.fold_in(seed_key, i) for i in range(4))
    if config.data:
        task, everything = load_data(config.data, config.loss or None)
        train_data, test_data = split_data(everything, k_data, config.validation_fraction)
        if train_data.inputs.shape[0] < config.batch_size:
            raise ValueError(
                f"batch_size ({config.batch_size}) is larger than the {train_data.inputs.shape[0]} "
                f"training sequences of {config.data}"
            )
    else:
        task = get_task(config.task)
    model = sequence_model(
        make_cell(config) if cell is None else cell,
        output_size=task.output_size,
        num_layers=config.layers,
        bidirectional_layers=config.bidirectional,
        per_step=task.per_step,
        dropout=config.dropout,
        input_dropout=config.input_dropout,
        state_dropout=config.state_dropout,
        checkpoint_every=config.checkpoint_every or None,
        fused=config.fused,
    )
    params = model.init(k_init, task.input_size)
    learning_rate: Any = config.lr
    if config.schedule == "cosine":
        learning_rate = optax.cosine_decay_schedule(config.lr, config.steps)
    optimizer = make_optimizer(
        config.optimizer,
        learning_rate,
        clip_norm=config.clip or None,
        weight_decay=config.weight_decay,
    )
    mesh = parallel.device_mesh(config.devices)
    parallel.check_batch_size(config.batch_size, mesh)
    if config.data:
        batches = shuffled_batches(parallel.replicate(train_data, mesh), config.batch_size)
    elif config.train_size:
        data = parallel.replicate(task.generate(k_data, config.train_size, config.length), mesh)
        batches = shuffled_batches(data, config.batch_size)
    else:
        batches = sampled_batches(task, config.batch_size, config.length)
    if not config.data:
        test_data = task.generate(k_test, config.test_size, config.length)
    return Run(
        config=config,
        task=task,
        model=model,
        optimizer=optimizer,
        state=parallel.replicate(init_state(params, optimizer, k_train), mesh),
        train_step=make_train_step(
            task_loss(model, task, l2=config.l2), optimizer, batches, mesh=mesh
        ),
        batches=batches,
        evaluate=parallel.on_mesh(make_evaluate(model, task, test_data), mesh),
        test_data=test_data,
        mesh=mesh,
    )


def train(
    config: TrainConfig,
    out_dir: str | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    callback: Callable | None = None,
) -> dict:
    """Trains the run `config` describes and returns its metrics.

    With `out_dir`, writes `checkpoint.npz` (at every evaluation and at the end),
    streams `metrics.jsonl` there as training goes (one JSON object per read of the
    training metrics and per evaluation, appended and flushed at once, so a killed
    run keeps every record up to its end), and writes the summary `metrics.json` at
    the end. With `resume=True`, continues the run saved in
    `out_dir` up to `config.steps`; the saved configuration must equal `config`
    in everything but `steps`, the continuation is bit for bit the run that never
    stopped, and `metrics.jsonl` continues from the checkpoint's step (records a
    killed run wrote past it are dropped, since the resumed run makes them again).

    Returns:
      A dict with `final_test_loss` (and `final_test_accuracy` for classification
      tasks), `baseline_loss`, `steps`, `seconds`, `stopped`, `config` and `history`.
    """
    run = build(config)
    state, previous = run.state, None
    checkpoint_path = os.path.join(out_dir, CHECKPOINT_FILE) if out_dir else None
    if resume:
        if checkpoint_path is None:
            raise ValueError("resume needs out_dir, the folder of the run to continue")
        saved = TrainConfig.from_dict(checkpoint.load_config(checkpoint_path))
        if dataclasses.replace(saved, steps=config.steps) != config:
            changed = {
                k: (v, getattr(config, k))
                for k, v in saved.to_dict().items()
                if k != "steps" and getattr(config, k) != v
            }
            raise ValueError(
                "resume must keep the saved configuration except steps; changed: "
                + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            )
        # Every process reads the checkpoint, and places it as the fresh state is placed.
        state = parallel.replicate(checkpoint.load(checkpoint_path, run.state), run.mesh)
        metrics_path = os.path.join(out_dir, METRICS_FILE)
        if os.path.isfile(metrics_path):
            with open(metrics_path) as file:
                previous = json.load(file)
    # Of several processes, process 0 writes the files; all of them train.
    writing = bool(out_dir) and distributed.is_writer()
    stream = None
    if writing:
        os.makedirs(out_dir, exist_ok=True)
        stream = _metrics_stream(os.path.join(out_dir, METRICS_STREAM), int(state.step))

    def save(state: TrainState) -> str:
        return checkpoint.save(checkpoint_path, state, config.to_dict())

    def log(record: dict) -> None:
        stream.write(json.dumps(record) + "\n")
        stream.flush()

    started = time.perf_counter()
    state, history = fit(
        state,
        run.train_step,
        run.batches,
        num_steps=config.steps,
        evaluate=run.evaluate,
        eval_every=config.eval_every,
        log_every=config.log_every,
        target_loss=config.target_loss,
        callback=callback,
        progress=progress,
        log=log if stream is not None else None,
        save=save if writing else None,
    )
    if stream is not None:
        stream.close()
    if previous is not None:
        for name in ("step", "loss", "grad_norm", "eval"):
            history[name] = previous["history"][name] + history[name]
        history["seconds"] += previous["history"]["seconds"]
    final = history["eval"][-1] if history["eval"] else {"loss": float("nan")}
    metrics = {
        "final_test_loss": final["loss"],
        **({"final_test_accuracy": final["accuracy"]} if "accuracy" in final else {}),
        "baseline_loss": run.task.baseline_loss(config.length),
        "baseline": run.task.baseline,
        "steps": int(state.step),
        "seconds": history["seconds"],
        "wall_seconds_this_session": time.perf_counter() - started,
        "stopped": history["stopped"],
        "config": config.to_dict(),
        "history": history,
    }
    if writing:
        _files.write_json(os.path.join(out_dir, METRICS_FILE), metrics)
    return metrics
