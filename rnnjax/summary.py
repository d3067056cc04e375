"""The vanishing-gradient study reduced to numbers: one row per run, statistics per grid point.

- `run_row`: a run's record (`rnnjax.vanishing.run_one`) as one flat row, the
  columns of `runs.csv` (`write_runs_csv`);
- `wilson_interval`: a 95% interval for a success rate `k/n` (Wilson 1927), which
  stays inside `[0, 1]` and is informative at `k = 0` and `k = n`, where the normal
  approximation collapses to a point;
- `censored_median`: the median steps to solve when some runs never solve:
  those count as solving after the budget (right-censored), so the median is a
  number only when at least half the runs solved.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from rnnjax import _files
from rnnjax.diagnostics import steps_per_decade

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion, 95% by default.

    `(p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)` with `p = k/n`.

    Example:
      >>> from rnnjax.summary import wilson_interval
      >>> [round(v, 4) for v in wilson_interval(0, 5)], [round(v, 4) for v in wilson_interval(5, 5)]
      ([0.0, 0.4345], [0.5655, 1.0])
    """
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    scale = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / scale
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / scale
    # At k = 0 and k = n the bound is exactly 0 or 1 (centre = half); say so exactly,
    # not up to rounding, so that `p` always lies within the interval.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def censored_median(times: Sequence[int | None]) -> int | None:
    """The median of steps-to-solve where `None` marks a run that never solved.

    Unsolved runs are censored at the budget: they solve, if ever, after every
    solved run. The median is the smallest time by which at least half the runs had
    solved, the `ceil(n/2)`-th smallest (the lower median, an observed value); `None`
    when fewer than half solved (the median lies beyond the budget).

    Example:
      >>> from rnnjax.summary import censored_median
      >>> censored_median([300, 500, None, 400, None]), censored_median([300, None, None])
      (500, None)
    """
    if not times:
        raise ValueError("censored_median needs at least one run")
    ordered = sorted(times, key=lambda t: math.inf if t is None else t)
    return ordered[math.ceil(len(ordered) / 2) - 1]


def _decay(record: dict, moment: str, part: str) -> float:
    return record["diagnostics"][moment]["decay"][part]


COLUMNS = (
    "task",
    "cell",
    "length",
    "seed",
    "status",
    "steps_to_solve",
    "solved_at_end",
    "final_loss",
    "final_accuracy",
    "baseline_loss",
    "beats_baseline",
    "diverged_at_step",
    "steps",
    "parameters",
    "steps_per_decade_state_init",
    "steps_per_decade_state_final",
    "steps_per_decade_h_init",
    "steps_per_decade_h_final",
    "horizon_state_init",
    "horizon_state_final",
    "log10_grad_x_marked_init",
    "log10_grad_x_marked_final",
    "seconds",
)


def run_row(record: dict) -> dict:
    """One run as a flat row of `COLUMNS`; `None` where a figure does not apply
    (`steps_to_solve` of an unsolved run, `final_accuracy` of a regression task)."""
    diagnostics = record["diagnostics"]
    return {
        "task": record["task"],
        "cell": record["variant"],
        "length": record["length"],
        "seed": record["seed"],
        "status": record["status"],
        "steps_to_solve": record["steps_to_solve"],
        "solved_at_end": record["solved_at_end"],
        "final_loss": record["final_test_loss"],
        "final_accuracy": record["final_test_accuracy"],
        "baseline_loss": record["baseline_loss"],
        "beats_baseline": record["beats_baseline"],
        "diverged_at_step": record["diverged_at_step"],
        "steps": record["steps"],
        "parameters": record["parameters"],
        **{
            f"steps_per_decade_{part}_{moment}": steps_per_decade(_decay(record, moment, part))
            for part in ("state", "h")
            for moment in ("init", "final")
        },
        "horizon_state_init": diagnostics["init"]["horizon"]["state"],
        "horizon_state_final": diagnostics["final"]["horizon"]["state"],
        "log10_grad_x_marked_init": diagnostics["init"]["log10_grad_x_marked"],
        "log10_grad_x_marked_final": diagnostics["final"]["log10_grad_x_marked"],
        "seconds": record["seconds"],
    }


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else str(value))
    return str(value)


def runs_csv(records: Sequence[dict]) -> str:
    """`runs.csv`'s text: a header of `COLUMNS` and one row per run, in the records'
    order; empty cells for `None`, `inf` for a gradient that does not decay."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in records:
        row = run_row(record)
        writer.writerow([_cell(row[column]) for column in COLUMNS])
    return buffer.getvalue()


def write_runs_csv(path: str, records: Sequence[dict]) -> str:
    """Writes `runs_csv(records)` to `path` atomically; returns the path."""
    return _files.write_text(path, runs_csv(records))
