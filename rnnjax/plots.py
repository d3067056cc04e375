"""Figures, drawn with matplotlib: the vanishing-gradient study's, and one's own.

The study's figures come from its results dict (`write_figures`); a training run's
learning curves from its `metrics.jsonl` (`write_run_figures`, the `rnnjax plot`
command); per-step gradient norms of any cell on any batch from the diagnostics
(`gradient_norms_figure`). Nothing in the core library imports this module; it needs
the `bench` extra (`pip install "rnnjax[bench]"`, which brings matplotlib). Every
figure is written atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never opens a window

import matplotlib.pyplot as plt
import numpy as np

from rnnjax import _files, vanishing

COLOURS = {
    "rnn": "#d62728",
    "lstm": "#1f77b4",
    "gru": "#2ca02c",
    "lstm-fb0": "#9467bd",
    "lstm-chrono": "#ff7f0e",
    "indrnn": "#8c564b",
    "exprnn": "#e377c2",
    "lru": "#7f7f7f",
    "min_gru": "#bcbd22",
    "min_lstm": "#17becf",
}
LABELS = {
    "rnn": "vanilla RNN",
    "lstm": "LSTM (forget bias 1)",
    "gru": "GRU",
    "lstm-fb0": "LSTM (forget bias 0)",
    "lstm-chrono": "LSTM (chrono init)",
    "indrnn": "IndRNN",
    "exprnn": "expRNN",
    "lru": "LRU",
    "min_gru": "minGRU",
    "min_lstm": "minLSTM",
}
TASK_TITLES = {"adding": "adding problem", "copy": "copy memory", "recall": "recall first value"}


def _save(figure: plt.Figure, path: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return _files.write_atomically(path, lambda file: file.write(buffer.getvalue()))


def _variants(results: dict) -> list[str]:
    present = {r["variant"] for r in results["runs"]}
    return [v for v in COLOURS if v in present]


def grad_norms_figure(results: dict, path: str) -> str:
    """log10 ||dL/dh_t|| against t, at initialisation and after training, one line per cell."""
    task, length, seed = vanishing.showcase(results)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True, layout="constrained")
    for axis, moment, title in zip(
        axes, ("init", "final"), ("at initialisation", "after training")
    ):
        for variant in _variants(results):
            for run in vanishing.matching_runs(
                results, task=task, length=length, seed=seed, variant=variant
            ):
                values = np.asarray(run["diagnostics"][moment]["grad"]["h"])
                axis.plot(
                    np.arange(1, len(values) + 1),
                    values,
                    color=COLOURS[variant],
                    label=LABELS[variant],
                    linewidth=1.6,
                )
        axis.set_title(f"{title}")
        axis.set_xlabel("time step t")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("log10 ‖∂L/∂h_t‖  (gradient norm, log scale)")
    axes[1].legend(loc="lower right", fontsize=9)
    figure.suptitle(
        f"How much of the loss's gradient reaches step t — {TASK_TITLES[task]}, T = {length}\n"
        "A line falling to the left is a vanishing gradient: early inputs get no learning signal",
        fontsize=11,
    )
    return _save(figure, path)


def grad_heatmap_figure(results: dict, path: str, floor: float = -12.0) -> str:
    """log10 relative gradient norm over (time step x training step), one panel per cell."""
    task, length, seed = vanishing.showcase(results)
    variants = [
        v
        for v in _variants(results)
        if vanishing.matching_runs(results, task=task, length=length, seed=seed, variant=v)
    ]
    figure, axes = plt.subplots(
        1,
        len(variants),
        figsize=(3.4 * len(variants) + 1, 4.4),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    budget = 0
    for axis, variant in zip(axes[0], variants):
        (run,) = vanishing.matching_runs(
            results, task=task, length=length, seed=seed, variant=variant
        )
        rows = [(0, run["diagnostics"]["init"]["grad"]["h"])]
        rows += [(d["step"], d["log10_grad_h"]) for d in run["diagnostics"]["during"]]
        steps = np.asarray([s for s, _ in rows], dtype=float)
        grid = np.asarray([np.asarray(v) - v[-1] for _, v in rows])  # relative to t = T
        # Each probe's row spans the training steps until the next probe.
        spacing = steps[1] - steps[0] if len(steps) > 1 else 1.0
        edges = np.concatenate([steps, [steps[-1] + spacing]])
        image = axis.pcolormesh(
            np.arange(0.5, length + 1.5),
            edges,
            np.clip(grid, floor, 0),
            cmap="magma",
            vmin=floor,
            vmax=0,
            shading="flat",
        )
        budget = max(budget, results["meta"]["study"]["steps"])
        ended = (
            f"solved at step {run['steps_to_solve']}"
            if run["status"] == "solved"
            else run["status"]
        )
        axis.set_title(f"{LABELS[variant]}\n({ended})", fontsize=10)
        axis.set_xlabel("time step t")
    axes[0][0].set_ylim(0, budget)
    axes[0][0].set_ylabel("training step")
    colorbar = figure.colorbar(image, ax=axes[0].tolist(), shrink=0.95)
    colorbar.set_label("log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖")
    figure.suptitle(
        f"Gradient reaching step t during training — {TASK_TITLES[task]}, T = {length} "
        f"(bright = strong signal; dark = vanished, below 1e{floor:.0f})",
        fontsize=11,
    )
    return _save(figure, path)


def learning_curves_figure(results: dict, path: str) -> str:
    """Test loss against training step, one panel per (task, length), baseline dashed."""
    tasks = sorted({r["task"] for r in results["runs"]}, key=list(TASK_TITLES).index)
    lengths = sorted({r["length"] for r in results["runs"]})
    figure, axes = plt.subplots(
        len(tasks), len(lengths), squeeze=False, figsize=(3.4 * len(lengths), 3.0 * len(tasks))
    )
    for row, task in enumerate(tasks):
        for column, length in enumerate(lengths):
            axis = axes[row][column]
            runs = vanishing.matching_runs(results, task=task, length=length)
            for variant in _variants(results):
                for index, run in enumerate(r for r in runs if r["variant"] == variant):
                    steps = [0] + [e["step"] for e in run["eval"]]
                    losses = [run["eval"][0]["loss"]] + [e["loss"] for e in run["eval"]]
                    axis.plot(
                        steps[1:],
                        losses[1:],
                        color=COLOURS[variant],
                        alpha=0.85,
                        label=LABELS[variant] if index == 0 else None,
                        linewidth=1.3,
                    )
            if runs:
                axis.axhline(
                    runs[0]["baseline_loss"],
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label="trivial baseline",
                )
                axis.axhline(
                    runs[0]["solved_below"],
                    color="grey",
                    linestyle=":",
                    linewidth=1,
                    label="solved below",
                )
            axis.set_yscale("log")
            axis.set_title(f"{TASK_TITLES[task]}, T = {length}", fontsize=10)
            axis.set_xlabel("training step")
            axis.set_ylabel("test loss (MSE)" if task != "copy" else "test loss (nats)")
            axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 4),
        bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) > 4)),
        fontsize=9,
    )
    figure.suptitle("Learning curves: test loss during training", fontsize=12)
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(figure, path)


def success_vs_length_figure(results: dict, path: str) -> str:
    """Final test loss relative to the baseline against T, one panel per task."""
    tasks = sorted({r["task"] for r in results["runs"]}, key=list(TASK_TITLES).index)
    figure, axes = plt.subplots(
        1, len(tasks), figsize=(5.4 * len(tasks), 4.6), squeeze=False, layout="constrained"
    )
    for axis, task in zip(axes[0], tasks):
        lengths = sorted({r["length"] for r in vanishing.matching_runs(results, task=task)})
        for variant in _variants(results):
            medians, solved = [], []
            for length in lengths:
                runs = vanishing.matching_runs(results, task=task, length=length, variant=variant)
                ratios = [r["final_test_loss"] / r["baseline_loss"] for r in runs]
                medians.append(np.median(ratios) if ratios else np.nan)
                solved.append(sum(r["status"] == "solved" for r in runs) / max(len(runs), 1))
            axis.plot(
                lengths,
                medians,
                color=COLOURS[variant],
                label=LABELS[variant],
                marker="o",
                linewidth=1.5,
            )
            for length, median, fraction in zip(lengths, medians, solved):
                if fraction < 1:  # hollow marker: not solved by every seed
                    axis.plot(
                        length,
                        median,
                        marker="o",
                        markersize=9,
                        color="white",
                        markeredgecolor=COLOURS[variant],
                        zorder=3,
                    )
        any_run = vanishing.matching_runs(results, task=task)[0]
        axis.axhline(1.0, color="black", linestyle="--", linewidth=1, label="trivial baseline")
        axis.axhline(
            any_run["solved_below"] / any_run["baseline_loss"],
            color="grey",
            linestyle=":",
            linewidth=1,
            label="solved below",
        )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("sequence length T (steps)")
        axis.set_ylabel("final test loss / baseline loss")
        axis.set_title(TASK_TITLES[task])
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    figure.suptitle(
        "Success against sequence length (median over seeds; filled = solved by every seed)",
        fontsize=11,
    )
    return _save(figure, path)


FIGURES = {
    "grad_norms.png": grad_norms_figure,
    "grad_heatmap.png": grad_heatmap_figure,
    "learning_curves.png": learning_curves_figure,
    "success_vs_length.png": success_vs_length_figure,
}


def write_figures(results: dict, out_dir: str, names: Sequence[str] = tuple(FIGURES)) -> list[str]:
    """Draws the study's figures into `out_dir`; returns the paths written."""
    return [FIGURES[name](results, os.path.join(out_dir, name)) for name in names]


