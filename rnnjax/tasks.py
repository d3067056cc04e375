"""Data generators for recurrent-network tasks.

`seed_sequences` reproduces the data of the notebook rnnjax grew from, bit for
bit, with the notebook's own NumPy calls in the notebook's order. The training
tasks below (`TASKS`) are the classic long-range benchmarks: the adding problem,
copy memory, temporal order, and recall of the first value.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks

Array = jax.Array


def _seed_stream(
    num_sequences: int, sequence_length: int, seed: int
) -> tuple[np.random.RandomState, np.ndarray, np.ndarray]:
    """The notebook's draws: `np.random.seed(seed)` then `randint(0, 100, (N, T))`.

    `RandomState(seed)` is the generator behind `np.random.seed`, so the arrays
    and the state left behind are the notebook's.
    """
    num_sequences = _checks.positive_int("num_sequences", num_sequences)
    sequence_length = _checks.positive_int("sequence_length", sequence_length)
    random_state = np.random.RandomState(seed)
    xs = random_state.randint(0, 100, (num_sequences, sequence_length))
    ys = np.array([sequence[-1] for sequence in xs])
    return random_state, xs.reshape(num_sequences, sequence_length, 1), ys


def seed_sequences(
    num_sequences: int = 1000, sequence_length: int = 10, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's data set: random integers in `0..99` and the last one as target.

    The notebook calls the target "the next number in the sequence", but its
    code takes the *last input* (`y = X[:, -1]`): the target is already in the
    input, and the task is to remember the most recent value. (For independent
    random integers the true next number cannot be predicted at all.)

    Args:
      num_sequences: `N`, the number of sequences.
      sequence_length: `T`, the number of steps in each.
      seed: the seed given to `np.random.seed` (42 in the notebook).

    Returns:
      `(X, y)`: `X` int64 `(N, T, 1)` and `y` int64 `(N,)`, equal bit for bit
      to the notebook's.

    Example:
      >>> from rnnjax.tasks import seed_sequences
      >>> X, y = seed_sequences()
      >>> X.shape, y.shape, bool((y == X[:, -1, 0]).all())
      ((1000, 10, 1), (1000,), True)
    """
    _, xs, ys = _seed_stream(num_sequences, sequence_length, seed)
    return xs, ys


class SeedRNNWeights(NamedTuple):
    """The notebook's `SimpleRNN` parameters, in its own names and shapes.

    Attributes:
      W_xh: `(I, H)`; W_hh: `(H, H)`; W_hy: `(H, O)`; b_h: `(1, H)`; b_y: `(1, O)`.
    """

    W_xh: np.ndarray
    W_hh: np.ndarray
    W_hy: np.ndarray
    b_h: np.ndarray
    b_y: np.ndarray


def seed_rnn_weights(
    input_size: int = 1,
    hidden_size: int = 5,
    output_size: int = 1,
    *,
    num_sequences: int = 1000,
    sequence_length: int = 10,
    seed: int = 42,
) -> SeedRNNWeights:
    """The weights the notebook's `SimpleRNN` draws, right after its data.

    Replays `seed_sequences` on the same generator, then draws
    `randn(I, H) * 0.01`, `randn(H, H) * 0.01` and `randn(H, O) * 0.01` in the
    notebook's order, with zero biases.

    Example:
      >>> from rnnjax.tasks import seed_rnn_weights
      >>> seed_rnn_weights().W_hh.shape
      (5, 5)
    """
    random_state, _, _ = _seed_stream(num_sequences, sequence_length, seed)
    input_size = _checks.positive_int("input_size", input_size)
    hidden_size = _checks.positive_int("hidden_size", hidden_size)
    output_size = _checks.positive_int("output_size", output_size)
    return SeedRNNWeights(
        W_xh=random_state.randn(input_size, hidden_size) * 0.01,
        W_hh=random_state.randn(hidden_size, hidden_size) * 0.01,
        W_hy=random_state.randn(hidden_size, output_size) * 0.01,
        b_h=np.zeros((1, hidden_size)),
        b_y=np.zeros((1, output_size)),
    )


