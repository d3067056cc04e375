"""Configured runs and the `rnnjax train` command: outputs, resume bit for bit, errors."""

import json

import jax
import numpy as np
import pytest

from rnnjax import checkpoint
from rnnjax.cli import main
from rnnjax.runs import TrainConfig, build, train

TINY = dict(
    task="adding",
    cell="gru",
    length=12,
    hidden=8,
    steps=40,
    batch_size=8,
    test_size=64,
    eval_every=10,
    log_every=5,
)


@pytest.mark.slow
def test_resume_continues_bit_for_bit(tmp_path):
    straight = train(TrainConfig(**TINY), str(tmp_path / "straight"), progress=False)
    half = TrainConfig(**{**TINY, "steps": 20})
    train(half, str(tmp_path / "split"), progress=False)
    resumed = train(TrainConfig(**TINY), str(tmp_path / "split"), resume=True, progress=False)
    template = build(TrainConfig(**TINY)).state
    a = checkpoint.load(tmp_path / "straight" / "checkpoint.npz", template)
    b = checkpoint.load(tmp_path / "split" / "checkpoint.npz", template)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)
    assert resumed["final_test_loss"] == straight["final_test_loss"]
    assert resumed["history"]["eval"] == straight["history"]["eval"]
    assert resumed["steps"] == 40


@pytest.mark.slow  # compile-heavy; CI runs it
def test_resume_refuses_a_changed_configuration(tmp_path):
    train(TrainConfig(**TINY), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="changed: hidden 8 -> 16"):
        train(TrainConfig(**{**TINY, "hidden": 16}), str(tmp_path), resume=True)


@pytest.mark.slow
def test_fixed_training_set_and_classification_metrics(tmp_path):
    config = TrainConfig(**{**TINY, "task": "copy", "length": 5, "train_size": 32, "cell": "lstm"})
    metrics = train(config, str(tmp_path), progress=False)
    assert 0.0 <= metrics["final_test_accuracy"] <= 1.0
    assert metrics["baseline_loss"] == pytest.approx(10 * np.log(8) / 25)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"cell": "transformer"}, "cell must be one of"),
        ({"length": 0}, "length must be a positive integer, got 0"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"train_size": 3}, "train_size must be 0 .* or at least batch_size"),
        ({"fused": "yes"}, "fused must be True, False or None, got 'yes'"),
    ],
)
def test_config_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **changes})


@pytest.mark.parametrize(
    ("flag", "want"), [([], None), (["--fused"], True), (["--no-fused"], False)]
)
def test_cli_fused_flag_reaches_the_config(flag, want):
    """Without the flag rnnjax chooses per cell (`TrainConfig.fused = None`)."""
    from rnnjax.cli import PROCESS_OPTIONS, _build_parser

    args = vars(_build_parser().parse_args(["train", "--out", "x", *flag]))
    skip = ("command", "out", "resume", "overwrite", "no_progress", "devices", *PROCESS_OPTIONS)
    given = {k: v for k, v in args.items() if k not in skip}
    assert TrainConfig(**given).fused is want


@pytest.mark.slow
def test_cli_train_writes_checkpoint_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--task",
            "adding",
            "--cell",
            "lstm",
            "--length",
            "10",
            "--hidden",
            "8",
            "--layers",
            "2",
            "--steps",
            "20",
            "--batch-size",
            "8",
            "--optimizer",
            "rmsprop",
            "--lr",
            "0.003",
            "--clip",
            "0.5",
            "--weight-decay",
            "0.0001",
            "--seed",
            "3",
            "--test-size",
            "32",
            "--eval-every",
            "10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("final_test_loss", "baseline_loss", "steps", "seconds", "config", "history"):
        assert name in metrics
    assert summary["final_test_loss"] == metrics["final_test_loss"]
    assert metrics["config"]["layers"] == 2 and metrics["config"]["optimizer"] == "rmsprop"
    assert metrics["steps"] == 20 and (out / "checkpoint.npz").is_file()
    assert main(["train", "--out", str(out), "--resume", "--steps", "30", "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "adder", "--out", "x"], "argument --task: invalid choice: 'adder'"),
        (["train", "--hidden", "-4", "--out", "x"], "hidden must be a positive integer, got -4"),
        (["train", "--lr", "fast", "--out", "x"], "argument --lr: invalid float value: 'fast'"),
        (["train", "--out", "x", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["train", "--dropout", "2", "--out", "x"], r"dropout must be in [0, 1), got 2.0"),
        (["train", "--out", "no-such-run", "--resume"], "does not exist"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
