"""The vanishing-gradient study written up as Markdown: tables, criteria, statistics, captions.

Every number comes from the results dict (`rnnjax.vanishing.run_study`) through the
per-run rows of `rnnjax.summary` (the columns of `runs.csv`), so each one can be
traced to `results.json` or the CSV.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from rnnjax import summary
from rnnjax.diagnostics import steps_per_decade
from rnnjax.vanishing import CRITERIA, GRID_FIELDS, VARIANTS, matching_runs, showcase

TASK_NAMES = {"adding": "Adding problem", "copy": "Copy memory", "recall": "Recall the first value"}

# The study's figures, with the caption the report prints under each.
CAPTIONS = {
    "grad_norms": "Gradient norm through time, relative to the gradient at the last scored "
    "step, against the lag (steps back from it), at initialisation and after training. Thin "
    "lines: seeds; bold: their median. A line falling to the right is a vanishing gradient: "
    "inputs that many steps back get that many decades less learning signal.",
    "grad_heatmap": "The same relative gradient norm (colour, log10) at every lag (x) and at "
    "every evaluation during training (y), first seed. The title says how the run ended: the "
    "step it met the criterion, or failed / partial / diverged.",
    "learning_curves": "Test loss during training, every seed (thin) and the median (bold), "
    "one panel per task and length; grey dashes: the trivial baseline; grey dots: the loss "
    "below which the adding and recall tasks count as solved (copy's criterion is an "
    "accuracy). A dot marks the "
    "evaluation at which a run first met the criterion, a cross a diverged run's last finite "
    "loss.",
    "success_vs_length": "Success rate against sequence length, with Wilson 95% intervals, "
    "and the median final test loss relative to the baseline (below).",
}


def _ordered(values: set, order: list) -> list:
    return [v for v in order if v in values]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# Steps per decade at which a gradient counts as flat in the tables.
FLAT_STEPS_PER_DECADE = 1e6


def format_steps_per_decade(decay: float) -> str:
    """A decay rate as steps per decade, to 3 significant digits: `"37.4"`, `"2,530"`,
    `"−12"` (grows going back), `"∞"` (flat: a million steps or more per decade, a
    change of less than 0.1% over a thousand steps; the slope fitted to an exactly
    flat gradient, such as an orthogonal cell's, is rounding, not decay).

    Example:
      >>> from rnnjax.report import format_steps_per_decade
      >>> rates = (1 / 37.44, 1 / 2534.0, -1 / 12.0, 0.0, 2.4e-19)
      >>> " ".join(format_steps_per_decade(d) for d in rates)
      '37.4 2,530 −12 ∞ ∞'
    """
    value = steps_per_decade(decay)
    if math.isnan(value):
        return "–"
    if abs(value) >= FLAT_STEPS_PER_DECADE:
        return "∞"
    text = f"{float(f'{abs(value):.3g}'):,.0f}" if abs(value) >= 100 else f"{abs(value):.3g}"
    return text if value > 0 else f"−{text}"


def success_cell(runs: list[dict], budget: int) -> str:
    """`k/n [lo–hi] · median steps (range)`: runs solved, the Wilson 95% interval, the
    censored median steps to solve and the range over solved runs."""
    if not runs:
        return "–"
    times = [r["steps_to_solve"] for r in runs]
    solved = [t for t in times if t is not None]
    low, high = summary.wilson_interval(len(solved), len(runs))
    text = f"{len(solved)}/{len(runs)} [{low:.2f}–{high:.2f}]"
    median = summary.censored_median(times)
    if median is not None:
        spread = f" ({min(solved)}–{max(solved)})" if len(solved) > 1 else ""
        text += f" · {median}{spread}"
    elif solved:
        text += f" · > {budget}"
    return f"**{text}**" if len(solved) == len(runs) else text


def loss_cell(runs: list[dict]) -> str:
    """`b/n · median final loss [· accuracy]`: runs whose final loss beats the baseline."""
    if not runs:
        return "–"
    beat = sum(bool(r["beats_baseline"]) for r in runs)
    text = f"{beat}/{len(runs)} · {statistics.median(r['final_test_loss'] for r in runs):.3g}"
    accuracies = [r["final_test_accuracy"] for r in runs if r["final_test_accuracy"] is not None]
    if accuracies:
        text += f" · {100 * statistics.median(accuracies):.1f}%"
    return text


def _init_final(runs: list[dict], figure: Callable[[dict], float | None], fmt: Callable) -> str:
    if not runs:
        return "–"
    values = []
    for moment in ("init", "final"):
        numbers = [figure(r["diagnostics"][moment]) for r in runs]
        numbers = [n for n in numbers if n is not None and not math.isnan(n)]
        values.append(fmt(statistics.median(numbers)) if numbers else "–")
    return "–" if values == ["–", "–"] else " → ".join(values)


def _grid_table(
    results: dict,
    task: str,
    variants: list[str],
    lengths: list[int],
    cell: Callable[[list[dict]], str],
    with_parameters: bool = False,
) -> list[str]:
    """One row per cell variant, one column per length; `with_parameters` adds the model's
    parameter count (the same at every length)."""
    rows = []
    for variant in variants:
        found = matching_runs(results, task=task, variant=variant)
        if not found:
            continue
        row = [VARIANTS[variant]]
        if with_parameters:
            row.append(f"{found[0]['parameters']:,}")
        rows.append(
            row
            + [cell(matching_runs(results, task=task, variant=variant, length=t)) for t in lengths]
        )
    header = ["cell"] + (["parameters"] if with_parameters else []) + [f"T = {t}" for t in lengths]
    return _table(header, rows)


def _criteria_section(tasks: list[str], budget: int, eval_every: int) -> list[str]:
    lines = ["", "## Criteria and statistics", ""]
    lines += [f"- **{TASK_NAMES[task]}**: {CRITERIA[task]}." for task in tasks]
    lines += [
        "- A run is *solved* when its test set meets the criterion at an evaluation (every "
        f"{eval_every} steps) within the budget of {budget} steps; every run trains the "
        "whole budget (no early stop), so its final loss is the loss after the budget. It "
        "*beats the baseline* when its final test loss is at most 90% of the task's trivial "
        "baseline; *partial*: beats the baseline but not solved; *diverged*: its loss "
        "stopped being finite first.",
        "- Success: `k/n [Wilson 95% interval]`. Steps to solve: the median over all runs, "
        "runs that never solve counted as solving after the budget (censored), so it is a "
        "number only when at least half solved, shown with the range over the solved runs; "
        f"`> {budget}` when fewer than half solved. **Bold**: every run solved.",
        "- Gradient decay: the least-squares slope of log10 ‖∂L/∂s_t‖ against t over the "
        "whole sequence up to the last scored step, as *steps per decade* (how many steps "
        "back the gradient falls tenfold; larger is better, ∞ flat (a million or more), "
        "− grows going back), "
        "median over seeds, at initialisation → after training. s_t is the whole state (h "
        "and c for an LSTM); a second table gives h alone. Copy memory scores the recall "
        "steps only for these: the gradient before them is the part propagated through "
        "the recurrence.",
    ]
    return lines


def render(results: dict, command: str = "", figures: list[str] | None = None) -> str:
    """The Markdown report of a study's results; `figures`: the figure files to show
    (names without extension, PNG shown, SVG linked), each with its caption."""
    meta, runs = results["meta"], results["runs"]
    study = meta["study"]
    tasks = _ordered({r["task"] for r in runs}, list(TASK_NAMES))
    variants = _ordered({r["variant"] for r in runs}, list(VARIANTS))
    total = sum(r["seconds"] for r in runs)
    lines = [
        "# The vanishing-gradient study",
        "",
        f"{len(runs)} runs; one-layer models with {study['hidden']} hidden units, Adam "
        f"(learning rate {study['lr']}), gradient clipping at {study['clip']}, batch "
        f"{study['batch_size']}, {study['steps']} steps per run, test loss on "
        f"{study['test_size']} held-out sequences every {study['eval_every']} steps. "
        f"Gradients are measured on {study['probe_size']} test sequences.",
        "",
        f"Machine: {meta['cpu_count']} CPU cores ({meta.get('cpus_used') or meta['cpu_count']} "
        f"usable), {meta.get('jobs', 1)} run(s) at a time in separate processes (the wall "
        f"times below are under that load), JAX {meta['jax_version']} ({meta['backend']}), "
        "Python "
        f"{meta['python']}, {meta['date']}. Training time summed over the runs: {total / 60:.1f} "
        f"minutes. Every run is a row of `runs.csv`.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    if meta.get("merged_from"):
        lines += [
            "",
            "Runs merged in (`--merge`) from "
            + ", ".join(f"`{path}`" for path in meta["merged_from"])
            + ", made with the same settings by other processes.",
        ]
    planned = math.prod(len(study[k]) for k in GRID_FIELDS)
    if len(runs) < planned:
        lines += [
            "",
            f"**A partial study: {len(runs)} of the {planned} planned runs** (tasks "
            f"{', '.join(study['tasks'])}; lengths {', '.join(map(str, study['lengths']))}; "
            f"seeds {', '.join(map(str, study['seeds']))}). The same command with `--resume` "
            "runs the missing ones and keeps these.",
        ]
    lines += _criteria_section(tasks, study["steps"], study["eval_every"])
    for task in tasks:
        lines += _task_section(results, task, variants, study["steps"], study["probe_size"])
    lines += _health_section(results, variants)
    for name in figures or []:
        lines += ["", f"![{name}]({name}.png)", "", f"*{CAPTIONS[name]}* ([SVG]({name}.svg))"]
    return "\n".join(lines) + "\n"


def _task_section(
    results: dict, task: str, variants: list[str], budget: int, probe_size: int
) -> list[str]:
    lengths = sorted({r["length"] for r in matching_runs(results, task=task)})
    first = {t: matching_runs(results, task=task, length=t)[0] for t in lengths}
    lines = ["", f"## {TASK_NAMES[task]}", ""]
    lines += [
        "Solved (`k/n [95% interval] · median steps (range)`; parameters: the cell and its "
        "readout):",
        "",
    ]
    lines += _grid_table(
        results, task, variants, lengths, lambda r: success_cell(r, budget), with_parameters=True
    )
    lines += [
        "",
        "Final test loss after the budget (`runs beating the baseline / runs · median`"
        + (" · median accuracy on the recalled symbols" if task == "copy" else "")
        + "):",
        "",
    ]
    lines += _grid_table(results, task, variants, lengths, loss_cell)
    lines.append(
        "| *trivial baseline* | "
        + " | ".join(f"{first[t]['baseline_loss']:.3g}" for t in lengths)
        + " |"
    )
    marked = {"adding": "two marked values", "copy": "10 symbols to copy", "recall": "first value"}
    tables: list[tuple[str, Callable[[list[dict]], str]]] = [
        (
            f"Gradient decay over {what}, steps per decade (init → trained):",
            lambda r, part=part: _init_final(
                r, lambda d: d["decay"][part], format_steps_per_decade
            ),
        )
        for part, what in (("state", "the whole state"), ("h", "h alone"))
    ]
    tables += [
        (
            f"Gradient reaching the inputs that matter, log10 ‖∂L/∂x_t‖ at the {marked[task]} "
            f"(geometric mean over them and {probe_size} test sequences, median over seeds; "
            "init → trained):",
            lambda r: _init_final(r, lambda d: d["log10_grad_x_marked"], lambda v: f"{v:.1f}"),
        ),
        (
            "Gradient horizon over the whole state (steps back over which it stays within a "
            "factor 1000 of the last scored step's; init → trained):",
            lambda r: _init_final(r, lambda d: d["horizon"]["state"], lambda v: f"{v:.0f}"),
        ),
        (
            "Median wall time per run (seconds):",
            lambda r: f"{statistics.median(x['seconds'] for x in r):.0f}" if r else "–",
        ),
    ]
    for caption, cell in tables:
        lines += ["", caption, ""]
        lines += _grid_table(results, task, variants, lengths, cell)
    return lines


def _health_section(results: dict, variants: list[str]) -> list[str]:
    task, length, _ = showcase(results)
    lines = [
        "",
        f"## Cell health ({TASK_NAMES[task].lower()}, T = {length}, median over seeds)",
        "",
        "Spectral radius ρ and largest singular value σ of the recurrent matrix that carries "
        "the state (w_hh; the candidate block for gated cells; – for cells without one), mean "
        "forget gate (LSTM) or update gate (GRU), and the fraction of hidden units saturated "
        "(|h| > 0.99), at initialisation → after training.",
        "",
    ]
    header = ["cell", "ρ", "σ", "mean forget / update gate", "saturated"]
    rows = []
    for variant in variants:
        runs = matching_runs(results, task=task, length=length, variant=variant)
        if not runs:
            continue

        def figure(name: str, runs: list[dict] = runs) -> str:
            return _init_final(runs, lambda d: d["health"][name], lambda v: f"{v:.2f}")

        gate = "mean_forget_gate" if variant.startswith("lstm") else "mean_update_gate"
        rows.append(
            [
                VARIANTS[variant],
                figure("spectral_radius"),
                figure("max_singular_value"),
                figure(gate),
                figure("saturated_fraction"),
            ]
        )
    return lines + _table(header, rows)
