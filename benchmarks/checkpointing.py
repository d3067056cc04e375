"""Gradient checkpointing as a speed-up: a training step's time, page faults and scratch
memory with and without `checkpoint_every`.

    python benchmarks/checkpointing.py --out results/checkpointing      # about 6 minutes
    python benchmarks/checkpointing.py --huge-pages --out results/checkpointing-huge-pages
    python benchmarks/checkpointing.py --quick --out results/checkpointing-quick

`rnnjax.unroll(..., checkpoint_every=K)` is there to bound memory: the backward pass
keeps each chunk's starting state and recomputes the chunk's activations. On a CPU
it can also make a training step faster. XLA's CPU runtime gives every call one
scratch block for all its intermediates and frees it on return; glibc reuses a freed
block only up to its largest dynamic `mmap` threshold, 32 MiB, and hands a larger one
back to the kernel, so the next call faults every page of it in again, 4 KiB at a
time. Checkpointing shrinks the block (the activations of one chunk instead of the
whole sequence), and past the point where it fits, the faults stop.

For every row of `benchmarks/speed.py` (its training step: `value_and_grad` of the
MSE on the last hidden state, float32), both rnnjax paths (the reference path
`fused=False`, labelled "default": every cell's default when the committed reports
were measured, and still the GRU's and RNN's; and the fused kernel `fused=True`, now
the LSTM's default: `rnnjax.cells.preferred_fused`), over two CPU devices (the batch
split, one device per core) and, for the rows at T = 1000, on one device as well: the
step compiled without checkpointing and with
`checkpoint_every = round(sqrt(T))` (`speed.sqrt_chunk`), timed in interleaved rounds
(each timed call after two warm-up calls of its own), median milliseconds and median
minor page faults per call, and each device's scratch block from XLA's memory
analysis. Each row runs in a process of its own, so its page faults are its own and
its allocator starts fresh. The report also gives what one minor page fault costs on
the machine during the run (`page_fault_us`), since that cost, and with it the
gain, varies between machines and between days on a shared one.

`--huge-pages` restarts the script with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, as
`benchmarks/speed.py --huge-pages` does, and every row's process inherits it: glibc
then faults large blocks in 2 MiB at a time, which takes most of the page faults'
cost away without checkpointing, and leaves its price, one more forward pass.
Writes `checkpointing.json` and `checkpointing.md` to --out.
"""

import argparse
import json
import mmap
import os
import resource
import statistics
import sys
import time

import speed
from cpu_profile import faults_and_ms

PATHS = {"default": False, "fused=True": True}
PLACEMENTS = ("two devices", "one device")
QUICK_SHAPES = [("lstm", (32, 100, 1, 64)), ("rnn", (32, 100, 1, 64))]


def page_fault_us(mib: int = 256, repeats: int = 5) -> float:
    """What one minor page fault costs here, in microseconds: the median time per page of
    writing one byte into each 4 KiB page of a fresh anonymous mapping of `mib` MiB
    (each write faults its page in, as a training step's fresh scratch block does)."""
    import numpy as np

    size, page = mib * 2**20, mmap.PAGESIZE
    costs = []
    for _ in range(repeats):
        with mmap.mmap(-1, size) as block:
            pages = np.frombuffer(block, np.uint8)[::page]
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            pages[:] = 1
            elapsed = time.perf_counter() - started
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            del pages  # the mapping cannot close while a view of it exists
        costs.append(1e6 * elapsed / max(faults, 1))
    return statistics.median(costs)


def rows_to_measure(quick: bool) -> list[tuple]:
    """`(cell, shape, path, placement)` of every row, in report order."""
    shapes = QUICK_SHAPES if quick else speed.FULL_SHAPES
    rows = []
    for placement in PLACEMENTS:
        for cell_name, shape in shapes:
            if placement == "one device" and shape[1] != (100 if quick else 1000):
                continue  # one device: the contrast at one length is enough
            rows += [(cell_name, shape, path, placement) for path in PATHS]
    return rows


