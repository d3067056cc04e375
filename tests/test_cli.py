"""The `rnnjax` command: flags generated from `TrainConfig`, the run folder's rules, a data
set of one's own, progress in a log file, streaming metrics that survive a kill, plots."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rnnjax
from rnnjax import cli
from rnnjax.cli import main
from rnnjax.runs import TrainConfig

TINY = ["--cell", "gru", "--hidden", "8", "--batch-size", "8", "--test-size", "32"]


def run_cli(*argv, **options):
    return subprocess.run(
        [sys.executable, "-m", "rnnjax", *argv], capture_output=True, text=True, **options
    )


def test_version_and_python_m():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rnnjax {rnnjax.__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "train" in result.stdout and "plot" in result.stdout


def test_every_train_config_field_has_a_flag_with_its_help():
    parser = cli._build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train_parser._actions}
    for field in dataclasses.fields(TrainConfig):
        assert field.name in flags, field.name
        assert flags[field.name].help and flags[field.name].help != field.name, field.name
    args = vars(parser.parse_args(["train", "--out", "x", "--input-dropout", "0.2", "--l2", "1"]))
    assert args["input_dropout"] == 0.2 and args["l2"] == 1.0 and "hidden" not in args


def test_auto_devices_divide_the_batch():
    assert 8 % cli._auto_devices(8) == 0 and cli._auto_devices(7) in (1, 7)


@pytest.mark.parametrize("resume", [False, True])
def test_run_folder_rules_are_one_line_and_exit_2(tmp_path, capsys, resume):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [(["--out", str(a_file)], "is a file, not a folder")]
    if not resume:
        cases.append((["--out", str(taken)], "is not empty: pass --resume"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", *argv, *(["--resume"] if resume else [])])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1
    assert (taken / "notes.txt").read_text() == "mine"


def write_data(path, classification, count=48, steps=8, **changes):
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(count, steps, 2)).astype(np.float32)
    lengths = rng.integers(3, steps + 1, size=count)
    if classification:
        targets = (inputs[:, 0, 0] > 0).astype(np.int64)
    else:
        targets = inputs[:, :2, 1].sum(axis=1).astype(np.float32)
    arrays = {"inputs": inputs, "targets": targets, "lengths": lengths, **changes}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.slow
@pytest.mark.parametrize("classification", [False, True])
def test_train_on_a_data_set_of_ones_own(tmp_path, capsys, classification):
    data = write_data(tmp_path / "mine.npz", classification)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), *TINY, "--steps", "30", "--eval-every", "10"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"] == str(data) and metrics["steps"] == 30
    evaluation = metrics["history"]["eval"][-1]
    assert ("accuracy" in evaluation) == classification
    assert metrics["final_test_loss"] < 2 * metrics["baseline_loss"] + 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"targets": None}, "missing ['targets']"),
        ({"weights": np.ones(3)}, "unknown ['weights']"),
        ({"inputs": np.full((48, 8, 2), np.nan, np.float32)}, "inputs hold NaN"),
        ({"lengths": np.full(48, 9)}, "lengths must lie in 1..8"),
        ({"targets": np.ones((47,), np.float32)}, "same number N >= 2"),
    ],
)
def test_bad_data_files_are_one_line_and_exit_2(tmp_path, capsys, changes, message):
    data = write_data(tmp_path / "bad.npz", False, **changes)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data), *TINY, "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1, error


def stream_steps(path, kind="train"):
    """The steps of the training records of a `metrics.jsonl`, in file order."""
    with open(path) as file:
        records = [json.loads(line) for line in file if line.strip()]
    return [r["step"] for r in records if r["kind"] == kind]


@pytest.mark.slow
def test_progress_reaches_a_log_and_the_metrics_stream_survives_a_kill(tmp_path):
    """`rnnjax train ... 2> log`: plain progress lines in the log; `metrics.jsonl` grows
    during the run, every line whole after a kill, and a resumed run continues it."""
    out, log = tmp_path / "run", tmp_path / "log"
    argv = [
        "train",
        *TINY,
        "--length",
        "10",
        "--steps",
        "100000",
        "--log-every",
        "5",
        "--eval-every",
        "40",
        "--devices",
        "1",
        "--out",
        str(out),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rnnjax", *argv],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        stream = out / "metrics.jsonl"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ready = (out / "checkpoint.npz").is_file() and stream.is_file()
            if ready and len(stream.read_text().splitlines()) >= 12:
                break
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
    steps = stream_steps(stream)
    assert len(steps) >= 12 and steps == sorted(steps)
    assert "step 1/100000 (0%)  loss " in log.read_text()
    saved = np.load(out / "checkpoint.npz")[".step"]
    result = run_cli(
        "train",
        "--out",
        str(out),
        "--resume",
        "--steps",
        str(int(saved) + 20),
        "--no-progress",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    resumed = stream_steps(stream)
    assert resumed == sorted(resumed) and len(resumed) == len(set(resumed))
    assert resumed[-1] == int(saved) + 20


@pytest.mark.slow
def test_plot_draws_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--task", "copy", "--length", "10", "--steps", "20"]
    assert main([*argv, "--eval-every", "10", "--out", str(out), "--no-progress"]) == 0
    assert main(["plot", str(out)]) == 0
    assert (out / "learning_curves.png").stat().st_size > 0
    assert (out / "learning_curves.svg").read_text().startswith("<?xml")
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "metrics.jsonl" in capsys.readouterr().err
