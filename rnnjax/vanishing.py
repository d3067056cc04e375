"""The vanishing-gradient study: train every cell on long-range tasks and watch gradients.

For each task, cell variant, sequence length and seed, one run trains a
one-layer model with the same hidden size, optimizer and step budget (the whole
budget: no early stop, so every run's final loss is comparable), and records

- the test loss at every evaluation, the first step at which the task's
  criterion (`CRITERIA`) was met, and the status: solved, partial (beats the
  task's trivial baseline by 10% at the end), failed or diverged;
- the gradient through time on a fixed batch of test sequences, at
  initialisation and after every evaluation: `log10 ||dL/ds_t||` over the whole
  state and per leaf (`h`, `c`), its decay rate in decades per step (a least-squares
  fit, `rnnjax.diagnostics.gradient_decay`), its horizon, and the gradient reaching
  the inputs that matter (`marked_inputs`: the adding problem's markers, the copied
  symbols, the first value);
- `log10 ||dh_T/ds_t||` and the cell's health figures at initialisation and at the end.

For the copy task (a loss at every step) the gradients are those of the recall
steps' loss alone, up to the first recall step: the part of the gradient
*propagated* back through the recurrence, without the direct terms of the blank
steps that would otherwise dominate every step's gradient.

`run_study` returns everything as one JSON-able dict; `rnnjax.summary` reduces it
to per-run rows and statistics, `rnnjax.report` writes it up as Markdown and
`rnnjax.plots` draws it. `python benchmarks/vanishing.py` (or `rnnjax bench
vanishing`) runs all of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import gzip
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from rnnjax import _files, diagnostics, runs, train
from rnnjax.cells import Cell, chrono_bias_init
from rnnjax.tasks import COPY_RECALL, TaskData, get_task
from rnnjax.zoo import gru, lstm, make_cell, rnn

STUDY_TASKS = ("adding", "copy", "recall")

# Cell variants: the three classic cells, the LSTM under two more initialisations of
# its forget gate (the default is forget bias +1), and the later cells of `rnnjax.zoo`
# with their papers' default initialisations.
VARIANTS: dict[str, str] = {
    "rnn": "vanilla RNN (tanh)",
    "lstm": "LSTM, forget bias 1",
    "gru": "GRU",
    "lstm-fb0": "LSTM, forget bias 0",
    "lstm-chrono": "LSTM, chrono init (Tallec & Ollivier 2018)",
    "indrnn": "IndRNN (Li et al. 2018)",
    "exprnn": "expRNN (Lezcano-Casado & Martinez-Rubio 2019)",
    "lru": "LRU (Orvieto et al. 2023)",
    "min_gru": "minGRU (Feng et al. 2024)",
    "min_lstm": "minLSTM (Feng et al. 2024)",
}
ZOO_VARIANTS = ("indrnn", "exprnn", "lru", "min_gru", "min_lstm")


def make_variant_cell(variant: str, hidden: int, max_length: int) -> Cell:
    """The cell of a study variant; `max_length`, the input sequence's length, sets the
    chrono initialisation's range and IndRNN's bound `|u| <= 2^(1/max_length)` (the
    paper's, with which its adding-problem networks train)."""
    if variant == "indrnn":
        return make_cell("indrnn", hidden, recurrent_max_abs=2.0 ** (1.0 / max_length))
    builders: dict[str, Callable[[], Cell]] = {
        "rnn": lambda: rnn(hidden),
        "lstm": lambda: lstm(hidden, forget_bias=1.0),
        "gru": lambda: gru(hidden),
        "lstm-fb0": lambda: lstm(hidden, forget_bias=0.0),
        "lstm-chrono": lambda: lstm(
            hidden, forget_bias=0.0, bias_init=chrono_bias_init(max(max_length, 3))
        ),
    }
    if variant in ZOO_VARIANTS:
        return make_cell(variant, hidden)
    if variant not in builders:
        raise ValueError(f"cell variant must be one of {list(VARIANTS)}, got {variant!r}")
    return builders[variant]()


# What each task's criterion is, in words: the report states it from here.
CRITERIA = {
    "adding": "solved: test MSE below 0.01 (Arjovsky, Shah & Bengio 2016 and later work; "
    "the trivial baseline, predicting 1, scores 1/6)",
    "copy": "solved: at least 99% of the recalled symbols right on the test set (guessing "
    "gets 12.5%); the cross-entropy's trivial baseline is 10 ln 8 / (T + 20)",
    "recall": "solved: test MSE below 10% of the baseline (90% of the target's variance "
    "explained); the baseline, predicting the mean, scores 0.0833",
}
BEATS_BASELINE = 0.9  # "beats the baseline": a final test loss at most 90% of it


COPY_SOLVED_ACCURACY = 0.99


def solved_below(task: str, baseline: float) -> float | None:
    """The test loss below which a run of `task` is solved; `None` for copy, whose
    criterion is an accuracy (`COPY_SOLVED_ACCURACY`)."""
    return {"adding": 0.01, "recall": 0.1 * baseline}.get(task)


def meets_criterion(task: str, evaluation: dict, baseline: float) -> bool:
    """Whether one evaluation (`{"loss", ["accuracy"]}`) meets the task's criterion."""
    if task == "copy":
        return evaluation["accuracy"] >= COPY_SOLVED_ACCURACY
    return evaluation["loss"] < solved_below(task, baseline)


def classify(task: str, evaluations: Sequence[dict], baseline: float, diverged: bool) -> str:
    """A run's status from its evaluations in order: `"solved"` (the criterion met at any
    evaluation), `"diverged"` (its loss stopped being finite first), `"partial"` (the last
    loss beats the baseline by 10% or more) or `"failed"`."""
    if any(meets_criterion(task, e, baseline) for e in evaluations):
        return "solved"
    if diverged:
        return "diverged"
    if evaluations and evaluations[-1]["loss"] <= BEATS_BASELINE * baseline:
        return "partial"
    return "failed"


def marked_inputs(task: str, data: TaskData) -> np.ndarray:
    """The input steps a task's target depends on, `(N, T_in)` booleans: the adding
    problem's two marked values, the copy task's 10 symbols, the recall task's first value."""
    inputs = np.asarray(data.inputs)
    marks = np.zeros(inputs.shape[:2], dtype=bool)
    if task == "adding":
        marks = inputs[..., 1] > 0.5
    elif task == "copy":
        marks[:, :COPY_RECALL] = True
    else:
        marks[:, 0] = True
    return marks


# The fields of `StudyConfig` that make its grid; the others are training settings.
GRID_FIELDS = ("tasks", "variants", "lengths", "seeds")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study covers and how each run trains.

    Attributes:
      tasks, variants, lengths, seeds: the grid.
      steps: the step budget of every run; every run trains all of it.
      hidden, batch_size, lr, clip: the shared training settings (Adam).
      eval_every: steps between evaluations and gradient probes.
      test_size: held-out sequences per evaluation.
      probe_size: test sequences the gradient probes average over.
    """

    tasks: tuple[str, ...] = STUDY_TASKS
    variants: tuple[str, ...] = tuple(VARIANTS)
    lengths: tuple[int, ...] = (50, 200, 1000)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 3000
    hidden: int = 64
    batch_size: int = 64
    lr: float = 1e-3
    clip: float = 1.0
    eval_every: int = 100
    test_size: int = 1000
    probe_size: int = 16

    def __post_init__(self) -> None:
        for task in self.tasks:
            if task not in STUDY_TASKS:
                raise ValueError(f"tasks must be among {list(STUDY_TASKS)}, got {task!r}")
        for variant in self.variants:
            if variant not in VARIANTS:
                raise ValueError(f"cells must be among {list(VARIANTS)}, got {variant!r}")
        for name in GRID_FIELDS:
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        for length in self.lengths:
            if isinstance(length, bool) or not isinstance(length, int) or length < 2:
                raise ValueError(f"lengths must be integers >= 2, got {length!r}")
        if self.probe_size > self.test_size:
            raise ValueError(
                f"probe_size ({self.probe_size}) must not exceed test_size ({self.test_size})"
            )


QUICK = StudyConfig(
    tasks=("adding",),
    variants=("rnn", "lstm", "gru", "lstm-fb0", "lstm-chrono", "min_gru"),
    lengths=(50, 100),
    seeds=(0,),
    steps=2000,
    test_size=500,
)


def _rounded(values: Any, digits: int) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _norms_record(norms: diagnostics.StateNorms, digits: int) -> dict:
    """Per-leaf norms by name (`h`, `c`), plus the whole state's; a state that is one
    array is the cell's hidden state, `h`, and the whole state alike."""
    record = {name: _rounded(values, digits) for name, values in norms.leaves.items()}
    record["state"] = _rounded(norms.state, digits)
    # A state without an `h` leaf (a single array, or the LRU's complex state, `re` and
    # `im`) is its hidden state as a whole.
    record.setdefault("h", record["state"])
    return record


def gradient_summary(norms: diagnostics.StateNorms, anchor: int) -> dict:
    """Decay rate (decades per step) and horizon of the gradient over steps `0..anchor`
    (the gradient at `anchor` is the reference), over the whole state and over `h`."""
    hidden = norms.leaves.get("h", norms.state)
    summary: dict = {"decay": {}, "horizon": {}}
    for name, values in (("state", norms.state), ("h", hidden)):
        window = np.asarray(values, dtype=np.float64)[: anchor + 1]
        summary["decay"][name] = diagnostics.gradient_decay(window)
        summary["horizon"][name] = diagnostics.gradient_horizon(window)
    return summary


def marked_input_gradient(log10_inputs: Any, marks: np.ndarray) -> float | None:
    """The geometric mean of `||dL/dx_t||` over the marked inputs of every sequence, as
    log10 (the mean of the log10 norms); `None` where one of them is exactly zero."""
    values = np.asarray(log10_inputs, dtype=np.float64)[marks]
    return _finite_or_none(float(np.mean(values)))


def run_one(
    study: StudyConfig, task_name: str, variant: str, length: int, seed: int, log: Callable
) -> dict:
    """Trains one configuration for the whole budget and returns its record (see the
    module docstring)."""
    task = get_task(task_name)
    input_length = length + 2 * COPY_RECALL if task_name == "copy" else length
    config = runs.TrainConfig(
        task=task_name,
        cell="lstm" if variant.startswith("lstm-") else variant,
        length=length,
        hidden=study.hidden,
        steps=study.steps,
        batch_size=study.batch_size,
        lr=study.lr,
        clip=study.clip,
        forget_bias=1.0 if variant == "lstm" else 0.0,
        seed=seed,
        test_size=study.test_size,
        eval_every=study.eval_every,
        # Each cell's default path (`Cell.sequence`), equal to its equations up to
        # rounding (tested in float64).
        fused=None,
    )
    cell = make_variant_cell(variant, study.hidden, input_length)
    run = runs.build(config, cell=cell)
    baseline = task.baseline_loss(length)
    probe = diagnostics.make_probe(cell, task.loss, task.per_step)
    probe_data = TaskData(*(None if a is None else a[: study.probe_size] for a in run.test_data))
    # The copy task's gradients are the recall steps' alone (`readout_head`): every
    # step before the first recall step then gets only the propagated part.
    probe_mask = probe_data.mask
    anchor = input_length - COPY_RECALL if task_name == "copy" else input_length - 1
    marks = marked_inputs(task_name, probe_data)

    # Per-step curves are stored rounded (log10 values to 0.01 at initialisation and at
    # the end, 0.1 during training, whole state only) to keep a study's results small
    # enough to commit; the decay rates and horizons come from the unrounded values.
    def measure(params: Any, with_jacobian: bool) -> dict:
        result = probe(params, probe_data.inputs, probe_data.targets, probe_mask)
        record = {
            "grad": _norms_record(result.gradients, digits=2)
            if with_jacobian
            else {"state": _rounded(result.gradients.state, digits=1)},
            **gradient_summary(result.gradients, anchor),
            "log10_grad_x_marked": marked_input_gradient(result.inputs, marks),
        }
        if with_jacobian:
            record["jacobian"] = _norms_record(result.jacobians, digits=2)
            record["health"] = diagnostics.cell_health(
                cell, params.layers[0], probe_data.inputs
            )._asdict()
        return record

    at_init = measure(run.state.params, with_jacobian=True)
    during: list[dict] = []

    def on_evaluation(state: train.TrainState, history: dict) -> bool:
        record = measure(state.params, with_jacobian=False)
        during.append({"step": int(state.step), **record})
        return False

    # The last state whose loss, gradients and evaluation were finite: where a run
    # diverges (its loss becomes NaN or infinite), its final measurements are taken there.
    last_good = {"state": run.state}

    def keep(state: train.TrainState) -> str:
        last_good["state"] = state
        return f"memory (step {int(state.step)})"

    started = time.perf_counter()
    diverged_at = None
    try:
        state, history = train.fit(
            run.state,
            run.train_step,
            run.batches,
            num_steps=study.steps,
            evaluate=run.evaluate,
            eval_every=study.eval_every,
            log_every=study.eval_every,
            callback=on_evaluation,
            progress=sys.stderr.isatty(),  # the study logs one line per run elsewhere
            save=keep,
            save_every=study.eval_every,
        )
    except train.NonFiniteError as error:
        diverged_at, history, state = error.step, error.history, last_good["state"]
        history["eval"] = [e for e in history["eval"] if np.isfinite(e["loss"])]
    seconds = time.perf_counter() - started
    evaluations = history["eval"] or [{"step": 0, **run.evaluate(state.params)}]
    final = evaluations[-1]
    solved_at = next(
        (e["step"] for e in evaluations if meets_criterion(task_name, e, baseline)), None
    )
    status = classify(task_name, evaluations, baseline, diverged=diverged_at is not None)
    record = {
        "task": task_name,
        "variant": variant,
        "length": length,
        "seed": seed,
        "status": status,
        "final_test_loss": final["loss"],
        "final_test_accuracy": final.get("accuracy"),
        "solved_at_end": meets_criterion(task_name, final, baseline),
        "baseline_loss": baseline,
        "beats_baseline": final["loss"] <= BEATS_BASELINE * baseline,
        "steps_to_solve": solved_at,
        "steps": int(state.step) if diverged_at is None else diverged_at,
        "diverged_at_step": diverged_at,
        "parameters": sum(int(np.size(a)) for a in jax.tree.leaves(run.state.params)),
        "seconds": seconds,
        "anchor_step": anchor,
        "eval": evaluations,
        "diagnostics": {
            "init": at_init,
            "final": measure(state.params, with_jacobian=True),
            "during": during,
        },
    }
    decay = [record["diagnostics"][m]["decay"]["state"] for m in ("init", "final")]
    log(
        f"  {task_name:<6} T={length:<5} {variant:<11} seed {seed}: {status:<8} "
        + (f"(diverged at step {diverged_at}) " if diverged_at is not None else "")
        + (f"solved at step {solved_at}; " if solved_at is not None else "")
        + f"final test loss {final['loss']:.4g} (baseline {baseline:.4g}), {seconds:.0f}s; "
        f"steps per decade {diagnostics.steps_per_decade(decay[0]):.3g} -> "
        f"{diagnostics.steps_per_decade(decay[1]):.3g}"
    )
    return record


def study_grid(study: StudyConfig) -> list[tuple]:
    """Every run of `study` as `(task, variant, length, seed)`, in the order they run:
    seed by seed, so an interrupted study holds whole seeds first."""
    return [
        (task, variant, length, seed)
        for seed in study.seeds
        for task in study.tasks
        for length in study.lengths
        for variant in study.variants
    ]


def run_key(record: dict) -> tuple:
    """A run's configuration: `(task, variant, length, seed)`."""
    return (record["task"], record["variant"], record["length"], record["seed"])


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# The JAX settings a run's numbers depend on, copied into the processes of `run_study`.
_INHERITED_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_disable_most_optimizations",
)