def measure_row(cell_name: str, shape: tuple, path: str, placement: str, rounds: int) -> dict:
    """In this process: the step without and with checkpointing, interleaved.

    Returns `{"off" or str(chunk): {"ms", "faults", "scratch_mib"}}`, `scratch_mib` per
    device. Two devices need `rnnjax.parallel.use_cpu_cores(2)` called first.
    """
    import jax

    from rnnjax import parallel

    chunk = speed.sqrt_chunk(shape[1])
    calls, scratch = {}, {}
    for label, every in (("off", None), (str(chunk), chunk)):
        programs = speed.rnnjax_programs(
            cell_name,
            shape,
            fused=PATHS[path],
            split=placement == "two devices",
            checkpoint_every=every,
        )
        train, args, mesh = programs["train"], programs["args"], programs["mesh"]
        compiled = parallel.on_mesh(
            lambda train=train, args=args: train.lower(*args).compile(), mesh
        )
        scratch[label] = compiled().memory_analysis().temp_size_in_bytes / 2**20
        step = parallel.on_mesh(train, mesh)
        calls[label] = lambda step=step, args=args: jax.block_until_ready(step(*args))
    times = {label: [] for label in calls}
    faults = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            timing = faults_and_ms(call, repeats=1, warmups=2)
            times[label].append(timing["ms"])
            faults[label].append(timing["faults"])
    return {
        label: {
            "ms": statistics.median(times[label]),
            "faults": statistics.median(faults[label]),
            "scratch_mib": scratch[label],
        }
        for label in calls
    }


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Gradient checkpointing and a training step's speed on the CPU",
        "",
        f"JAX {meta['jax']}; {meta['cpu_count']} CPUs; float32; the training step of "
        "`benchmarks/speed.py`; each row in its own process, median of "
        f"{meta['rounds']} interleaved rounds after warm-up. `checkpoint_every` = "
        "round(sqrt(T)); speed-up: off over checkpointed; scratch: XLA's scratch block "
        "per device and call."
        + (
            f" One minor page fault cost {meta['page_fault_us']:.2f} us in this run "
            "(`page_fault_us`: a fresh 256 MiB mapping written one byte per page)."
            if "page_fault_us" in meta
            else ""
        )
        + (
            " Run with `--huge-pages`: glibc asks for transparent huge pages on every block "
            "it maps (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), in every row's process."
            if meta.get("huge_pages")
            else ""
        )
        + (
            " Run with `--huge-pages`, but this machine could not use them (glibc older "
            "than 2.35, or transparent huge pages off)."
            if meta.get("huge_pages") is False
            else ""
        ),
        "",
        "| cell (B, T, I, H) | path | placement | checkpoint_every | ms, off | ms, "
        "checkpointed | speed-up | faults per call, off | checkpointed | scratch MiB, off | "
        "checkpointed |",
        "|" + "---|" * 11,
    ]
    for row in results["rows"]:
        off, chunk = row["results"]["off"], row["results"][str(row["checkpoint_every"])]
        cells = [
            f"{row['cell']} {tuple(row['shape'])}",
            row["path"],
            row["placement"],
            str(row["checkpoint_every"]),
            f"{off['ms']:.1f}",
            f"{chunk['ms']:.1f}",
            f"{off['ms'] / chunk['ms']:.2f}x",
            f"{off['faults']:,.0f}",
            f"{chunk['faults']:,.0f}",
            f"{off['scratch_mib']:.1f}",
            f"{chunk['scratch_mib']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--row"]:  # one row, in the process `main` started for it
        cell_name, shape, path, placement, rounds = argv[1:]
        from rnnjax import parallel

        parallel.use_cpu_cores(2)  # before JAX's first computation
        shape = tuple(int(n) for n in shape.split(","))
        print(json.dumps(measure_row(cell_name, shape, path, placement, int(rounds))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "checkpointing"))
    parser.add_argument("--quick", action="store_true", help="two small rows, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7)")
    parser.add_argument(
        "--huge-pages",
        action="store_true",
        help="restart with glibc asking for transparent huge pages (every row's process too)",
    )
    args = parser.parse_args(argv)
    from rnnjax import host_memory

    if args.huge_pages and not host_memory.huge_pages_requested():
        # glibc reads its tunables only at start: run this script again with them.
        environment = host_memory.environment_with_huge_pages()
        os.execve(sys.executable, [sys.executable, __file__, *argv], environment)
    rounds = args.rounds or (3 if args.quick else 7)
    meta = {**speed.versions(), "rounds": rounds, "quick": args.quick}
    if args.huge_pages:
        meta["huge_pages"] = host_memory.huge_pages_active()
    meta["page_fault_us"] = page_fault_us()
    print(f"one minor page fault: {meta['page_fault_us']:.2f} us", flush=True)
    results = {"meta": meta, "rows": []}
    for cell_name, shape, path, placement in rows_to_measure(args.quick):
        measured = speed.json_from_child(
            __file__, "--row", cell_name, ",".join(map(str, shape)), path, placement, str(rounds)
        )
        chunk = speed.sqrt_chunk(shape[1])
        off, on = measured["off"], measured[str(chunk)]
        print(
            f"{cell_name} {shape} {path:<10} {placement:<11} off {off['ms']:7.1f} ms "
            f"{off['faults']:>7,.0f} faults   every {chunk}: {on['ms']:7.1f} ms "
            f"{on['faults']:>7,.0f} faults",
            flush=True,
        )
        results["rows"].append(
            {
                "cell": cell_name,
                "shape": list(shape),
                "path": path,
                "placement": placement,
                "checkpoint_every": chunk,
                "results": measured,
            }
        )
    from rnnjax._files import write_results

    print(write_results(args.out, "checkpointing", results, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
