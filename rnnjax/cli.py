"""The `rnnjax` command: `rnnjax train ...` and `rnnjax bench vanishing ...`.

Bad options end with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Sequence

from rnnjax import (
    __version__,
    _files,
    checkpoint,
    distributed,
    parallel,
    report,
    summary,
    vanishing,
)
from rnnjax.checkpoint import CheckpointError
from rnnjax.runs import CHECKPOINT_FILE, CHOICES, TrainConfig, train
from rnnjax.train import NonFiniteError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _field_help(cls: type) -> dict[str, str]:
    """Each field's text from the `Attributes:` section of `cls`'s docstring (an entry
    may name several fields, `a, b: text`)."""
    helps: dict[str, str] = {}
    names: list[str] = []
    section = (cls.__doc__ or "").split("Attributes:", 1)[-1]
    for line in section.splitlines():
        entry = re.match(r"^ {6}([a-z0-9_, ]+): (.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                helps[name] = entry.group(2)
        elif line.startswith(" " * 8) and names:
            for name in names:
                helps[name] += " " + line.strip()
    return helps


def _float_or_none(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _devices(text: str) -> int | str:
    return text if text == "auto" else _positive_int(text)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, generated, so that none can drift: `--name` (with
    `-` for `_`), its type and choices from the field, its help from the docstring. Only
    the flags given reach the configuration (argparse's SUPPRESS default)."""
    helps = _field_help(TrainConfig)
    types = {"int": int, "float": float, "str": str, "float | None": _float_or_none}
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        text = helps.get(field.name, field.name).replace("%", "%%")
        default = "auto" if field.name == "devices" else field.default
        if default is not None and default is not False and default != "":
            text += f" (default {default})"
        options: dict = {"default": argparse.SUPPRESS, "help": text}
        if field.name == "devices":
            options["type"] = _devices
            options["metavar"] = "{auto,N}"
        elif field.type in ("bool", "bool | None"):
            options["action"] = argparse.BooleanOptionalAction
        elif field.name in CHOICES:
            options["choices"] = [c for c in CHOICES[field.name] if c]
        else:
            options["type"] = types[field.type]
        parser.add_argument(flag, **options)


