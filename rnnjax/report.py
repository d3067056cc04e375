"""The vanishing-gradient study written up as Markdown tables, from its results dict."""

from __future__ import annotations

import math
import statistics

from rnnjax.vanishing import GRID_FIELDS, VARIANTS, matching_runs, showcase

TASK_NAMES = {"adding": "Adding problem", "copy": "Copy memory", "recall": "Recall the first value"}
CRITERIA = {
    "adding": "solved: test MSE < 0.01; failed: within 10% of the baseline 1/6 or above",
    "copy": "solved: cross-entropy at least 10% below the memoryless baseline "
    "10 ln 8 / (T + 20); failed: within 10% of it",
    "recall": "solved: test MSE below 10% of the baseline (90% of the variance explained); "
    "failed: within 10% of the baseline",
}


def _ordered(values: set, order: list) -> list:
    return [v for v in order if v in values]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _outcome(runs: list[dict]) -> str:
    if not runs:
        return "–"
    solved = [r for r in runs if r["status"] == "solved"]
    loss = statistics.median(r["final_test_loss"] for r in runs)
    text = f"{len(solved)}/{len(runs)} · {loss:.3g}"
    if solved:
        text += f" · {statistics.median(r['steps_to_solve'] for r in solved):.0f} steps"
    accuracies = [
        r["final_test_accuracy"] for r in runs if r.get("final_test_accuracy") is not None
    ]
    if accuracies:
        text += f" · acc {statistics.median(accuracies):.2f}"
    return f"**{text}**" if len(solved) == len(runs) else text


def _horizon(runs: list[dict]) -> str:
    if not runs:
        return "–"
    before = statistics.median(r["diagnostics"]["init"]["horizon"] for r in runs)
    after = statistics.median(r["diagnostics"]["final"]["horizon"] for r in runs)
    return f"{before:.0f} → {after:.0f}"


def render(results: dict, command: str = "") -> str:
    """The Markdown report of a study's results."""
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
        f"{study['batch_size']}, at most {study['steps']} steps (a run stops once solved), "
        f"test loss on {study['test_size']} held-out sequences every {study['eval_every']} "
        f"steps. Gradient norms are averaged over {study['probe_size']} test sequences.",
        "",
        f"Machine: {meta['cpu_count']} CPU cores ({meta.get('cpus_used') or meta['cpu_count']} "
        f"used by the study), JAX {meta['jax_version']} "
        f"({meta['backend']}), Python {meta['python']}, {meta['date']}. "
        f"Training time of all runs: {total / 60:.1f} minutes.",
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
    lines += [
        "",
        "Each cell: runs solved / runs · median final test loss · median steps to solve "
        "· accuracy on the recalled symbols (copy). **Bold**: solved by every seed.",
    ]
    for task in tasks:
        lengths = sorted({r["length"] for r in matching_runs(results, task=task)})
        baselines = {
            t: matching_runs(results, task=task, length=t)[0]["baseline_loss"] for t in lengths
        }
        lines += ["", f"## {TASK_NAMES[task]}", "", CRITERIA[task] + ".", ""]
        header = ["cell"] + [f"T = {t}" for t in lengths]
        rows = [
            [VARIANTS[v]]
            + [_outcome(matching_runs(results, task=task, variant=v, length=t)) for t in lengths]
            for v in variants
        ]
        rows.append(["*trivial baseline*"] + [f"{baselines[t]:.3g}" for t in lengths])
        lines += _table(header, rows)
        lines += [
            "",
            "Gradient horizon (steps back from T over which ‖∂L/∂h_t‖ stays within a factor "
            "1000 of ‖∂L/∂h_T‖), median over seeds, at initialisation → after training:",
            "",
        ]
        rows = [
            [VARIANTS[v]]
            + [_horizon(matching_runs(results, task=task, variant=v, length=t)) for t in lengths]
            for v in variants
        ]
        lines += _table(header, rows)
        lines += ["", "Median wall time per run (seconds):", ""]
        rows = [
            [VARIANTS[v]]
            + [
                f"{statistics.median(r['seconds'] for r in found):.0f}" if found else "–"
                for found in (
                    matching_runs(results, task=task, variant=v, length=t) for t in lengths
                )
            ]
            for v in variants
        ]
        lines += _table(header, rows)
    lines += _health_section(results, variants)
    return "\n".join(lines) + "\n"


def _health_section(results: dict, variants: list[str]) -> list[str]:
    task, length, _ = showcase(results)
    lines = [
        "",
        f"## Cell health ({TASK_NAMES[task].lower()}, T = {length}, median over seeds)",
        "",
        "Spectral radius ρ and largest singular value σ of the recurrent matrix that carries "
        "the state (w_hh; the candidate block for gated cells), mean forget gate (LSTM) or "
        "update gate (GRU), and the fraction of hidden units saturated (|h| > 0.99), at "
        "initialisation → after training.",
        "",
    ]
    header = ["cell", "ρ", "σ", "mean forget / update gate", "saturated"]
    rows = []
    for variant in variants:
        runs = matching_runs(results, task=task, length=length, variant=variant)
        if not runs:
            continue

        def figure(name: str, runs: list[dict] = runs) -> str:
            values = []
            for moment in ("init", "final"):
                numbers = [r["diagnostics"][moment]["health"][name] for r in runs]
                numbers = [n for n in numbers if n == n]  # drop NaN (gate absent)
                values.append(f"{statistics.median(numbers):.2f}" if numbers else "–")
            return " → ".join(values) if values[0] != "–" else "–"

        gate = (
            figure("mean_forget_gate") if variant.startswith("lstm") else figure("mean_update_gate")
        )
        rows.append(
            [
                VARIANTS[variant],
                figure("spectral_radius"),
                figure("max_singular_value"),
                gate,
                figure("saturated_fraction"),
            ]
        )
    return lines + _table(header, rows)