# --------------------------------------------------------------------------------------
# Training tasks. Each generator is a pure function of `(key, num_sequences, length)`
# built on `jax.random`, so the same key always gives the same data, on any backend.


class TaskData(NamedTuple):
    """One draw of a task.

    Attributes:
      inputs: float `(N, T_in, I)`.
      targets: float `(N, O)` for regression tasks, integer `(N,)` or
        `(N, T_in)` class labels for classification tasks.
      mask: `None`, or `(N, T_in)` marking the steps whose accuracy is reported
        (the recall steps of the copy task). The loss always covers every target.
      lengths: `None`, or integer `(N,)`: each sequence's true length in a
        right-padded batch (a data set of one's own, `load_data`). The model reads
        each sequence up to its length, and per-step losses cover only those steps.
    """

    inputs: Array
    targets: Array
    mask: Array | None = None
    lengths: Array | None = None


class Task(NamedTuple):
    """A task: its generator and what a model and a report need to know about it.

    Attributes:
      name: the task's name in `TASKS` and on the command line.
      generate: `generate(key, num_sequences, length) -> TaskData`.
      loss: `"mse"` or `"cross_entropy"`.
      per_step: whether the model outputs at every step (many-to-many) rather
        than once at each sequence's end (many-to-one).
      input_size: features per input step.
      output_size: regression outputs or number of classes.
      baseline_loss: `baseline_loss(length) -> float`, the loss of the trivial
        solution a memoryless model finds (the bar to beat).
      baseline: what that trivial solution is, in words.
    """

    name: str
    generate: Callable[[Array, int, int], TaskData]
    loss: str
    per_step: bool
    input_size: int
    output_size: int
    baseline_loss: Callable[[int], float]
    baseline: str


def _sizes(num_sequences: int, length: int, min_length: int = 1) -> tuple[int, int]:
    num_sequences = _checks.positive_int("num_sequences", num_sequences)
    length = _checks.positive_int("length", length)
    if length < min_length:
        raise ValueError(f"length must be at least {min_length} for this task, got {length}")
    return num_sequences, length


_DIGIT_SCALE = 100.0
# Variance of a uniform integer in 0..99, scaled by 1/100: the MSE of predicting the mean.
_DIGIT_VARIANCE = (100**2 - 1) / 12 / _DIGIT_SCALE**2


def _digits(key: Array, num_sequences: int, length: int) -> Array:
    return jax.random.randint(key, (num_sequences, length, 1), 0, 100) / _DIGIT_SCALE


def seed_task(key: Array, num_sequences: int, length: int) -> TaskData:
    """The seed notebook's task, scaled: integers `0..99` divided by 100; target the last one.

    Scaling inputs and targets to `[0, 0.99]` keeps `tanh` units out of saturation
    and the MSE on an interpretable scale; the notebook's raw targets (up to 99)
    give losses in the thousands. Inputs `(N, T, 1)`, targets `(N, 1)`.

    Example:
      >>> import jax
      >>> from rnnjax.tasks import seed_task
      >>> data = seed_task(jax.random.key(0), 4, 10)
      >>> data.inputs.shape, data.targets.shape
      ((4, 10, 1), (4, 1))
    """
    num_sequences, length = _sizes(num_sequences, length)
    inputs = _digits(key, num_sequences, length)
    return TaskData(inputs, inputs[:, -1])


def recall_first(key: Array, num_sequences: int, length: int) -> TaskData:
    """The seed's data with the *first* value as target: the long-range version.

    The model must carry one number through `length - 1` distracting steps.
    Inputs `(N, T, 1)` in `[0, 0.99]`, targets `(N, 1)`.
    """
    num_sequences, length = _sizes(num_sequences, length)
    inputs = _digits(key, num_sequences, length)
    return TaskData(inputs, inputs[:, 0])


