"""Two checkouts of rnnjax timed against each other, alternately, in separate processes.

    python benchmarks/lab/ab_checkouts.py OLD_CHECKOUT NEW_CHECKOUT --rounds 3 --out ab.json

Each round starts one process per checkout, in turn (old, new), and each process times
rnnjax's default path (`fused=None`) on the rows of `benchmarks/speed.py`: the training
step and the forward pass, on one device and with the batch split over the CPU cores,
float32, warm-up excluded, the median of `--calls` calls. The report is each row's
median over rounds and the ratio new / old (below 1: the new checkout is faster).
Used to check that a refactoring of the core kept its speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROWS = [
    ("lstm", (32, 1000, 1, 128)),
    ("lstm", (64, 200, 64, 256)),
    ("gru", (32, 1000, 1, 128)),
    ("gru", (64, 200, 64, 256)),
    ("rnn", (32, 1000, 1, 128)),
    ("rnn", (64, 200, 64, 256)),
    ("lstm", (16, 10000, 1, 64)),
]


def worker(calls: int) -> dict:
    """Times every row in this process, with whichever rnnjax `sys.path` finds."""
    from rnnjax import parallel

    parallel.use_cpu_cores()
    import jax
    import jax.numpy as jnp

    import rnnjax

    results = {}
    for cell_name, shape in ROWS:
        batch, length, inputs, hidden = shape
        cell = getattr(rnnjax, cell_name)(hidden)
        params = cell.init(jax.random.key(0), inputs, jnp.float32)
        xs = jax.random.normal(jax.random.key(1), (batch, length, inputs), jnp.float32)
        target = jnp.zeros((batch, hidden), jnp.float32)

        def loss(params, xs, cell=cell, target=target):
            hs, _ = rnnjax.unroll(cell, params, xs)
            return jnp.mean((hs[:, -1] - target) ** 2)

        train = jax.jit(jax.value_and_grad(loss))
        forward = jax.jit(lambda params, xs, cell=cell: rnnjax.unroll(cell, params, xs)[0])
        placements = {"one device": (None, params, xs)}
        if jax.local_device_count() > 1 and batch % jax.local_device_count() == 0:
            mesh = parallel.device_mesh(jax.local_device_count())
            placed = (
                parallel.replicate(params, mesh),
                jax.device_put(xs, parallel.batch_sharded(mesh)),
            )
            placements["over the cores"] = (mesh, *placed)
        for placement, (mesh, p, x) in placements.items():
            for program_name, program in (("train", train), ("forward", forward)):
                fn = parallel.on_mesh(program, mesh)
                jax.block_until_ready(fn(p, x))  # compile and warm up
                samples = []
                for _ in range(calls):
                    started = time.perf_counter()
                    jax.block_until_ready(fn(p, x))
                    samples.append(1000 * (time.perf_counter() - started))
                key = f"{cell_name} {shape} {placement} {program_name}"
                results[key] = statistics.median(samples)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?")
    parser.add_argument("new", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default="ab.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.calls)))
        return
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for round_index in range(args.rounds):
        for label, checkout in (("old", args.old), ("new", args.new)):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
            command = [sys.executable, __file__, "--worker", "--calls", str(args.calls)]
            output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            runs[label].append(json.loads(output.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}: {label} done", file=sys.stderr, flush=True)
    keys = list(runs["old"][0])
    table = {
        key: {
            "old_ms": statistics.median(r[key] for r in runs["old"]),
            "new_ms": statistics.median(r[key] for r in runs["new"]),
        }
        for key in keys
    }
    for row in table.values():
        row["new_over_old"] = row["new_ms"] / row["old_ms"]
    with open(args.out, "w") as f:
        json.dump({"rounds": runs, "table": table}, f, indent=1)
    print("| row | old ms | new ms | new / old |\n|---|---:|---:|---:|")
    for key, row in table.items():
        print(f"| {key} | {row['old_ms']:.1f} | {row['new_ms']:.1f} | {row['new_over_old']:.2f} |")


if __name__ == "__main__":
    main()
