"""The `rnnjax` command: `rnnjax train ...` (and the benchmarks under `rnnjax bench`).

Bad options end with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from rnnjax import checkpoint
from rnnjax.checkpoint import CheckpointError
from rnnjax.runs import CELLS, CHECKPOINT_FILE, SCHEDULES, TrainConfig, train
from rnnjax.tasks import TASKS
from rnnjax.train import OPTIMIZERS, NonFiniteError


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


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    option = parser.add_argument
    suppress = argparse.SUPPRESS  # only options given on the command line reach the config
    option("--task", choices=sorted(TASKS), default=suppress, help=f"default {defaults.task}")
    option("--cell", choices=CELLS, default=suppress, help=f"default {defaults.cell}")
    option(
        "--length",
        type=_positive_int,
        default=suppress,
        help=f"sequence length T (default {defaults.length})",
    )
    option(
        "--hidden",
        type=_positive_int,
        default=suppress,
        help=f"hidden units (default {defaults.hidden})",
    )
    option(
        "--layers",
        type=_positive_int,
        default=suppress,
        help=f"recurrent layers (default {defaults.layers})",
    )
    option("--bidirectional", action="store_true", default=suppress, help="bidirectional layers")
    option(
        "--steps",
        type=_positive_int,
        default=suppress,
        help=f"training steps (default {defaults.steps})",
    )
    option(
        "--batch-size", type=_positive_int, default=suppress, help=f"default {defaults.batch_size}"
    )
    option(
        "--optimizer", choices=OPTIMIZERS, default=suppress, help=f"default {defaults.optimizer}"
    )
    option(
        "--lr",
        type=_non_negative_float,
        default=suppress,
        help=f"learning rate (default {defaults.lr})",
    )
    option(
        "--schedule",
        choices=SCHEDULES,
        default=suppress,
        help="learning-rate schedule (default constant)",
    )
    option(
        "--clip",
        type=_non_negative_float,
        default=suppress,
        help=f"gradient clipping by global norm, 0 = off (default {defaults.clip})",
    )
    option(
        "--weight-decay",
        type=_non_negative_float,
        default=suppress,
        help="weight decay of the weight matrices (default 0)",
    )
    option("--l2", type=_non_negative_float, default=suppress, help="L2 penalty weight (default 0)")
    option(
        "--dropout",
        type=_non_negative_float,
        default=suppress,
        help="dropout between layers (default 0)",
    )
    option("--forget-bias", type=float, default=suppress, help="LSTM forget-gate bias (default 1)")
    option(
        "--train-size",
        type=int,
        default=suppress,
        help="fixed training set size; 0 = fresh batches every step (default)",
    )
    option(
        "--test-size", type=_positive_int, default=suppress, help=f"default {defaults.test_size}"
    )
    option(
        "--eval-every", type=_positive_int, default=suppress, help=f"default {defaults.eval_every}"
    )
    option(
        "--target-loss",
        type=_non_negative_float,
        default=suppress,
        help="stop once the test loss reaches this",
    )
    option("--seed", type=int, default=suppress, help="default 0")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnjax", description="Train and study recurrent networks in JAX.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    train_parser = commands.add_parser(
        "train",
        help="train a model on a long-range task",
        description="Train a cell on a task; writes DIR/checkpoint.npz and DIR/metrics.json.",
    )
    _add_train_options(train_parser)
    train_parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    train_parser.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    train_parser.add_argument("--no-progress", action="store_true", help="no progress line")
    return parser


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    given = {
        k: v for k, v in vars(args).items() if k not in ("command", "out", "resume", "no_progress")
    }
    try:
        if args.resume:
            saved = checkpoint.load_config(os.path.join(args.out, CHECKPOINT_FILE))
            config = TrainConfig.from_dict({**saved, **given})
        else:
            config = TrainConfig(**given)
        metrics = train(
            config, args.out, resume=args.resume, progress=False if args.no_progress else None
        )
    except (ValueError, CheckpointError) as error:
        parser.exit(2, f"rnnjax train: error: {error}\n")
    except NonFiniteError as error:
        parser.exit(1, f"rnnjax train: stopped: {error}\n")
    summary = {k: metrics[k] for k in ("final_test_loss", "baseline_loss", "steps", "seconds")}
    print(json.dumps(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rnnjax` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        return _train(parser, args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