def adding(key: Array, num_sequences: int, length: int) -> TaskData:
    """The adding problem as set by Arjovsky, Shah & Bengio (2016).

    Channel 0 holds values drawn from U[0, 1]; channel 1 marks two of them, one in
    each half of the sequence. The target is the sum of the two marked values.
    Predicting 1 (the mean of the sum) scores MSE 1/6, the bar to beat.
    Inputs `(N, T, 2)`, targets `(N, 1)`.

    Example:
      >>> import jax
      >>> from rnnjax.tasks import adding
      >>> data = adding(jax.random.key(0), 3, 8)
      >>> data.inputs.shape, data.targets.shape, data.inputs[..., 1].sum(axis=1).tolist()
      ((3, 8, 2), (3, 1), [2.0, 2.0, 2.0])
    """
    num_sequences, length = _sizes(num_sequences, length, min_length=2)
    k_values, k_first, k_second = jax.random.split(key, 3)
    values = jax.random.uniform(k_values, (num_sequences, length))
    half = length // 2
    first = jax.random.randint(k_first, (num_sequences,), 0, half)
    second = jax.random.randint(k_second, (num_sequences,), half, length)
    steps = jnp.arange(length)[None, :]
    markers = ((steps == first[:, None]) | (steps == second[:, None])).astype(values.dtype)
    targets = jnp.sum(values * markers, axis=1, keepdims=True)
    return TaskData(jnp.stack([values, markers], axis=-1), targets)


COPY_SYMBOLS = 8
COPY_RECALL = 10
_BLANK, _DELIMITER = 0, COPY_SYMBOLS + 1


def copy_memory(key: Array, num_sequences: int, length: int) -> TaskData:
    """The copy-memory task of Arjovsky, Shah & Bengio (2016).

    A sequence of `length + 20` one-hot steps over 10 classes: 10 symbols drawn
    from `1..8`, then `length` blanks (0) whose last one is the delimiter (9),
    then 10 more blanks. The target is blank for the first `length + 10` steps
    and the 10 symbols, in order, for the last 10. A memoryless model predicts
    blank and then a uniform guess over the 8 symbols, a cross-entropy of
    `10 ln 8 / (length + 20)`. Inputs `(N, T + 20, 10)`, targets int `(N, T + 20)`,
    mask `(N, T + 20)` marking the 10 recall steps (for the accuracy).
    """
    num_sequences, length = _sizes(num_sequences, length)
    total = length + 2 * COPY_RECALL
    symbols = jax.random.randint(key, (num_sequences, COPY_RECALL), 1, COPY_SYMBOLS + 1)
    blanks = jnp.full((num_sequences, length + COPY_RECALL), _BLANK)
    tokens = (
        jnp.concatenate([symbols, blanks], axis=1).at[:, COPY_RECALL + length - 1].set(_DELIMITER)
    )
    targets = jnp.concatenate([blanks, symbols], axis=1)
    mask = jnp.broadcast_to(jnp.arange(total) >= total - COPY_RECALL, (num_sequences, total))
    inputs = jax.nn.one_hot(tokens, COPY_SYMBOLS + 2)
    return TaskData(inputs, targets, mask)


ORDER_CLASSES = 4
_ORDER_TOKENS = 6  # X, Y and four distractors