# -- figures of one's own work -------------------------------------------------------------


def read_metrics_stream(run_dir: str) -> list[dict]:
    """The records of `run_dir/metrics.jsonl` (`rnnjax.runs.train` streams them), in order.

    Raises:
      OSError: there is no `metrics.jsonl` in `run_dir`. ValueError: it holds no record.
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise OSError(f"{path} does not exist: is {run_dir} the --out folder of rnnjax train?")
    records = []
    with open(path) as file:
        for line in file:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
    if not records:
        raise ValueError(f"{path} holds no record yet")
    return records


def run_figure(records: list[dict], path: str, title: str = "") -> list[str]:
    """Learning curves of one run: the training loss (mean of each logged interval) and
    the evaluation loss against the step, log-scaled, and the evaluation accuracy beside
    them when there is one. Writes `path` (PNG) and the same figure as SVG beside it."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    with_accuracy = any("accuracy" in r for r in evals)
    figure, axes = plt.subplots(
        1,
        2 if with_accuracy else 1,
        figsize=(11 if with_accuracy else 6.5, 4.2),
        squeeze=False,
        layout="constrained",
    )
    loss_axis = axes[0][0]
    loss_axis.plot(
        [r["step"] for r in train],
        [r["loss"] for r in train],
        color="#0072B2",
        linewidth=1.2,
        label="training loss (interval mean)",
    )
    loss_axis.plot(
        [r["step"] for r in evals],
        [r["loss"] for r in evals],
        color="#D55E00",
        linestyle="--",
        marker="o",
        markersize=3,
        label="evaluation loss",
    )
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("training step")
    loss_axis.set_ylabel("loss (log scale)")
    loss_axis.legend(frameon=False)
    loss_axis.grid(alpha=0.3)
    if with_accuracy:
        accuracy_axis = axes[0][1]
        points = [(r["step"], r["accuracy"]) for r in evals if "accuracy" in r]
        accuracy_axis.plot(
            *zip(*points), color="#009E73", marker="o", markersize=3, label="evaluation accuracy"
        )
        accuracy_axis.set_ylim(0, 1)
        accuracy_axis.set_xlabel("training step")
        accuracy_axis.set_ylabel("accuracy")
        accuracy_axis.legend(frameon=False)
        accuracy_axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
    return _save_both(figure, path)


