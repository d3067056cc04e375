"""Where a minGRU training step's time goes on a CPU, beside the GRU's.

    python benchmarks/lab/min_gru_profile.py --out benchmarks/lab/results

The cell-zoo issue asks for a minGRU training step 4x faster than the GRU's at
(B, T, I, H) = (32, 1000, 1, 128) and (16, 10000, 1, 64). This script times, at both
shapes, in interleaved rounds after warm-up (medians):

- the training step (`value_and_grad` of the MSE of the last output, as
  `benchmarks/speed.py` does) of the GRU and of minGRU on each of its paths:
  `fused` (the CPU default), `sequential` and `parallel` (`rnnjax.scans`);
- minGRU's forward pass alone (no derivative);
- the pieces of a CPU loop over the sequence in plain JAX: a `lax.scan` of `T` trivial
  steps that saves nothing; the same scan saving its `(B, H)` state at every step into
  a `(T, B, H)` output; and one elementwise pass that writes a fresh `(T, B, H)` array.

Writes min_gru_profile.json and min_gru_profile.md to --out.
"""

import argparse
import json
import os
import statistics
import sys
import time

SHAPES = [(32, 1000, 1, 128), (16, 10000, 1, 64)]


def programs(shape):
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import scans

    batch, length, inputs, hidden = shape
    xs = jax.random.normal(jax.random.key(1), (batch, length, inputs), jnp.float32)
    target = jax.random.normal(jax.random.key(2), (batch, hidden), jnp.float32)
    calls = {}

    def train_step(cell):
        params = cell.init(jax.random.key(0), inputs, jnp.float32)

        def loss(params):
            return jnp.mean((rnnjax.unroll(cell, params, xs)[0][:, -1] - target) ** 2)

        step = jax.jit(jax.value_and_grad(loss))
        return lambda: jax.block_until_ready(step(params))

    calls["GRU training step"] = train_step(rnnjax.gru(hidden))
    for method in ("fused", "sequential", "parallel"):
        cell = rnnjax.min_gru(hidden)._replace(sequence=scans.min_gru_sequence(method))
        calls[f"minGRU training step, {method}"] = train_step(cell)
    cell = rnnjax.min_gru(hidden)
    params = cell.init(jax.random.key(0), inputs, jnp.float32)
    forward = jax.jit(lambda params: rnnjax.unroll(cell, params, xs)[0])
    calls["minGRU forward only, fused"] = lambda: jax.block_until_ready(forward(params))

    a = jax.random.uniform(jax.random.key(3), (length, batch, hidden), jnp.float32)
    h0 = jnp.zeros((batch, hidden), jnp.float32)

    def loop(a, save):
        def body(h, a_t):
            h = a_t * h + 1.0
            return h, h if save else None

        return jax.lax.scan(body, h0, a)

    bare = jax.jit(lambda a: loop(a, False)[0])
    saving = jax.jit(lambda a: loop(a, True)[1])
    fresh = jax.jit(lambda a: a * 2.0)
    calls["scan of T trivial steps, saving nothing"] = lambda: jax.block_until_ready(bare(a))
    calls["the same scan saving a (T, B, H) output"] = lambda: jax.block_until_ready(saving(a))
    calls["one elementwise pass into a fresh (T, B, H) array"] = lambda: jax.block_until_ready(
        fresh(a)
    )
    return calls


def measure(shape, rounds):
    calls = programs(shape)
    for call in calls.values():  # compile and warm up
        call()
        call()
    samples = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in samples.items()}


def markdown(results):
    lines = [
        "# minGRU's training step on a CPU: where the time goes",
        "",
        f"JAX {results['jax']}, {results['cpus']} CPUs, one device, float32; medians of "
        f"{results['rounds']} interleaved rounds after warm-up, milliseconds. "
        "`python benchmarks/lab/min_gru_profile.py --out benchmarks/lab/results`.",
        "",
    ]
    shapes = [tuple(row["shape"]) for row in results["rows"]]
    lines.append("| measurement | " + " | ".join(str(s) for s in shapes) + " |")
    lines.append("|---" * (len(shapes) + 1) + "|")
    for name in results["rows"][0]["ms"]:
        lines.append(
            f"| {name} | " + " | ".join(f"{row['ms'][name]:.1f}" for row in results["rows"]) + " |"
        )
    lines += [
        "",
        "GRU / minGRU (fused), the issue's ratio: "
        + ", ".join(
            f"{tuple(row['shape'])}: "
            f"{row['ms']['GRU training step'] / row['ms']['minGRU training step, fused']:.2f}x"
            for row in results["rows"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "min_gru_profile"))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import jax

    rows = []
    for shape in SHAPES:
        print(f"{shape} ...", file=sys.stderr, flush=True)
        rows.append({"shape": list(shape), "ms": measure(shape, args.rounds)})
    results = {"jax": jax.__version__, "cpus": os.cpu_count(), "rounds": args.rounds, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "min_gru_profile.json"), "w") as file:
        json.dump(results, file, indent=1)
    text = markdown(results)
    with open(os.path.join(args.out, "min_gru_profile.md"), "w") as file:
        file.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
