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

# A colour-blind-safe palette (Okabe & Ito 2008) with a line style per cell, so every
# pair of cells differs in style or colour and the figures also read in grey.
STYLES: dict[str, tuple[str, str]] = {
    "rnn": ("#D55E00", "-"),
    "lstm": ("#0072B2", "-"),
    "gru": ("#009E73", "-"),
    "lstm-fb0": ("#56B4E9", "--"),
    "lstm-chrono": ("#E69F00", "-"),
    "indrnn": ("#000000", "-."),
    "exprnn": ("#CC79A7", "-"),
    "lru": ("#000000", ":"),
    "min_gru": ("#009E73", "--"),
    "min_lstm": ("#0072B2", "-."),
}
COLOURS = {variant: colour for variant, (colour, _) in STYLES.items()}
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
    return [v for v in STYLES if v in present]


def _line(variant: str, bold: bool = True) -> dict:
    colour, style = STYLES[variant]
    if bold:
        return {"color": colour, "linestyle": style, "linewidth": 2.0}
    return {"color": colour, "linestyle": style, "linewidth": 0.7, "alpha": 0.45}


def _shared_legend(figure: plt.Figure, axes: Any) -> None:
    """One legend for the whole figure, below the panels, from every panel's labels."""
    handles: dict[str, Any] = {}
    for axis in np.ravel(axes):
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=min(len(handles), 5),
        frameon=False,
        fontsize=9,
    )


def _relative(values: Sequence[float], anchor: int) -> np.ndarray:
    """log10 norms `g_0..g_anchor` relative to `g_anchor`, reversed: index = lag `anchor - t`."""
    window = np.asarray(values[: anchor + 1], dtype=np.float64)
    return (window - window[-1])[::-1]


def grad_norms_figure(results: dict, path: str) -> list[str]:
    """The whole state's gradient norm relative to the last scored step against the lag,
    at initialisation and after training: seeds thin, their median bold."""
    task, length, _ = vanishing.showcase(results)
    figure, axes = plt.subplots(
        1, 2, figsize=(11, 4.6), sharex=True, sharey=True, layout="constrained"
    )
    for axis, moment, title in zip(axes, ("init", "final"), ("at initialisation", "trained")):
        for variant in _variants(results):
            runs = vanishing.matching_runs(results, task=task, length=length, variant=variant)
            curves = [
                _relative(r["diagnostics"][moment]["grad"]["state"], r["anchor_step"]) for r in runs
            ]
            if not curves:
                continue
            lags = np.arange(len(curves[0]))
            for curve in curves:
                axis.plot(lags, curve, **_line(variant, bold=False))
            axis.plot(lags, np.median(curves, axis=0), label=LABELS[variant], **_line(variant))
        axis.set_title(f"{title} ({TASK_TITLES[task]}, T = {length})", fontsize=10)
        axis.set_xlabel("lag: steps back from the last scored step")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("log10 ‖∂L/∂s_t‖ − log10 ‖∂L/∂s_T‖")
    _shared_legend(figure, axes)
    return _save_both(figure, path)