def _save_both(figure: plt.Figure, path: str) -> list[str]:
    """`figure` as PNG at `path` and as SVG beside it, atomically."""
    vector = io.BytesIO()
    figure.savefig(vector, format="svg", bbox_inches="tight")
    svg_path = os.path.splitext(path)[0] + ".svg"
    _files.write_atomically(svg_path, lambda file: file.write(vector.getvalue()))
    return [_save(figure, path), svg_path]


def write_run_figures(run_dir: str) -> list[str]:
    """`rnnjax plot RUN_DIR`: the learning curves of a training run, from its
    `metrics.jsonl`, to `RUN_DIR/learning_curves.png` and `.svg`."""
    records = read_metrics_stream(run_dir)
    return run_figure(
        records,
        os.path.join(run_dir, "learning_curves.png"),
        os.path.basename(os.path.normpath(run_dir)),
    )


def gradient_norms_figure(
    cell: Any, params: Any, xs: Any, head: Any, path: str, title: str = ""
) -> list[str]:
    """Per-step gradient norms of any cell on a batch: `log10 ||dL/ds_t||` against `t`,
    over the whole state and for each state leaf (`rnnjax.diagnostics.state_gradient_norms`,
    in log space, so nothing underflows). Writes `path` (PNG) and an SVG beside it.

    Args:
      cell: any `rnnjax.Cell`.
      params: its parameters.
      xs: inputs `(B, T, I)`.
      head: `head(hs) -> (B,)`, each sequence's loss from the outputs `(B, T, H)`.
      path: where the PNG goes.
      title: a title for the figure.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax, tempfile, os
      >>> from rnnjax import plots
      >>> cell = rnnjax.lstm(8)
      >>> params = cell.init(jax.random.key(0), 1)
      >>> xs = jax.random.normal(jax.random.key(1), (4, 50, 1))
      >>> folder = tempfile.mkdtemp()
      >>> head = lambda hs: jnp.sum(hs[:, -1], axis=-1)
      >>> path = os.path.join(folder, "g.png")
      >>> written = plots.gradient_norms_figure(cell, params, xs, head, path)
      >>> " ".join(os.path.basename(p) for p in written)
      'g.png g.svg'
    """
    from rnnjax.diagnostics import state_gradient_norms

    norms = state_gradient_norms(cell, params, xs, head)
    steps = np.arange(len(norms.state))
    figure, axis = plt.subplots(figsize=(7, 4.2), layout="constrained")
    axis.plot(steps, np.asarray(norms.state), color="black", linewidth=2, label="whole state")
    styles = ["--", ":", "-."]
    palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"]
    if len(norms.leaves) > 1:
        for index, (name, values) in enumerate(norms.leaves.items()):
            axis.plot(
                steps,
                np.asarray(values),
                color=palette[index % len(palette)],
                linestyle=styles[index % len(styles)],
                linewidth=1.3,
                label=name,
            )
    axis.set_xlabel("time step t (the state step t + 1 reads)")
    axis.set_ylabel("log10 ||dL/ds_t||")
    axis.grid(alpha=0.3)
    axis.legend(frameon=False)
    if title:
        axis.set_title(title, fontsize=11)
    return _save_both(figure, path)