def _jax_settings() -> dict:
    return {name: jax.config.values[name] for name in _INHERITED_SETTINGS}


def _apply_jax_settings(settings: dict) -> None:
    for name, value in settings.items():
        jax.config.update(name, value)


def usable_cores() -> int:
    """The CPU cores this process may run on (`os.sched_getaffinity`, or `os.cpu_count()`)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_study(
    study: StudyConfig,
    *,
    previous: Sequence[dict] = (),
    log: Callable[[str], None] = _print_line,
    on_record: Callable[[list[dict]], None] | None = None,
    jobs: int = 1,
) -> dict:
    """Runs every configuration of `study` not already in `previous`; returns the results.

    Args:
      study: the grid and the training settings.
      previous: records of an earlier, interrupted study with the same
        settings; their configurations are not run again.
      log: where progress lines go (stderr by default). With `jobs > 1` each run's
        own line is printed to stderr by the process that ran it.
      on_record: called with all records, in grid order, after each run (the benchmark
        script saves `results.json` there, so an interrupted study loses at most the
        runs in progress).
      jobs: how many runs train at once, each in its own process (one per core is
        the natural choice: a run keeps about one core busy), with this process's JAX
        settings (x64, matmul precision, PRNG). The runs' numbers do not depend on it;
        their wall times do, since the processes share the machine.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    records = list(previous)
    done = {run_key(r) for r in records}
    grid = study_grid(study)
    position = {key: index for index, key in enumerate(grid)}

    def in_grid_order(records: list[dict]) -> list[dict]:
        return sorted(records, key=lambda r: position.get(run_key(r), len(grid)))

    todo = [item for item in grid if item not in done]
    jobs = min(jobs, max(len(todo), 1))
    log(
        f"vanishing-gradient study: {len(todo)} runs to do ({len(grid) - len(todo)} done)"
        + (f", {jobs} at a time" if jobs > 1 else "")
    )
    started = time.perf_counter()

    def finished(record: dict) -> None:
        records.append(record)
        if on_record is not None:
            on_record(in_grid_order(records))

    if jobs == 1:
        for index, item in enumerate(todo, 1):
            log(f"[{index}/{len(todo)}] {time.perf_counter() - started:.0f}s elapsed")
            finished(run_one(study, *item, log=log))
    else:
        # Fresh interpreters ("spawn"): a forked JAX process is not safe to use.
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_apply_jax_settings, initargs=(_jax_settings(),)
        )
        try:
            futures = [pool.submit(run_one, study, *item, log=_print_line) for item in todo]
            for index, future in enumerate(concurrent.futures.as_completed(futures), 1):
                finished(future.result())
                log(f"[{index}/{len(todo)} done] {time.perf_counter() - started:.0f}s elapsed")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"meta": study_metadata(study), "runs": in_grid_order(records)}


