"""The fused kernels against the reference path, training step, over a grid of shapes.

    python benchmarks/fused.py --out benchmarks/results/fused     # about 4 minutes on 2 cores
    python benchmarks/fused.py --quick --out results/fused-quick

For every built-in cell, over a grid of shapes (B, T, I, H) wider than the rows of
`benchmarks/speed.py` (small and large batches, inputs and hidden sizes, T from 50 to
1,000), this times the training step (as `speed.py` defines it: `value_and_grad` of
an MSE on the last hidden state, float32) on the reference path (`fused=False`,
autodiff through `cell.step`) and on the fused kernel (`fused=True`), on one device
and over the cores (one JAX CPU device per core, the batch split over them), in
interleaved rounds after warm-up, and reports medians and the speed-up of the kernel.
Inference is not timed: without differentiation both paths run `cell.step`.
Both paths run their default steps per loop iteration
(`rnnjax.cells.preferred_unroll`: 2 for the RNN and GRU, 1 for the LSTM). This
table is the evidence for choosing the path per cell by default
(`rnnjax.cells.preferred_fused`: `rnnjax.unroll(..., fused=None)` runs the LSTM's
and the RNN's kernels and the GRU's reference path). Writes
`fused.json` and `fused.md` to --out.
"""

import argparse
import os
import sys

import speed

CELLS = ("lstm", "gru", "rnn")
GRID = [
    (8, 50, 1, 32),
    (64, 50, 16, 64),
    (16, 500, 8, 64),
    (64, 100, 128, 128),
    (128, 100, 32, 128),
    (8, 1000, 4, 256),
    (32, 300, 64, 512),
]
QUICK_GRID = [(8, 20, 1, 16), (16, 30, 8, 32)]
PATHS = {"reference": False, "fused": True}
PLACEMENTS = {"one device": False, "over the cores": True}


def measure_shape(cell_name, shape, rounds, split_available):
    """`{(placement, path): train_ms}`, timed in interleaved rounds."""
    built = {}
    for placement, split in PLACEMENTS.items():
        if split and not split_available:
            continue
        for path, fused in PATHS.items():
            train_step, _ = speed.rnnjax_impl(cell_name, shape, fused=fused, split=split)
            for _ in range(2):  # compile, then warm up
                train_step()
            built[(placement, path)] = (train_step,)
    return {key: ms for key, (ms,) in speed.interleaved_median_ms(built, rounds).items()}


def speed_ups(results: dict, cell_name: str) -> list[float]:
    """The kernel's speed-up (reference ms / fused ms) on every shape and placement."""
    return [
        times["reference"] / times["fused"]
        for row in results["shapes"]
        if row["cell"] == cell_name
        for times in row["results"].values()
    ]


def markdown(results: dict) -> str:
    meta = results["meta"]
    placements = [p for p in PLACEMENTS if any(p in row["results"] for row in results["shapes"])]
    lines = [
        "# The fused kernels against the reference path: training step",
        "",
        f"JAX {meta['jax']}; {meta['cpu_count']} CPUs ({meta['jax_cpu_devices']} JAX CPU "
        f"devices); float32; median of {meta['rounds']} interleaved rounds after warm-up; "
        'milliseconds. "speed-up": reference / fused (above 1: the kernel is faster).',
        "",
        "| cell | faster with the kernel | speed-up of the kernel, lowest - highest |",
        "|---|---|---|",
    ]
    for cell_name in dict.fromkeys(row["cell"] for row in results["shapes"]):
        ups = speed_ups(results, cell_name)
        wins = sum(up > 1 for up in ups)
        lines.append(f"| {cell_name} | {wins} of {len(ups)} | {min(ups):.2f}x - {max(ups):.2f}x |")
    header = ["cell (B, T, I, H)"]
    for placement in placements:
        header += [f"{placement}, {path}" for path in PATHS] + [f"{placement}, speed-up"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results["shapes"]:
        cells = [f"{row['cell']} {tuple(row['shape'])}"]
        for placement in placements:
            times = row["results"].get(placement)
            if times is None:
                cells += ["–"] * (len(PATHS) + 1)
                continue
            cells += [f"{times[path]:.1f}" for path in PATHS]
            cells.append(f"{times['reference'] / times['fused']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "fused"))
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7)")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells")
    args = parser.parse_args(argv)
    import jax

    from rnnjax import parallel

    parallel.use_cpu_cores()  # before JAX's first computation
    cells = [c for c in args.cells.split(",") if c]
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        parser.error(f"unknown cells {unknown}; choose from {list(CELLS)}")
    grid = QUICK_GRID if args.quick else GRID
    rounds = args.rounds or (3 if args.quick else 7)
    devices = jax.local_device_count("cpu")
    meta = {**speed.versions(), "rounds": rounds, "quick": args.quick, "jax_cpu_devices": devices}
    results = {"meta": meta, "shapes": []}
    for cell_name in cells:
        for shape in grid:
            print(f"{cell_name} {shape} ...", flush=True)
            split_available = devices > 1 and shape[0] % devices == 0
            measured = measure_shape(cell_name, shape, rounds, split_available)
            by_placement = {}
            for (placement, path), ms in measured.items():
                by_placement.setdefault(placement, {})[path] = ms
            for placement, times in by_placement.items():
                print(
                    f"  {placement:<15} reference {times['reference']:8.1f} ms   fused "
                    f"{times['fused']:8.1f} ms   {times['reference'] / times['fused']:.2f}x",
                    flush=True,
                )
            results["shapes"].append(
                {"cell": cell_name, "shape": list(shape), "results": by_placement}
            )
    from rnnjax._files import write_results

    write_results(args.out, "fused", results, markdown)
    print(f"wrote {args.out}/fused.json and fused.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
