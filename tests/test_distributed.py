"""Several processes training one model: `rnnjax train --coordinator ... --process-id I`,
started as separate processes on this machine, against one process; resuming from their
checkpoint; a killed process; wrong settings."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnjax import distributed

RUN = [
    "--task", "adding", "--cell", "gru", "--length", "20", "--hidden", "8",
    "--batch-size", "8", "--eval-every", "10", "--log-every", "10", "--test-size", "32",
    "--no-progress",
]  # fmt: skip
TIMEOUT = 240  # seconds any one command may take on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNJAX_")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def start(args, process_id=None, port=None, processes=2, join_timeout=30):
    command = [sys.executable, "-m", "rnnjax", "train", *RUN, *args]
    if process_id is not None:
        command += [
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes),
            "--process-id", str(process_id), "--join-timeout", str(join_timeout),
        ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
    )


def finish(process):
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"timed out after {TIMEOUT} s: {err[-2000:]}") from None
    assert process.returncode == 0, err[-3000:]
    return out


def train_processes(args, processes=2):
    port = free_port()
    started = [start(args, i, port, processes) for i in range(processes)]
    return [finish(p) for p in started]


def arrays(folder):
    with np.load(os.path.join(folder, "checkpoint.npz")) as stored:
        return {k: stored[k] for k in stored.files if stored[k].dtype.kind == "f"}


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume_bit_for_bit(tmp_path):
    two, one, split, resumed = (str(tmp_path / n) for n in ("two", "one", "split", "resumed"))
    train_processes(["--steps", "30", "--out", two])
    finish(start(["--steps", "30", "--devices", "1", "--out", one]))
    finish(start(["--steps", "30", "--devices", "2", "--out", split]))
    # Only process 0 wrote, and the files are a whole run's.
    assert sorted(os.listdir(two)) == ["checkpoint.npz", "metrics.json", "metrics.jsonl"]
    a, b, c = arrays(two), arrays(split), arrays(one)
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        # 2 processes x 1 device run the program of 1 process x 2 devices: equal bits.
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        # One device sums each gradient in another order: equal to float32 rounding.
        np.testing.assert_allclose(a[name], c[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Stopped at step 20 and resumed by both processes: the run that never stopped.
    train_processes(["--steps", "20", "--out", resumed])
    train_processes(["--steps", "30", "--out", resumed, "--resume"])
    for name, values in arrays(resumed).items():
        np.testing.assert_array_equal(values, a[name], err_msg=name)


@pytest.mark.slow
def test_a_killed_process_ends_the_other_and_leaves_the_checkpoint_intact(tmp_path):
    from rnnjax import checkpoint

    out = str(tmp_path / "run")
    port, join_timeout = free_port(), 10
    survivor, victim = (
        start(["--steps", "1000000", "--out", out], i, port, join_timeout=join_timeout)
        for i in range(2)
    )
    path = os.path.join(out, "checkpoint.npz")
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert os.path.exists(path), "no checkpoint was written"
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, err = survivor.communicate(timeout=TIMEOUT)
    # JAX's runtime ends the survivor once the victim misses its heartbeats.
    assert time.monotonic() - killed < join_timeout + 30
    assert survivor.returncode != 0
    assert "another task died" in err or "stopped sending heartbeats" in err, err[-2000:]
    # The last checkpoint written is whole (every array finite, its configuration
    # readable), and both processes resume from it.
    assert checkpoint.load_config(path)["steps"] == 1000000
    saved = arrays(out)
    assert saved and all(np.isfinite(values).all() for values in saved.values())
    step = int(np.load(path)[".step"])
    assert step > 0 and step % 10 == 0
    train_processes(["--steps", str(step + 10), "--out", out, "--resume"])
    assert int(np.load(path)[".step"]) == step + 10


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--process-id", "2", "--num-processes", "2", "--coordinator", "h:1"], "0..1"),
        (["--process-id", "0", "--num-processes", "2", "--coordinator", "h"], "HOST:PORT"),
        (["--num-processes", "2"], "missing: coordinator, process_id"),
    ],
)
def test_wrong_settings_are_one_line(tmp_path, capsys, monkeypatch, flags, message):
    from rnnjax.cli import main

    for variable in distributed.ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *flags, "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_settings_come_from_the_environment():
    environ = {"RNNJAX_COORDINATOR": "h:1", "RNNJAX_NUM_PROCESSES": "4", "RNNJAX_PROCESS_ID": "3"}
    assert distributed.settings_from_environment(environ=environ) == ("h:1", 4, 3)
    # Flags win over the environment.
    assert distributed.settings_from_environment(None, None, 1, environ=environ) == ("h:1", 4, 1)
    with pytest.raises(ValueError, match="RNNJAX_PROCESS_ID must be an integer"):
        distributed.settings_from_environment(environ={"RNNJAX_PROCESS_ID": "one"})
    assert distributed.cluster() == distributed.Cluster(0, 1, *(distributed.cluster()[2:]))
    assert distributed.is_writer()


@pytest.mark.slow
def test_a_process_alone_gives_up_after_the_join_timeout(tmp_path):
    started = time.monotonic()
    alone = start(["--steps", "10", "--out", str(tmp_path / "x")], 0, free_port(), join_timeout=3)
    _, err = alone.communicate(timeout=TIMEOUT)
    assert alone.returncode == 1
    assert "not every process joined within 3 s" in err and err.count("\n") == 1, err
    assert time.monotonic() - started < 60
