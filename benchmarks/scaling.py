"""Data-parallel throughput: training sequences per second on 1, 2 and 4 devices, and
on 1, 2 and 4 processes that train one model together.

    python benchmarks/scaling.py --out results/scaling
    python benchmarks/scaling.py --devices 1,2,4 --processes 1,2,4 --out results/scaling

Each device count runs in its own process (XLA reads its device flags once). On a
CPU-only machine the devices are JAX CPU devices (`--xla_force_host_platform_device_count`,
what `rnnjax.parallel.use_cpu_cores` sets), each running its share of the batch on
its own thread: up to the number of cores they add arithmetic, beyond it they share
the cores. On a machine with several GPUs, run the same script with `--platform gpu`:
each device count then uses that many real GPUs.

`--processes P,...` measures the same training step run by P processes on this machine,
each with one CPU device, joined through `rnnjax.distributed` (JAX's distributed
runtime, gloo collectives over localhost), as a stand-in for P hosts: every process
builds its own rows of each global batch and the processes exchange only the
gradient sums. Writes scaling.json and scaling.md to --out.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def measure(devices: int, config: dict, repeats: int, steps: int) -> dict:
    """In this process: build the run on `devices` devices and time `steps` train steps."""
    import jax

    from rnnjax.runs import TrainConfig, build

    run = build(TrainConfig(**config, devices=devices))
    state = run.state
    started = time.perf_counter()
    state, _ = run.train_step(state, run.batches.data)  # compile and first step
    jax.block_until_ready(state)
    compile_seconds = time.perf_counter() - started
    windows = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            state, _ = run.train_step(state, run.batches.data)
        jax.block_until_ready(state)
        windows.append(time.perf_counter() - started)
    seconds = statistics.median(windows) / steps
    return {
        "devices": devices,
        "platform": jax.devices()[0].platform,
        "ms_per_step": 1000 * seconds,
        "sequences_per_second": config["batch_size"] / seconds,
        "compile_and_first_step_seconds": compile_seconds,
        "jax_version": jax.__version__,
    }


def measure_processes(processes: int, args: argparse.Namespace) -> dict | None:
    """Starts `processes` processes that train together; process 0's timing."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1"
    )
    base = sys.argv[1:]
    child = [sys.executable, __file__, *base, "--child-processes", str(processes)]
    children = [
        subprocess.Popen(
            [*child, "--process-id", str(i), "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = [child.communicate(timeout=1800) for child in children]
    for child, (_, err) in zip(children, outputs):
        if child.returncode:
            print(err[-2000:], file=sys.stderr)
            return None
    return json.loads(outputs[0][0].strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "scaling"))
    parser.add_argument("--devices", default="1,2,4", help="device counts, comma-separated")
    parser.add_argument("--platform", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--cell", default="lstm", choices=("rnn", "lstm", "gru"))
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing window")
    parser.add_argument("--repeats", type=int, default=5, help="timing windows (median reported)")
    parser.add_argument(
        "--processes", default="", help="process counts, comma-separated (default: none)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-processes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = {
        "task": "adding",
        "cell": args.cell,
        "length": args.length,
        "hidden": 64,
        "batch_size": args.batch_size,
        "test_size": 8,
    }
    if args.child:
        print(json.dumps(measure(args.child, config, args.repeats, args.steps)))
        return 0
    if args.child_processes:
        if args.child_processes > 1:
            from rnnjax import distributed

            distributed.initialize(
                f"127.0.0.1:{args.port}", args.child_processes, args.process_id, timeout=120
            )
        row = measure(args.child_processes, config, args.repeats, args.steps)
        print(json.dumps({**row, "processes": args.child_processes}))
        return 0
    rows = []
    for devices in (int(n) for n in args.devices.split(",") if n):
        env = dict(os.environ, JAX_PLATFORMS=args.platform)
        if args.platform == "cpu":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        command = [sys.executable, __file__, "--child", str(devices), *sys.argv[1:]]
        print(f"measuring {devices} device(s)...", file=sys.stderr, flush=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout))
    process_rows = []
    for processes in (int(n) for n in args.processes.split(",") if n):
        print(f"measuring {processes} process(es)...", file=sys.stderr, flush=True)
        row = measure_processes(processes, args)
        if row is None:
            return 1
        process_rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    result = {
        "config": config,
        "cpus_available": len(os.sched_getaffinity(0)),
        "rows": rows,
        "process_rows": process_rows,
    }
    with open(os.path.join(args.out, "scaling.json"), "w") as file:
        json.dump(result, file, indent=1)
    first = (rows or process_rows)[0]
    lines = [
        f"# Data-parallel throughput ({args.cell.upper()}, T = {args.length}, global batch "
        f"{args.batch_size}, {first['platform']}, {result['cpus_available']} CPU core(s) "
        f"available, JAX {first['jax_version']})",
    ]
    for unit, table in (("devices", rows), ("processes", process_rows)):
        if not table:
            continue
        single = table[0]["sequences_per_second"]
        what = "one process" if unit == "devices" else "one CPU device per process"
        lines += [
            "",
            f"## {unit.capitalize()} ({what})",
            "",
            f"| {unit} | ms per step | sequences / s | vs {table[0][unit]} | "
            "compile + first step (s) |",
            "|---|---|---|---|---|",
        ]
        for row in table:
            lines.append(
                f"| {row[unit]} | {row['ms_per_step']:.1f} | "
                f"{row['sequences_per_second']:,.0f} | "
                f"{row['sequences_per_second'] / single:.2f}x | "
                f"{row['compile_and_first_step_seconds']:.1f} |"
            )
    report = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "scaling.md"), "w") as file:
        file.write(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