def _name_list(choices: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name for name in text.split(",") if name)
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list from {list(choices)}, got {text!r}"
            )
        return names

    return parse


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _add_vanishing_options(parser: argparse.ArgumentParser) -> None:
    option = parser.add_argument
    option(
        "--quick",
        action="store_true",
        help="the short version: adding problem, T = 50 and 100, one seed, 2000 steps, "
        "the classic cells and minGRU (a few minutes on 2 CPU cores)",
    )
    option(
        "--out",
        default=os.path.join("results", "vanishing"),
        metavar="DIR",
        help="output folder (default results/vanishing)",
    )
    option("--tasks", type=_name_list(vanishing.STUDY_TASKS), help="e.g. adding,copy,recall")
    option(
        "--cells",
        type=_name_list(tuple(vanishing.VARIANTS)),
        help="e.g. rnn,lstm,gru,lstm-fb0,lstm-chrono,indrnn,exprnn,lru,min_gru,min_lstm",
    )
    option("--lengths", type=_int_list, help="e.g. 50,100,200")
    option("--seeds", type=_int_list, help="e.g. 0,1,2")
    option("--steps", type=_positive_int, help="step budget per run")
    option(
        "--resume",
        action="store_true",
        help="keep the runs already in DIR/results.json and do only the missing ones",
    )
    option(
        "--merge",
        action="append",
        default=[],
        metavar="FILE",
        help="add the runs of another results.json made with the same training settings "
        "(say, other seeds run at the same time on another core); repeatable",
    )
    option(
        "--jobs",
        type=_positive_int,
        help="runs to train at once, each in its own process (default: one per usable CPU core)",
    )
    option("--no-plots", action="store_true", help="skip the figures")
    option(
        "--report-only",
        action="store_true",
        help="run nothing: redraw report.md and the figures from DIR/results.json",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnjax", description="Train and study recurrent networks in JAX.")
    parser.add_argument("--version", action="version", version=f"rnnjax {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    train_parser = commands.add_parser(
        "train",
        help="train a model on a long-range task",
        description="Train a cell on a task or on a data set of your own (--data FILE.npz); "
        "writes DIR/checkpoint.npz, DIR/metrics.jsonl as training goes and DIR/metrics.json "
        "at the end.",
    )
    _add_train_options(train_parser)
    train_parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    existing = train_parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    existing.add_argument(
        "--overwrite", action="store_true", help="start afresh in a DIR that holds a run"
    )
    train_parser.add_argument("--no-progress", action="store_true", help="no progress output")
    processes = train_parser.add_argument_group(
        "several processes (hosts)",
        "Start the same command in every process, each with its own --process-id; the "
        "batch is split over the devices of all of them and process 0 writes DIR. The "
        "variables RNNJAX_COORDINATOR, RNNJAX_NUM_PROCESSES and RNNJAX_PROCESS_ID stand "
        "for the first three flags.",
    )
    processes.add_argument(
        "--coordinator", metavar="HOST:PORT", help="address of process 0, the same in every process"
    )
    processes.add_argument(
        "--num-processes", type=_positive_int, metavar="N", help="how many processes take part"
    )
    processes.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0..N-1")
    processes.add_argument(
        "--cluster-auto",
        action="store_true",
        help="take all three from the cluster scheduler's environment (Slurm, Open MPI)",
    )
    processes.add_argument(
        "--join-timeout",
        type=_positive_int,
        default=distributed.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="seconds to wait for every process to join, and for a process that stops "
        f"answering before the others stop (default {distributed.DEFAULT_TIMEOUT})",
    )
    plot_parser = commands.add_parser(
        "plot",
        help="draw a run's learning curves",
        description="Draw the learning curves of the run in DIR (from DIR/metrics.jsonl) to "
        "DIR/learning_curves.png and .svg.",
    )
    plot_parser.add_argument("run_dir", metavar="DIR", help="the --out folder of rnnjax train")
    bench_parser = commands.add_parser("bench", help="run a benchmark")
    benches = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=_Parser)
    benches.required = True
    _add_vanishing_options(
        benches.add_parser(
            "vanishing",
            help="the vanishing-gradient study",
            description="Train every cell variant on long-range tasks and record how "
            "gradients vanish; writes results.json, runs.csv, report.md and the figures "
            "(PNG and SVG) to --out.",
        )
    )
    return parser


def _use_cpu_cores(parser: argparse.ArgumentParser, count: int) -> None:
    """On a CPU, one JAX device per core, so that `--devices` can split the batch over them."""
    try:
        parallel.use_cpu_cores(count)
    except RuntimeError as error:
        parser.exit(2, f"rnnjax train: error: {error}\n")


def _auto_devices(batch_size: int, several_processes: bool = False) -> int:
    """Every device JAX has (on a CPU, one per core): the most that divide the batch. In a
    process where JAX has already started (a notebook), the devices it started with. Of
    several processes, the devices of all of them, each process with JAX's own local
    devices (one per process on CPUs: run one process per core or per host)."""
    if not several_processes:
        with contextlib.suppress(RuntimeError):  # JAX started already: keep its devices
            parallel.use_cpu_cores()  # before JAX starts; on an accelerator its devices first
    import jax

    count = len(jax.devices())
    return max(d for d in range(1, count + 1) if batch_size % d == 0)


PROCESS_OPTIONS = ("coordinator", "num_processes", "process_id", "cluster_auto", "join_timeout")


def _join_processes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Joins the other processes when the flags or the environment name several; returns
    whether it did. Runs before JAX's first computation."""
    try:
        settings = distributed.settings_from_environment(
            args.coordinator, args.num_processes, args.process_id
        )
    except ValueError as error:
        parser.exit(2, f"rnnjax train: error: {error}\n")
    if not args.cluster_auto and all(value is None for value in settings):
        return False
    if not args.cluster_auto and settings[1] == 1 and settings[2] in (None, 0):
        return False  # one process: nothing to join
    try:
        distributed.initialize(*settings, auto=args.cluster_auto, timeout=args.join_timeout)
    except ValueError as error:
        parser.exit(2, f"rnnjax train: error: {error}\n")
    except RuntimeError as error:
        parser.exit(1, f"rnnjax train: error: {error}\n")
    return True


