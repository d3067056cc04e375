"""The vanishing-gradient study: train every cell on long-range tasks and watch gradients.

For each task, cell variant, sequence length and seed, one run trains a
one-layer model with the same hidden size, optimizer and step budget, and
records

- the test loss against the task's trivial baseline, solved / partial / failed
  by the literature's criteria (`SOLVED_BELOW`, `FAILED_ABOVE`), the steps to
  solve and the wall time;
- `log10 ||dL/dh_t||` for every step `t` on a fixed batch of test sequences, at
  initialisation and after every evaluation, with the gradient horizon;
- `log10 ||dh_T/dh_t||` and the cell's health figures at initialisation and at the end.

`run_study` returns everything as one JSON-able dict; `rnnjax.report` writes it
up as Markdown and `rnnjax.plots` draws it. `python benchmarks/vanishing.py`
(or `rnnjax bench vanishing`) runs all three.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
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
from rnnjax.tasks import get_task
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
    """The cell of a study variant; `max_length` sets the chrono initialisation's range."""
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


# Success criteria, as fractions of the task's baseline loss or absolute values.
# adding: solved below MSE 0.01 (Arjovsky et al. 2016 and later work); failed when
# within 10% of the baseline 1/6. copy: solved when the cross-entropy beats the
# memoryless baseline by 10% or more; failed when within 10% of it.
# recall: solved when 90% of the target's variance is explained.
def solved_threshold(task: str, baseline: float) -> float:
    """The test loss at or below which a run counts as solved."""
    return {"adding": 0.01, "copy": 0.9 * baseline, "recall": 0.1 * baseline}[task]


def classify(task: str, loss: float, baseline: float) -> str:
    """`"solved"`, `"failed"` (within 10% of the baseline, or worse) or `"partial"`."""
    if loss <= solved_threshold(task, baseline):
        return "solved"
    if loss >= 0.9 * baseline:
        return "failed"
    return "partial"


# The fields of `StudyConfig` that make its grid; the others are training settings.
GRID_FIELDS = ("tasks", "variants", "lengths", "seeds")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study covers and how each run trains.

    Attributes:
      tasks, variants, lengths, seeds: the grid.
      steps: the step budget of every run (runs stop early once solved).
      hidden, batch_size, lr, clip: the shared training settings (Adam).
      eval_every: steps between evaluations and gradient probes.
      test_size: held-out sequences per evaluation.
      probe_size: test sequences the gradient probes average over.
    """

    tasks: tuple[str, ...] = STUDY_TASKS
    variants: tuple[str, ...] = tuple(VARIANTS)
    lengths: tuple[int, ...] = (50, 100, 200, 400, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
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


def _rounded(values: Any, digits: int = 3) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def _norms_record(norms: diagnostics.StateNorms) -> dict:
    """Per-leaf norms by name (`h`, `c`), plus the whole state's when it has several
    leaves; a state that is one array is the cell's hidden state, `h`."""
    if set(norms.leaves) == {"state"}:
        return {"h": _rounded(norms.state)}
    record = {name: _rounded(values) for name, values in norms.leaves.items()}
    record["state"] = _rounded(norms.state)
    # A state without an `h` leaf (the LRU's complex state, `re` and `im`) is its hidden
    # state as a whole.
    record.setdefault("h", record["state"])
    return record


def _hidden_norms(norms: diagnostics.StateNorms) -> Any:
    """The norms of the hidden state `h`: the leaf named so, or the whole state."""
    return norms.leaves.get("h", norms.state)


