"""Steps per loop iteration: rnnjax's paths with `unroll` = 1, 2 and 4.

    python benchmarks/unroll.py --out results/unroll            # about 2 minutes on 2 cores
    python benchmarks/unroll.py --other-path --out results/unroll-other-path
    python benchmarks/unroll.py --quick --out results/unroll-quick

`lax.scan(..., unroll=k)` places `k` steps in each iteration of the compiled loop.
For every cell at the shapes of `benchmarks/speed.py` (all but its T = 10,000 LSTM
row), and for an RNN and a GRU at lengths that 2 does not divide, this times each
cell's default path (`fused=None`: the fused kernel for the LSTM and the RNN, the
reference path for the GRU; `rnnjax.cells.preferred_fused`) or, with
`--other-path`, the path its default does not take, training step and inference
(as `speed.py` defines them, float32) with `unroll` = 1, 2 and 4, on one device and
over the cores (one JAX CPU device per core, the batch split over them), in
interleaved rounds after warm-up, and reports medians. `rnnjax.cells.preferred_unroll`,
the factor `rnnjax.unroll` uses on either path when its caller leaves `unroll` unset
(where T divides by it), is read off these tables; the report shows the factor it
chose beside each row. Writes `unroll.json`
and `unroll.md` to --out.
"""

import argparse
import os
import sys

import speed

FACTORS = (1, 2, 4)
# Lengths that do not divide by 2, where `rnnjax.unroll` keeps one step per iteration.
ODD_LENGTH_SHAPES = [("rnn", (32, 999, 1, 128)), ("gru", (64, 199, 64, 256))]
PLACEMENTS = {"one device": False, "over the cores": True}


def path_fused(cell_name, other_path=False) -> bool | None:
    """What `speed.rnnjax_impl` passes as `fused`: None for the cell's default path, or
    the path that default does not take."""
    if not other_path:
        return None
    import rnnjax
    from rnnjax.cells import preferred_fused

    return not preferred_fused(getattr(rnnjax, cell_name)(4))


def measure_shape(cell_name, shape, rounds, split_available, other_path=False):
    """`{(placement, factor): {"train_ms", "forward_ms"}}`, timed in interleaved rounds."""
    fused = path_fused(cell_name, other_path)
    built = {}
    for placement, split in PLACEMENTS.items():
        if split and not split_available:
            continue
        for factor in FACTORS:
            train_step, forward = speed.rnnjax_impl(
                cell_name, shape, fused=fused, split=split, unroll=factor
            )
            for _ in range(2):  # compile, then warm up
                train_step()
                forward()
            built[(placement, factor)] = (train_step, forward)
    return {
        key: {"train_ms": train_ms, "forward_ms": forward_ms}
        for key, (train_ms, forward_ms) in speed.interleaved_median_ms(built, rounds).items()
    }


def preferred(cell_name, length) -> int:
    """The factor `rnnjax.unroll` chooses for this cell and length when not told."""
    import rnnjax
    from rnnjax.cells import preferred_unroll

    return preferred_unroll(getattr(rnnjax, cell_name)(4), num_steps=length)


def markdown(results: dict) -> str:
    meta = results["meta"]
    path = {
        "default": "rnnjax's default path (`fused=None`)",
        "other": "the path each cell's default does not take",
    }[meta.get("path", "default")]
    lines = [
        f"# Steps per loop iteration (`unroll`) on {path}",
        "",
        f"JAX {meta['jax']}; {meta['cpu_count']} CPUs ({meta['jax_cpu_devices']} JAX CPU "
        f"devices); float32; median of {meta['rounds']} interleaved rounds after warm-up; "
        'milliseconds. "chosen": the factor `rnnjax.unroll` uses when `unroll` is left '
        'unset (`rnnjax.cells.preferred_unroll`, where T divides by it); "speed-up": '
        "unroll = 1 over the chosen factor.",
    ]
    for measure, title in (("train_ms", "Training step"), ("forward_ms", "Inference")):
        placements = [
            p for p in PLACEMENTS if any(p in row["results"] for row in results["shapes"])
        ]
        header = ["cell (B, T, I, H)", "chosen"]
        for placement in placements:
            header += [f"{placement}, unroll={factor}" for factor in FACTORS]
            header.append(f"{placement}, speed-up")
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for row in results["shapes"]:
            chosen = row["chosen"]
            fused = row.get("fused")
            label = "" if fused is None else f", fused={fused}"
            cells = [f"{row['cell']} {tuple(row['shape'])}{label}", str(chosen)]
            for placement in placements:
                times = row["results"].get(placement, {})
                cells += [
                    f"{times[str(f)][measure]:.1f}" if str(f) in times else "–" for f in FACTORS
                ]
                if str(chosen) in times:
                    ratio = times["1"][measure] / times[str(chosen)][measure]
                    cells.append(f"{ratio:.2f}x")
                else:
                    cells.append("–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "unroll"))
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7)")
    parser.add_argument(
        "--other-path",
        action="store_true",
        help="time the path each cell's default does not take (fused=False for the LSTM "
        "and RNN, fused=True for the GRU)",
    )
    args = parser.parse_args(argv)
    import jax

    from rnnjax import parallel

    parallel.use_cpu_cores()  # before JAX's first computation
    shapes = (
        speed.QUICK_SHAPES
        if args.quick
        else [s for s in speed.FULL_SHAPES if s[1][1] <= 1000] + ODD_LENGTH_SHAPES
    )
    rounds = args.rounds or (3 if args.quick else 7)
    devices = jax.local_device_count("cpu")
    meta = {**speed.versions(), "rounds": rounds, "quick": args.quick, "jax_cpu_devices": devices}
    meta["path"] = "other" if args.other_path else "default"
    results = {"meta": meta, "shapes": []}
    for cell_name, shape in shapes:
        print(f"{cell_name} {shape} ...", flush=True)
        split_available = devices > 1 and shape[0] % devices == 0
        measured = measure_shape(cell_name, shape, rounds, split_available, args.other_path)
        by_placement = {}
        for (placement, factor), times in measured.items():
            by_placement.setdefault(placement, {})[str(factor)] = times
            print(
                f"  {placement:<15} unroll={factor}  train {times['train_ms']:8.1f} ms   "
                f"forward {times['forward_ms']:8.1f} ms",
                flush=True,
            )
        results["shapes"].append(
            {
                "cell": cell_name,
                "shape": list(shape),
                "chosen": preferred(cell_name, shape[1]),
                "fused": path_fused(cell_name, args.other_path),
                "results": by_placement,
            }
        )
    from rnnjax._files import write_results

    write_results(args.out, "unroll", results, markdown)
    print(f"wrote {args.out}/unroll.json and unroll.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