def temporal_order(key: Array, num_sequences: int, length: int) -> TaskData:
    """The temporal-order task (Hochreiter & Schmidhuber 1997; Pascanu et al. 2013 variant).

    Each step is one of six one-hot symbols: four distractors fill the
    sequence, and two relevant symbols, each X or Y, sit at a random step in
    `[0.1 T, 0.2 T)` and one in `[0.5 T, 0.6 T)`. The class is their order,
    XX, XY, YX or YY (labels 0..3); chance cross-entropy is `ln 4`.
    Inputs `(N, T, 6)`, targets int `(N,)`. `length` must be at least 10.
    """
    num_sequences, length = _sizes(num_sequences, length, min_length=10)
    k_noise, k_first, k_second, k_labels = jax.random.split(key, 4)
    tokens = jax.random.randint(k_noise, (num_sequences, length), 2, _ORDER_TOKENS)
    first = jax.random.randint(k_first, (num_sequences,), length // 10, length // 5)
    second = jax.random.randint(k_second, (num_sequences,), length // 2, (6 * length) // 10)
    labels = jax.random.randint(k_labels, (num_sequences,), 0, ORDER_CLASSES)
    rows = jnp.arange(num_sequences)
    tokens = tokens.at[rows, first].set(labels // 2).at[rows, second].set(labels % 2)
    return TaskData(jax.nn.one_hot(tokens, _ORDER_TOKENS), labels)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "seed",
            seed_task,
            "mse",
            False,
            1,
            1,
            lambda length: _DIGIT_VARIANCE,
            "predict the mean value, 0.495",
        ),
        Task(
            "recall",
            recall_first,
            "mse",
            False,
            1,
            1,
            lambda length: _DIGIT_VARIANCE,
            "predict the mean value, 0.495",
        ),
        Task("adding", adding, "mse", False, 2, 1, lambda length: 1 / 6, "predict 1"),
        Task(
            "copy",
            copy_memory,
            "cross_entropy",
            True,
            COPY_SYMBOLS + 2,
            COPY_SYMBOLS + 2,
            lambda length: COPY_RECALL * math.log(COPY_SYMBOLS) / (length + 2 * COPY_RECALL),
            "predict blanks, then a uniform guess over the 8 symbols",
        ),
        Task(
            "order",
            temporal_order,
            "cross_entropy",
            False,
            _ORDER_TOKENS,
            ORDER_CLASSES,
            lambda length: math.log(ORDER_CLASSES),
            "guess one of the 4 classes",
        ),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`, one of `TASKS`."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name]


DATA_ARRAYS = ("inputs", "targets", "lengths")


def load_data(path: str, loss: str | None = None) -> tuple[Task, TaskData]:
    """A data set of one's own from a `.npz` file, as a task and all of its sequences.

    The file holds `inputs`, float `(N, T, I)` (or `(N, T)` for one feature per step);
    `targets`; and optionally `lengths`, integers `(N,)` in `1..T` for right-padded
    sequences. The targets decide the task: floats `(N,)` or `(N, O)` are regression
    on each sequence's last step, `(N, T, O)` regression at every step; integers `(N,)`
    are class labels of each sequence, `(N, T)` labels at every step (classes
    `0..C-1`, `C` the largest label plus one). `loss` (`"mse"` or `"cross_entropy"`)
    overrides the choice the dtype makes.

    Returns:
      `(task, data)`: a `Task` named after the file (its `generate` raises: the data
      are all there is; split them with `split_data`) whose baseline is the loss of
      predicting the targets' mean (regression) or the label frequencies
      (classification) over the whole set, and the data as `TaskData`.

    Raises:
      ValueError: one line naming the file and what is wrong with it (a missing or
        unknown array, a shape or dtype that does not fit, NaN or infinite values,
        lengths out of range, negative labels). OSError: the file cannot be read.
    """
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {key: file[key] for key in file.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, FileNotFoundError):
            raise OSError(f"{path}: no such file") from None
        raise ValueError(f"{path} is not a readable .npz file ({error})") from None
    missing = [key for key in ("inputs", "targets") if key not in arrays]
    unknown = sorted(set(arrays) - set(DATA_ARRAYS))
    if missing or unknown:
        raise ValueError(
            f"{name} must hold the arrays inputs, targets and optionally lengths; "
            f"missing {missing}, unknown {unknown}"
        )
    inputs, targets = arrays["inputs"], arrays["targets"]
    if inputs.ndim == 2:
        inputs = inputs[..., None]
    if inputs.ndim != 3 or not np.issubdtype(inputs.dtype, np.number):
        raise ValueError(
            f"{name}: inputs must be numbers of shape (N, T, I), "
            f"got {inputs.dtype}{list(inputs.shape)}"
        )
    count, steps = inputs.shape[:2]
    if count < 2 or targets.shape[:1] != (count,):
        raise ValueError(
            f"{name}: inputs and targets must hold the same number N >= 2 of sequences, "
            f"got {count} and {targets.shape[:1]}"
        )
    if loss is None:
        loss = "cross_entropy" if np.issubdtype(targets.dtype, np.integer) else "mse"
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be mse or cross_entropy, got {loss!r}")
    for key, array in (("inputs", inputs), ("targets", targets)):
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: {key} hold NaN or infinite values")
    if loss == "mse":
        if targets.ndim == 1:
            targets = targets[:, None]
        per_step = targets.ndim == 3
        if targets.ndim not in (2, 3) or (per_step and targets.shape[1] != steps):
            raise ValueError(
                f"{name}: regression targets must be (N,), (N, O) or (N, T, O) with "
                f"T = {steps}, got {list(targets.shape)}"
            )
        targets = targets.astype(np.float32)
        output_size = targets.shape[-1]
        baseline_loss = float(
            np.mean((targets - targets.mean(axis=tuple(range(targets.ndim - 1)))) ** 2)
        )
        baseline = "predict the mean of the targets"
    else:
        if not np.issubdtype(targets.dtype, np.integer) and not np.all(
            targets == np.round(targets)
        ):
            raise ValueError(f"{name}: class labels must be integers, got {targets.dtype}")
        targets = targets.astype(np.int32)
        per_step = targets.ndim == 2
        if targets.ndim not in (1, 2) or (per_step and targets.shape[1] != steps):
            raise ValueError(
                f"{name}: class labels must be (N,) or (N, T) with T = {steps}, "
                f"got {list(targets.shape)}"
            )
        if targets.min() < 0:
            raise ValueError(f"{name}: class labels must be 0 or more, got {targets.min()}")
        output_size = int(targets.max()) + 1
        frequencies = np.bincount(targets.ravel(), minlength=output_size) / targets.size
        baseline_loss = float(
            -np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0]))
        )
        baseline = "predict the label frequencies"
    lengths = arrays.get("lengths")
    if lengths is not None:
        if lengths.shape != (count,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(
                f"{name}: lengths must be integers of shape ({count},), "
                f"got {lengths.dtype}{list(lengths.shape)}"
            )
        if lengths.min() < 1 or lengths.max() > steps:
            raise ValueError(
                f"{name}: lengths must lie in 1..{steps}, got {lengths.min()} to {lengths.max()}"
            )
        lengths = jnp.asarray(lengths, jnp.int32)

    def generate(key: Array, num_sequences: int, length: int) -> TaskData:
        raise ValueError(f"the data set {name} has no generator: its sequences are all there is")

    task = Task(
        f"data:{name}",
        generate,
        loss,
        per_step,
        int(inputs.shape[-1]),
        output_size,
        lambda length: baseline_loss,
        baseline,
    )
    data = TaskData(jnp.asarray(inputs, jnp.float32), jnp.asarray(targets), None, lengths)
    return task, data


def split_data(data: TaskData, key: Array, validation_fraction: float) -> tuple[TaskData, TaskData]:
    """`(train, validation)`: a random `validation_fraction` of the sequences held out
    (at least one, and at least one left to train on), drawn with `key`."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    count = data.inputs.shape[0]
    held_out = min(max(1, round(validation_fraction * count)), count - 1)
    order = jax.random.permutation(key, count)

    def take(index: Array) -> TaskData:
        return jax.tree.map(lambda array: array[index], data)

    return take(order[held_out:]), take(order[:held_out])