def grad_heatmap_figure(results: dict, path: str, floor: float = -12.0) -> list[str]:
    """The relative gradient norm over (lag x training step), one panel per cell, first seed."""
    task, length, seed = vanishing.showcase(results)
    variants = [
        v
        for v in _variants(results)
        if vanishing.matching_runs(results, task=task, length=length, seed=seed, variant=v)
    ]
    columns = min(len(variants), 5)
    rows_of_panels = -(-len(variants) // columns)
    figure, axes = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(2.9 * columns + 1, 3.3 * rows_of_panels),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    image = None
    budget = results["meta"]["study"]["steps"]
    for axis, variant in zip(axes.ravel(), variants):
        (run,) = vanishing.matching_runs(
            results, task=task, length=length, seed=seed, variant=variant
        )
        anchor = run["anchor_step"]
        rows = [(0, run["diagnostics"]["init"]["grad"]["state"])]
        rows += [(d["step"], d["grad"]["state"]) for d in run["diagnostics"]["during"]]
        steps = np.asarray([s for s, _ in rows], dtype=float)
        grid = np.asarray([_relative(values, anchor) for _, values in rows])
        # Each probe's row spans the training steps until the next probe.
        spacing = steps[1] - steps[0] if len(steps) > 1 else 1.0
        edges = np.concatenate([steps, [steps[-1] + spacing]])
        image = axis.pcolormesh(
            np.arange(-0.5, anchor + 1),
            edges,
            np.clip(grid, floor, 0),
            cmap="viridis",
            vmin=floor,
            vmax=0,
            shading="flat",
            rasterized=True,  # an image inside the SVG: a mesh of vectors is megabytes
        )
        ended = (
            f"solved at step {run['steps_to_solve']}"
            if run["steps_to_solve"] is not None
            else run["status"]
        )
        axis.set_title(f"{LABELS[variant]}: {ended}", fontsize=9)
        axis.set_ylim(0, budget)
    for axis in axes.ravel()[len(variants) :]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("lag (steps back)")
    for axis in axes[:, 0]:
        axis.set_ylabel("training step")
    colorbar = figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    colorbar.set_label(f"log10 relative gradient norm (clipped at {floor:.0f})")
    figure.suptitle(f"{TASK_TITLES[task]}, T = {length}, seed {seed}", fontsize=10)
    return _save_both(figure, path)


def learning_curves_figure(results: dict, path: str) -> list[str]:
    """Test loss against training step, one panel per (task, length): seeds thin, median
    bold, baseline dashed, the criterion met (dot) and divergence (cross) marked."""
    tasks = sorted({r["task"] for r in results["runs"]}, key=list(TASK_TITLES).index)
    lengths = sorted({r["length"] for r in results["runs"]})
    figure, axes = plt.subplots(
        len(tasks),
        len(lengths),
        squeeze=False,
        sharex=True,
        figsize=(3.3 * len(lengths) + 0.5, 2.9 * len(tasks) + 0.8),
        layout="constrained",
    )
    for row, task in enumerate(tasks):
        for column, length in enumerate(lengths):
            axis = axes[row][column]
            runs = vanishing.matching_runs(results, task=task, length=length)
            for variant in _variants(results):
                mine = [r for r in runs if r["variant"] == variant]
                for run in mine:
                    steps = [e["step"] for e in run["eval"]]
                    losses = [e["loss"] for e in run["eval"]]
                    axis.plot(steps, losses, **_line(variant, bold=False))
                    if run["steps_to_solve"] is not None:
                        at = steps.index(run["steps_to_solve"])
                        axis.plot(steps[at], losses[at], "o", color=COLOURS[variant], ms=3.5)
                    if run["diverged_at_step"] is not None and steps:
                        axis.plot(steps[-1], losses[-1], "x", color=COLOURS[variant], ms=6)
                full = [r for r in mine if len(r["eval"]) == len(mine[0]["eval"])]
                if full:
                    axis.plot(
                        [e["step"] for e in full[0]["eval"]],
                        np.median([[e["loss"] for e in r["eval"]] for r in full], axis=0),
                        label=LABELS[variant],
                        **_line(variant),
                    )
            if runs:
                axis.axhline(
                    runs[0]["baseline_loss"],
                    color="grey",
                    linestyle="--",
                    linewidth=1,
                    label="trivial baseline",
                )
                threshold = vanishing.solved_below(task, runs[0]["baseline_loss"])
                if threshold is not None:  # copy's criterion is an accuracy, not a loss
                    axis.axhline(
                        threshold,
                        color="grey",
                        linestyle=":",
                        linewidth=1,
                        label="solved below (adding, recall)",
                    )
            axis.set_yscale("log")
            axis.set_title(f"{TASK_TITLES[task]}, T = {length}", fontsize=9)
            axis.grid(alpha=0.3)
        axes[row][0].set_ylabel("test loss (nats)" if task == "copy" else "test MSE")
    for axis in axes[-1]:
        axis.set_xlabel("training step")
    _shared_legend(figure, axes)
    return _save_both(figure, path)


def success_vs_length_figure(results: dict, path: str) -> list[str]:
    """Per task: the success rate with Wilson 95% intervals against T (top), and the
    median final test loss relative to the baseline (bottom)."""
    from rnnjax.summary import wilson_interval

    tasks = sorted({r["task"] for r in results["runs"]}, key=list(TASK_TITLES).index)
    figure, axes = plt.subplots(
        2,
        len(tasks),
        figsize=(4.6 * len(tasks) + 0.5, 6.6),
        squeeze=False,
        sharex=True,
        layout="constrained",
    )
    variants = _variants(results)
    for column, task in enumerate(tasks):
        rate_axis, loss_axis = axes[0][column], axes[1][column]
        lengths = sorted({r["length"] for r in vanishing.matching_runs(results, task=task)})
        for index, variant in enumerate(variants):
            points = []
            for length in lengths:
                runs = vanishing.matching_runs(results, task=task, length=length, variant=variant)
                if runs:
                    solved = sum(r["steps_to_solve"] is not None for r in runs)
                    low, high = wilson_interval(solved, len(runs))
                    ratio = np.median([r["final_test_loss"] / r["baseline_loss"] for r in runs])
                    points.append((length, solved / len(runs), low, high, ratio))
            if not points:
                continue
            x, rate, low, high, ratio = map(np.asarray, zip(*points))
            # Side by side within a length, so the intervals do not hide each other.
            shift = x * 1.035 ** (index - (len(variants) - 1) / 2)
            rate_axis.errorbar(
                shift,
                rate,
                yerr=[rate - low, high - rate],
                marker="o",
                ms=4,
                capsize=2,
                label=LABELS[variant],
                **_line(variant),
            )
            loss_axis.plot(shift, ratio, marker="o", ms=4, label=LABELS[variant], **_line(variant))
        loss_axis.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="trivial baseline")
        rate_axis.set_ylim(-0.05, 1.05)
        rate_axis.set_title(TASK_TITLES[task], fontsize=10)
        loss_axis.set_yscale("log")
        loss_axis.set_xscale("log")
        loss_axis.set_xticks(lengths, [str(n) for n in lengths])
        loss_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        loss_axis.set_xlabel("sequence length T")
        for axis in (rate_axis, loss_axis):
            axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("runs solved (95% interval)")
    axes[1][0].set_ylabel("final test loss / baseline")
    _shared_legend(figure, axes)
    return _save_both(figure, path)


FIGURES = {
    "grad_norms": grad_norms_figure,
    "grad_heatmap": grad_heatmap_figure,
    "learning_curves": learning_curves_figure,
    "success_vs_length": success_vs_length_figure,
}


def write_figures(results: dict, out_dir: str, names: Sequence[str] = tuple(FIGURES)) -> list[str]:
    """Draws the study's figures into `out_dir`, each as `NAME.png` and `NAME.svg`;
    returns the paths written."""
    written: list[str] = []
    for name in names:
        written += FIGURES[name](results, os.path.join(out_dir, name + ".png"))
    return written


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
    # No date and fixed element ids: the same figure gives the same file.
    with matplotlib.rc_context({"svg.hashsalt": "rnnjax"}):
        figure.savefig(vector, format="svg", bbox_inches="tight", metadata={"Date": None})
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
