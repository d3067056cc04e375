"""Multi-step forecasting with RNN, LSTM and GRU: Mackey-Glass and a noisy seasonal series.

    python examples/forecast.py --quick                  # about 2 minutes on 2 CPU cores
    python examples/forecast.py --out examples/results/forecast

Each cell is trained teacher-forced (one-step-ahead prediction over windows of the
training part of the series) and then forecasts closed-loop: from a context window
of the test part it feeds each prediction back as its next input, for a whole
horizon. Reported: the normalised RMSE (RMSE / standard deviation of the training
series) at every horizon step, for each cell and for the naive forecast that repeats
the last observed value. Writes forecast.json, report.md, forecast.png (forecasts
against the truth) and nrmse.png (error against horizon) to --out.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import _files, losses, train
from rnnjax.models import sequence_model
from rnnjax.series import mackey_glass, seasonal_series
from rnnjax.tasks import TaskData

SERIES = {
    "mackey-glass": {"make": mackey_glass, "horizon": 50, "unit": "time units"},
    "seasonal": {"make": seasonal_series, "horizon": 48, "unit": "hours"},
}
CELLS = {"rnn": rnnjax.rnn, "lstm": rnnjax.lstm, "gru": rnnjax.gru}
COLOURS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c", "naive": "#7f7f7f"}


def windows(z: np.ndarray, length: int, stride: int) -> np.ndarray:
    starts = np.arange(0, len(z) - length + 1, stride)
    return np.stack([z[s : s + length] for s in starts])


def run_series(name: str, args: argparse.Namespace) -> dict:
    spec = SERIES[name]
    horizon = spec["horizon"]
    values = spec["make"](args.points)
    split = int(0.7 * len(values))
    mean, std = values[:split].mean(), values[:split].std()
    z = (values - mean) / std
    train_windows = windows(z[:split], args.window + 1, 1)
    data = TaskData(
        jnp.asarray(train_windows[:, :-1, None], jnp.float32),
        jnp.asarray(train_windows[:, 1:, None], jnp.float32),
    )
    test_windows = windows(z[split:], args.window + horizon, args.test_stride)
    contexts = jnp.asarray(test_windows[:, : args.window, None], jnp.float32)
    truth = test_windows[:, args.window :]
    naive = np.repeat(test_windows[:, args.window - 1 : args.window], horizon, axis=1)
    record = {
        "points": args.points,
        "horizon": horizon,
        "unit": spec["unit"],
        "train_windows": len(train_windows),
        "test_windows": len(test_windows),
        "nrmse": {"naive": np.sqrt(np.mean((naive - truth) ** 2, axis=0)).tolist()},
        "example": {
            "context": test_windows[0, : args.window].tolist(),
            "truth": truth[0].tolist(),
            "forecasts": {"naive": naive[0].tolist()},
        },
        "train_seconds": {},
        "final_train_loss": {},
    }
    for cell_name in args.cells:
        model = sequence_model(CELLS[cell_name](args.hidden), output_size=1, per_step=True)
        params = model.init(jax.random.key(args.seed), 1, jnp.float32)
        optimizer = train.make_optimizer("adam", args.lr, clip_norm=1.0)
        batches = train.shuffled_batches(data, args.batch_size)

        def loss_fn(params, batch, key, model=model):
            loss = losses.mse(model.apply(params, batch.inputs), batch.targets)
            return loss, {}

        step = train.make_train_step(loss_fn, optimizer, batches)
        state = train.init_state(params, optimizer, jax.random.key(args.seed + 1))
        started = time.perf_counter()
        state, history = train.fit(
            state,
            step,
            batches,
            num_steps=args.steps,
            log_every=max(1, args.steps // 10),
            progress=None,
        )
        record["train_seconds"][cell_name] = time.perf_counter() - started
        record["final_train_loss"][cell_name] = history["loss"][-1]
        forecast = np.asarray(model.generate(state.params, contexts, num_steps=horizon))[..., 0]
        record["nrmse"][cell_name] = np.sqrt(np.mean((forecast - truth) ** 2, axis=0)).tolist()
        record["example"]["forecasts"][cell_name] = forecast[0].tolist()
        print(
            f"  {name:<12} {cell_name:<4} NRMSE h=1 {record['nrmse'][cell_name][0]:.3f}, "
            f"h={horizon} {record['nrmse'][cell_name][-1]:.3f} "
            f"({record['train_seconds'][cell_name]:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
    return record


def render_report(results: dict, command: str) -> str:
    settings = results["settings"]
    lines = [
        "# Closed-loop forecasting",
        "",
        f"Command: `{command}`. Hidden units {settings['hidden']}, window {settings['window']} "
        f"steps, {settings['steps']} Adam steps (learning rate {settings['lr']}, batch "
        f"{settings['batch_size']}), teacher-forced; JAX {results['jax_version']}, "
        f"{results['cpu_count']} CPU cores.",
        "",
        "Normalised RMSE (RMSE / standard deviation of the training series) of the "
        "closed-loop forecast at horizon step h, over every test window; lower is better, "
        "1.0 is as bad as predicting the mean.",
    ]
    for name, record in results["series"].items():
        horizon = record["horizon"]
        steps = sorted({1, 5, 10, 25, horizon} & set(range(1, horizon + 1)))
        lines += [
            "",
            f"## {name} (horizon {horizon} {record['unit']}, "
            f"{record['test_windows']} test windows)",
            "",
            "| forecaster | " + " | ".join(f"h = {h}" for h in steps) + " | mean | train time |",
            "|---|" + "---|" * (len(steps) + 2),
        ]
        for forecaster, errors in record["nrmse"].items():
            seconds = record["train_seconds"].get(forecaster)
            lines.append(
                f"| {forecaster} | "
                + " | ".join(f"{errors[h - 1]:.3f}" for h in steps)
                + f" | {np.mean(errors):.3f} | "
                + (f"{seconds:.0f} s" if seconds else "–")
                + " |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, out: str) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["series"])
    paths = []
    figure, axes = plt.subplots(
        len(names), 1, figsize=(11, 3.6 * len(names)), squeeze=False, layout="constrained"
    )
    for axis, name in zip(axes[:, 0], names):
        example = results["series"][name]["example"]
        context, truth = example["context"], example["truth"]
        shown = context[-100:]
        t_context = np.arange(-len(shown), 0)
        t_future = np.arange(len(truth))
        axis.plot(t_context, shown, color="black", linewidth=1.2, label="observed context")
        axis.plot(t_future, truth, color="black", linestyle="--", linewidth=1.2, label="truth")
        for forecaster, values in example["forecasts"].items():
            axis.plot(
                t_future,
                values,
                color=COLOURS[forecaster],
                linewidth=1.5,
                label=f"{forecaster} forecast",
            )
        axis.axvline(-0.5, color="grey", linewidth=0.8)
        axis.set_title(f"{name}: closed-loop forecast from the first test window")
        axis.set_xlabel(f"step relative to the forecast start ({results['series'][name]['unit']})")
        axis.set_ylabel("value (standardised)")
        axis.legend(fontsize=8, ncol=3, loc="upper left")
        axis.grid(alpha=0.3)
    paths.append(os.path.join(out, "forecast.png"))
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    figure, axes = plt.subplots(
        1, len(names), figsize=(5.5 * len(names), 4), squeeze=False, layout="constrained"
    )
    for axis, name in zip(axes[0], names):
        for forecaster, errors in results["series"][name]["nrmse"].items():
            axis.plot(
                np.arange(1, len(errors) + 1),
                errors,
                color=COLOURS[forecaster],
                label=forecaster,
                linewidth=1.5,
            )
        axis.set_title(f"{name}: error against horizon")
        axis.set_xlabel(f"horizon step h ({results['series'][name]['unit']})")
        axis.set_ylabel("normalised RMSE")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=9)
    paths.append(os.path.join(out, "nrmse.png"))
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and steps")
    parser.add_argument("--out", default=os.path.join("results", "forecast"))
    parser.add_argument("--series", default=",".join(SERIES), help="mackey-glass,seasonal")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--points", type=int, help="series length (default 3000 quick, 10000 full)")
    parser.add_argument("--steps", type=int, help="training steps (default 1500 quick, 5000 full)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-stride", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:  # the figures need matplotlib: say so before any work, not after it
        import matplotlib  # noqa: F401
    except ImportError:
        extra = 'pip install "rnnjax[bench]"'
        parser.exit(2, f"{parser.prog}: error: the figures need matplotlib: {extra}\n")
    args.points = args.points or (3000 if args.quick else 10000)
    args.steps = args.steps or (1500 if args.quick else 5000)
    args.series = [s for s in args.series.split(",") if s]
    args.cells = [c for c in args.cells.split(",") if c]
    unknown = [s for s in args.series if s not in SERIES] + [
        c for c in args.cells if c not in CELLS
    ]
    if unknown:
        parser.error(f"unknown series or cells: {unknown}")
    started = time.perf_counter()
    results = {
        "settings": {
            k: getattr(args, k)
            for k in ("points", "steps", "hidden", "window", "batch_size", "lr", "seed")
        },
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "series": {name: run_series(name, args) for name in args.series},
    }
    results["seconds"] = time.perf_counter() - started
    command = "python examples/forecast.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    _files.write_json(os.path.join(args.out, "forecast.json"), results)
    report = render_report(results, command)
    _files.write_text(os.path.join(args.out, "report.md"), report)
    plot(results, args.out)
    print(report)
    print(f"done in {results['seconds']:.0f}s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
