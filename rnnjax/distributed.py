"""Training over several processes (hosts) on JAX's distributed runtime.

Every process runs the same program. `initialize` connects it to the others through
`jax.distributed.initialize`, before any computation; from then on `jax.devices()` lists
the devices of every process, a mesh over them (`rnnjax.parallel.device_mesh`) spans the
processes, and a jitted training step runs as one program over all of them: each
process computes its own rows of every global batch (rnnjax's task batches are
functions of `(key, step)`, the same on every host; a data set of your own is read by
every process, which then takes its rows of each batch), and the only traffic between
processes is the gradient sum of each step. Process 0 writes the files
(`is_writer`); every process reads them to resume.

On CPUs the processes talk through gloo collectives over TCP (set here before the
runtime starts), so one machine can run several processes as a stand-in for several
hosts; GPUs use NCCL. Where a cluster scheduler starts the processes (Slurm, Open MPI),
`initialize(auto=True)` lets JAX read the coordinator, count and id from its
environment.

    from rnnjax import distributed
    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # on host 0
    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=1)  # on host 1
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NamedTuple

import jax

ENVIRONMENT = {
    "coordinator": "RNNJAX_COORDINATOR",
    "num_processes": "RNNJAX_NUM_PROCESSES",
    "process_id": "RNNJAX_PROCESS_ID",
}
"""The environment variables that stand for `initialize`'s arguments when they are not given."""

DEFAULT_TIMEOUT = 60
"""Seconds a process waits for the others to join, and after a process stops answering
before the others end with an error (JAX's heartbeat timeout)."""


class Cluster(NamedTuple):
    """Where this process stands among the processes of one training run."""

    process_id: int
    num_processes: int
    local_devices: int
    global_devices: int


def settings_from_environment(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: dict | None = None,
) -> tuple[str | None, int | None, int | None]:
    """The arguments given, each missing one read from its `ENVIRONMENT` variable.

    Raises:
      ValueError: a variable that is not an integer where one is needed.
    """
    environ = os.environ if environ is None else environ
    values: dict = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for name, variable in ENVIRONMENT.items():
        if values[name] is None and environ.get(variable):
            text = environ[variable]
            if name == "coordinator":
                values[name] = text
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"{variable} must be an integer, got {text!r}") from None
    return values["coordinator"], values["num_processes"], values["process_id"]


def check_settings(coordinator: str | None, num_processes: int | None, process_id: int | None):
    """Raises a one-line `ValueError` for an incomplete or impossible set of settings."""
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(
            "several processes need a coordinator address, the number of processes and "
            f"this process's id; missing: {', '.join(missing)} (flags --coordinator, "
            "--num-processes, --process-id, or the variables "
            f"{', '.join(ENVIRONMENT[name] for name in missing)})"
        )
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the coordinator address must be HOST:PORT, got {coordinator!r}")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(
            f"the number of processes must be a positive integer, got {num_processes!r}"
        )
    if isinstance(process_id, bool) or not isinstance(process_id, int):
        raise ValueError(f"the process id must be an integer, got {process_id!r}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"the process id must be in 0..{num_processes - 1} for {num_processes} processes, "
            f"got {process_id}"
        )


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout: int = DEFAULT_TIMEOUT,
) -> Cluster:
    """Connects this process to the others of a multi-process run; call it first thing.

    Args:
      coordinator: `HOST:PORT` of process 0, which serves the rendezvous; every process
        passes the same address. Defaults to `$RNNJAX_COORDINATOR`.
      num_processes: how many processes take part (`$RNNJAX_NUM_PROCESSES`).
      process_id: this process's id, `0..num_processes - 1` (`$RNNJAX_PROCESS_ID`).
      auto: let JAX find all three in a cluster scheduler's environment (Slurm, Open
        MPI), `jax.distributed.initialize()` without arguments.
      timeout: seconds to wait for every process to join, and for a process that stops
        answering before the others end with an error.

    Returns:
      This process's `Cluster`.

    Raises:
      ValueError: missing or impossible settings, one line that says which.
      RuntimeError: JAX could not start the distributed runtime (for example, it had
        started already: the call must come before any computation).

    When the processes have not all joined after `timeout` seconds, the process ends
    (exit code 1) with one line on stderr that says so: JAX's runtime would end it then
    in any case. Later, a process that stops answering (killed, its host down) ends the
    others within about `timeout` seconds, by JAX's runtime (exit code 134, its message
    names the unhealthy task).
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not auto:
        coordinator, num_processes, process_id = settings_from_environment(
            coordinator, num_processes, process_id
        )
        check_settings(coordinator, num_processes, process_id)
    # CPU devices of different processes exchange data through gloo; harmless on GPUs,
    # whose collectives are NCCL's. Must be set before the runtime starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's runtime ends the process (SIGABRT, a C++ stack trace) when the others do not
    # join in time; this watchdog ends it first, with one line that says what to check.
    where = (
        "from the cluster's environment"
        if auto
        else (f"at {coordinator} as process {process_id} of {num_processes}")
    )
    watchdog = threading.Timer(timeout, _give_up, (f"joining {where}", timeout))
    watchdog.daemon = True
    watchdog.start()
    options = {
        "initialization_timeout": timeout + _JAX_GRACE,
        "heartbeat_timeout_seconds": timeout,
    }
    try:
        if auto:
            jax.distributed.initialize(**options)
        else:
            jax.distributed.initialize(
                coordinator_address=coordinator,
                num_processes=num_processes,
                process_id=process_id,
                **options,
            )
    except Exception as error:  # JAX raises several types here; say what happened
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"could not join the other processes ({where}): {text}") from None
    finally:
        watchdog.cancel()
    return cluster()


_JAX_GRACE = 10  # seconds JAX's own join deadline leaves the watchdog


def _give_up(what: str, timeout: int) -> None:
    sys.stderr.write(
        f"rnnjax: error: not every process joined within {timeout} s ({what}); start every "
        "process with the same coordinator and number of processes and its own process id\n"
    )
    sys.stderr.flush()
    os._exit(1)


def cluster() -> Cluster:
    """This process's place among the processes (one process: `Cluster(0, 1, n, n)`)."""
    return Cluster(
        process_id=jax.process_index(),
        num_processes=jax.process_count(),
        local_devices=jax.local_device_count(),
        global_devices=jax.device_count(),
    )


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0, or the only process."""
    return jax.process_index() == 0