def _check_out(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`--out` must be a folder we can write, and empty unless resuming or overwriting."""
    out = args.out
    if os.path.exists(out) and not os.path.isdir(out):
        parser.exit(2, f"rnnjax train: error: --out {out} is a file, not a folder\n")
    if args.resume:
        return
    if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
        parser.exit(
            2,
            f"rnnjax train: error: --out {out} is not empty: pass --resume to continue the "
            "run there or --overwrite to start afresh\n",
        )


def _make_out(parser: argparse.ArgumentParser, out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        parser.exit(2, f"rnnjax train: error: cannot create --out {out}: {error.strerror}\n")
    if not os.access(out, os.W_OK | os.X_OK):
        parser.exit(2, f"rnnjax train: error: --out {out} is not writable\n")


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _check_out(parser, args)
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "out", "resume", "overwrite", "no_progress", *PROCESS_OPTIONS)
    }
    several = _join_processes(parser, args)
    try:
        if args.resume:
            saved = checkpoint.load_config(os.path.join(args.out, CHECKPOINT_FILE))
            if given.get("devices") == "auto":
                given.pop("devices")
            config = TrainConfig.from_dict({**saved, **given})
        else:
            devices = given.pop("devices", "auto")
            config = TrainConfig(**given)  # every other option checked before JAX starts
            if devices == "auto":
                devices = _auto_devices(config.batch_size, several)
            config = dataclasses.replace(config, devices=devices)
        if config.devices > 1 and not several:
            _use_cpu_cores(parser, config.devices)
        _make_out(parser, args.out)
        quiet = args.no_progress or not distributed.is_writer()
        metrics = train(config, args.out, resume=args.resume, progress=False if quiet else None)
    except (ValueError, CheckpointError) as error:
        parser.exit(2, f"rnnjax train: error: {error}\n")
    except OSError as error:  # a full disk, a folder made read-only while training
        where = error.filename or args.out
        parser.exit(
            2,
            f"rnnjax train: error: cannot write {where}: {error.strerror or error}; the last "
            "good checkpoint is intact\n",
        )
    except NonFiniteError as error:
        parser.exit(1, f"rnnjax train: stopped: {error}\n")
    summary = {k: metrics[k] for k in ("final_test_loss", "baseline_loss", "steps", "seconds")}
    print(json.dumps(summary))
    return 0


def _plot(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if _matplotlib_missing():
        parser.exit(2, f"rnnjax plot: error: the figures need matplotlib: {PLOTTING_EXTRA}\n")
    from rnnjax import plots

    try:
        written = plots.write_run_figures(args.run_dir)
    except (OSError, ValueError) as error:
        parser.exit(2, f"rnnjax plot: error: {error}\n")
    print("wrote " + ", ".join(written))
    return 0


PLOTTING_EXTRA = 'pip install "rnnjax[bench]"'


def _matplotlib_missing() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def _bench_vanishing(
    parser: argparse.ArgumentParser, args: argparse.Namespace, command: str
) -> int:
    if not args.no_plots and _matplotlib_missing():  # before any work, not after it
        parser.exit(
            2,
            f"rnnjax bench vanishing: error: the figures need matplotlib: {PLOTTING_EXTRA} "
            "(or pass --no-plots)\n",
        )
    results_path = vanishing.results_path(args.out)
    base = vanishing.QUICK if args.quick else vanishing.StudyConfig()
    stored: dict = {"meta": {}, "runs": []}
    if args.report_only:  # the stored study's settings, and the command that ran it
        if not os.path.isfile(results_path):
            parser.exit(2, f"rnnjax bench vanishing: error: --report-only needs {results_path}\n")
        stored = _read_results(parser, results_path, "--report-only")
        saved = stored["meta"]["study"]
        base = vanishing.StudyConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        )
        command = stored["meta"].get("command", command.replace(" --report-only", ""))
    overrides = {
        "tasks": args.tasks,
        "variants": args.cells,
        "lengths": args.lengths,
        "seeds": args.seeds,
        "steps": args.steps,
    }
    try:
        study = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        parser.exit(2, f"rnnjax bench vanishing: error: {error}\n")
    if args.resume and not args.report_only and os.path.isfile(results_path):
        stored = _read_results(parser, results_path, "--resume")
        _check_settings(parser, results_path, stored, study, "--resume")
    merged: list[dict] = []
    for path in args.merge:
        other = _read_results(parser, path, "--merge")
        _check_settings(parser, path, other, study, "--merge")
        merged += other["runs"]
    # Each file once, in the order first merged.
    merged_from = list(dict.fromkeys([*stored["meta"].get("merged_from", []), *args.merge]))

    jobs = args.jobs or vanishing.usable_cores()

    def save(records: list[dict]) -> dict:
        meta = {**vanishing.study_metadata(study), "command": command, "jobs": jobs}
        if args.report_only:  # the machine and date of the runs, not of this merge
            meta = {**stored["meta"], "study": meta["study"]}
        if merged_from:
            meta["merged_from"] = merged_from
        results = {"meta": meta, "runs": records}
        vanishing.save_results(results_path, results)
        return results

    started = time.perf_counter()
    runs = _merge_runs(parser, study, stored["runs"], merged)
    if args.report_only:
        results = save(runs) if merged else stored
    else:
        os.makedirs(args.out, exist_ok=True)
        results = save(vanishing.run_study(study, previous=runs, on_record=save, jobs=jobs)["runs"])
    written = [
        results_path,
        summary.write_runs_csv(os.path.join(args.out, "runs.csv"), results["runs"]),
    ]
    figures: list[str] = []
    if not args.no_plots:
        from rnnjax import plots  # matplotlib only when figures are drawn

        written += plots.write_figures(results, args.out)
        figures = list(plots.FIGURES)
    report_path = os.path.join(args.out, "report.md")
    written.append(_files.write_text(report_path, report.render(results, command, figures)))
    print(f"done in {time.perf_counter() - started:.0f}s; wrote " + ", ".join(written))
    return 0


def _read_results(parser: argparse.ArgumentParser, path: str, flag: str) -> dict:
    try:
        return vanishing.load_results(path)
    except (OSError, ValueError) as error:
        parser.exit(2, f"rnnjax bench vanishing: error: {flag} cannot read {path}: {error}\n")


def _check_settings(
    parser: argparse.ArgumentParser,
    path: str,
    stored: dict,
    study: vanishing.StudyConfig,
    flag: str,
) -> None:
    """Exits unless the results `stored` (read from `path`) share `study`'s training settings."""
    settings = {
        k: v for k, v in dataclasses.asdict(study).items() if k not in vanishing.GRID_FIELDS
    }
    saved = {k: v for k, v in stored["meta"]["study"].items() if k in settings}
    if saved != settings:
        parser.exit(
            2,
            f"rnnjax bench vanishing: error: {flag} needs the same training "
            f"settings as {path}: {saved} vs {settings}\n",
        )


def _merge_runs(
    parser: argparse.ArgumentParser,
    study: vanishing.StudyConfig,
    runs: list[dict],
    extra: list[dict],
) -> list[dict]:
    """`runs` plus the runs of `extra` not already there; each must be in `study`'s grid."""
    grid = set(vanishing.study_grid(study))
    merged = list(runs)
    done = {vanishing.run_key(run) for run in runs}
    for run in extra:
        key = vanishing.run_key(run)
        if key not in grid:
            parser.exit(
                2,
                "rnnjax bench vanishing: error: --merge brings the run (task, cell, length, "
                f"seed) = {key}, outside this study's grid; widen --tasks, --cells, "
                "--lengths or --seeds\n",
            )
        if key not in done:
            merged.append(run)
            done.add(key)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rnnjax` console script."""
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(parser, args)
    if args.command == "plot":
        return _plot(parser, args)
    if args.command == "bench" and args.bench == "vanishing":
        return _bench_vanishing(parser, args, command="rnnjax " + " ".join(argv))
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