def run_one(
    study: StudyConfig, task_name: str, variant: str, length: int, seed: int, log: Callable
) -> dict:
    """Trains one configuration and returns its record (see the module docstring)."""
    task = get_task(task_name)
    input_length = length + 20 if task_name == "copy" else length
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
    threshold = solved_threshold(task_name, baseline)
    probe = diagnostics.make_probe(cell, task.loss, task.per_step)
    probe_xs = run.test_data.inputs[: study.probe_size]
    probe_targets = run.test_data.targets[: study.probe_size]

    def measure(params: Any, with_jacobian: bool) -> dict:
        result = probe(params, probe_xs, probe_targets)
        record = {
            "grad": _norms_record(result.gradients),
            "horizon": diagnostics.gradient_horizon(_hidden_norms(result.gradients)),
        }
        if with_jacobian:
            record["jacobian"] = _norms_record(result.jacobians)
            record["health"] = diagnostics.cell_health(cell, params.layers[0], probe_xs)._asdict()
        return record

    at_init = measure(run.state.params, with_jacobian=True)
    during: list[dict] = []

    def on_evaluation(state: train.TrainState, history: dict) -> bool:
        record = measure(state.params, with_jacobian=False)
        during.append(
            {
                "step": int(state.step),
                "log10_grad_h": record["grad"]["h"],
                "horizon": record["horizon"],
            }
        )
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
            target_loss=threshold,
            callback=on_evaluation,
            progress=sys.stderr.isatty(),  # the study logs one line per run elsewhere
            save=keep,
            save_every=study.eval_every,
        )
    except train.NonFiniteError as error:
        diverged_at, history, state = error.step, error.history, last_good["state"]
        history["eval"] = [e for e in history["eval"] if np.isfinite(e["loss"])]
    seconds = time.perf_counter() - started
    final = history["eval"][-1] if history["eval"] else run.evaluate(state.params)
    status = "failed" if diverged_at is not None else classify(task_name, final["loss"], baseline)
    record = {
        "task": task_name,
        "variant": variant,
        "length": length,
        "seed": seed,
        "status": status,
        "final_test_loss": final["loss"],
        "final_test_accuracy": final.get("accuracy"),
        "baseline_loss": baseline,
        "solved_below": threshold,
        "steps_to_solve": int(state.step) if status == "solved" else None,
        "steps": int(state.step) if diverged_at is None else diverged_at,
        "diverged_at_step": diverged_at,
        "seconds": seconds,
        "eval": history["eval"],
        "diagnostics": {
            "init": at_init,
            "final": measure(state.params, with_jacobian=True),
            "during": during,
        },
    }
    log(
        f"  {task_name:<6} T={length:<5} {variant:<11} seed {seed}: {status:<7} "
        + (f"(diverged at step {diverged_at}) " if diverged_at is not None else "")
        + f"test loss {final['loss']:.4g} (baseline {baseline:.4g}) at step {int(state.step)}, "
        f"{seconds:.0f}s; horizon {at_init['horizon']} -> "
        f"{record['diagnostics']['final']['horizon']}"
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


def run_study(
    study: StudyConfig,
    *,
    previous: Sequence[dict] = (),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    on_record: Callable[[list[dict]], None] | None = None,
) -> dict:
    """Runs every configuration of `study` not already in `previous`; returns the results.

    Args:
      study: the grid and the training settings.
      previous: records of an earlier, interrupted study with the same
        settings; their configurations are not run again.
      log: where progress lines go (stderr by default).
      on_record: called with all records after each run (the benchmark script
        saves `results.json` there, so an interrupted study loses at most one run).
    """
    records = list(previous)
    done = {run_key(r) for r in records}
    grid = study_grid(study)
    todo = [item for item in grid if item not in done]
    log(f"vanishing-gradient study: {len(todo)} runs to do ({len(grid) - len(todo)} done)")
    started = time.perf_counter()
    for index, item in enumerate(todo, 1):
        log(f"[{index}/{len(todo)}] {time.perf_counter() - started:.0f}s elapsed")
        records.append(run_one(study, *item, log=log))
        if on_record is not None:
            on_record(records)
    return {"meta": study_metadata(study), "runs": records}


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
        "cpus_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
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


def load_results(path: str) -> dict:
    """Reads a results file, gzip-compressed when its name ends in `.gz`.

    Raises:
      OSError: the file cannot be read. ValueError: it is not valid (compressed) JSON.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            return json.load(file)
    except (EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is not a complete gzip file: {error}") from None


def save_results(path: str, results: dict) -> str:
    """Writes the results atomically: indented JSON, or compact gzip-compressed JSON when
    `path` ends in `.gz`."""
    if not path.endswith(".gz"):
        return _files.write_json(path, results)
    payload = json.dumps(results, separators=(",", ":")).encode()
    return _files.write_atomically(path, lambda f: f.write(gzip.compress(payload, mtime=0)))