def matching_runs(results: dict, **match: object) -> list[dict]:
    """The records of `results` whose fields equal `match`, e.g. `task="adding", length=100`."""
    return [r for r in results["runs"] if all(r[k] == v for k, v in match.items())]


def showcase(results: dict) -> tuple[str, int, int]:
    """The (task, length, seed) the per-step figures show: the adding problem if it was
    run, at the longest length that every cell variant has reached (in a partial study)."""
    tasks = [r["task"] for r in results["runs"]]
    task = "adding" if "adding" in tasks else tasks[0]
    runs = matching_runs(results, task=task)
    seed = min(r["seed"] for r in runs)
    lengths = {r["length"] for r in runs}

    def coverage(length: int) -> tuple[int, int]:
        return len(
            {r["variant"] for r in matching_runs(results, task=task, seed=seed, length=length)}
        ), length

    return task, max(lengths, key=coverage), seed


def study_metadata(study: StudyConfig) -> dict:
    """The settings and the machine, recorded next to the results."""
    return {
        "study": dataclasses.asdict(study),
        "variants": VARIANTS,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "cpus_used": usable_cores(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


RESULTS_FILE = "results.json"
COMPRESSED_RESULTS_FILE = "results.json.gz"


def results_path(folder: str) -> str:
    """The study's results file in `folder`: `results.json`, or `results.json.gz` when only
    that one exists (a committed study, stored compressed to stay small enough to clone).
    A study resumed or merged there keeps writing the file it found."""
    plain = os.path.join(folder, RESULTS_FILE)
    compressed = os.path.join(folder, COMPRESSED_RESULTS_FILE)
    if not os.path.exists(plain) and os.path.exists(compressed):
        return compressed
    return plain


def _read_json(path: str) -> Any:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            return json.load(file)
    except (EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is not a complete gzip file: {error}") from None


def _seed_part_name(path: str, seed: object) -> str:
    """`results.json.gz` -> `results-seed-3.json.gz`: the file of one seed's runs."""
    name = os.path.basename(path)
    stem = name[: -len(".json.gz")] if name.endswith(".json.gz") else name[: -len(".gz")]
    return f"{stem}-seed-{seed}.json.gz"


def load_results(path: str) -> dict:
    """Reads a results file: JSON, or gzip-compressed JSON when its name ends in `.gz`.

    A compressed file written by `save_results` lists the files of its seeds
    (`"parts"`, beside it); their runs are read and returned in one `"runs"` list, in
    the order the parts are listed, as if they were one file.

    Raises:
      OSError: the file or one of its parts cannot be read. ValueError: it is not
        valid (compressed) JSON, or a part does not hold the runs the file lists.
    """
    results = _read_json(path)
    parts = results.pop("parts", None)
    if parts is None:
        return results
    folder = os.path.dirname(path)
    runs_read: list[dict] = []
    for part in parts:
        part_path = os.path.join(folder, part["file"])
        part_runs = _read_json(part_path)["runs"]
        if len(part_runs) != part["runs"]:
            raise ValueError(
                f"{part_path} holds {len(part_runs)} runs, {path} lists {part['runs']}: "
                "the two were not written together"
            )
        runs_read += part_runs
    return {**results, "runs": runs_read}


def save_results(path: str, results: dict) -> str:
    """Writes the results atomically: indented JSON, or, when `path` ends in `.gz`,
    compact gzip-compressed JSON split by seed.

    The compressed form keeps each seed's runs in a file of its own beside `path`
    (`results-seed-0.json.gz`, ...; `path` itself holds the settings and lists them),
    so that no file grows with the whole study and, since a study runs seed by seed, a
    finished seed's file stays byte for byte the same while later seeds are added. A
    part whose content has not changed is not rewritten. `load_results` reads them
    back as one.
    """
    if not path.endswith(".gz"):
        return _files.write_json(path, results)
    by_seed: dict[object, list[dict]] = {}
    for run in results["runs"]:
        by_seed.setdefault(run["seed"], []).append(run)
    parts = []
    for seed, seed_runs in by_seed.items():
        name = _seed_part_name(path, seed)
        _write_compressed_if_changed(os.path.join(os.path.dirname(path), name), {"runs": seed_runs})
        parts.append({"file": name, "seed": seed, "runs": len(seed_runs)})
    index = {key: value for key, value in results.items() if key != "runs"}
    # The list of parts is written last: a reader never finds it naming a part not yet
    # written.
    return _write_compressed_if_changed(path, {**index, "parts": parts})


def _write_compressed_if_changed(path: str, payload: Any) -> str:
    data = gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), mtime=0)
    if os.path.exists(path):
        with open(path, "rb") as file:
            if file.read() == data:
                return path
    return _files.write_atomically(path, lambda f: f.write(data))
