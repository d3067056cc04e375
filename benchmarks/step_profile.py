"""Where rnnjax's training step spends its time, by kind of work, read off XLA's profiler.

    python benchmarks/step_profile.py --out benchmarks/results/step_profile   # about 3 minutes
    python benchmarks/step_profile.py --quick --out results/step_profile-quick

For the rows of `benchmarks/speed.py` where rnnjax misses a goal and for the LSTM and
GRU rows beside them, this runs rnnjax's default path over the cores (one JAX CPU
device per core, the batch split over them: the "rnnjax over the cores" column of
`speed.py`), float32, the training step `speed.py` times, each row in a Python
process of its own (so that no other row's memory is in its allocator), and records:

1. **The profile.** A few calls are traced with `jax.profiler`; the trace is read with
   `jax.profiler.ProfileData`, and every operation XLA ran is put in one of five
   groups by the compiled program's own text (`compiled.as_text()`): the matrix
   products inside the loops (one or two per step: the recurrence and its
   derivative), the matrix products outside them (the input projection and the weight
   gradients, one each over all steps), the rest of the loops' work (gate
   nonlinearities, residuals and outputs written per step), the rest outside the
   loops (buffers zero-filled and copied, layout changes, sums), and the gradient sum
   over the devices (which includes the time one device waits for the other).
   Milliseconds per call and per device, each operation's own time without what nests
   inside it in the trace; the groups add up to the busy time of one device, which is
   less than the wall time by the runtime's own gaps.
2. **Memory per call**: XLA's scratch block per device (`memory_analysis()`) and the
   minor page faults per call, each fault a fresh page of that block (glibc gives a
   block above 32 MiB back to the kernel when it is freed: `rnnjax.host_memory`).
3. **The wall time** of the same step, interleaved with PyTorch's step at the same
   shape when PyTorch is installed, with their ratio and the ratio of the loop matmuls
   alone to PyTorch's whole step. These calls come first, before any trace: what the
   profiler allocates changes the allocator's state, and with it what a later call of
   either library costs (PyTorch's LSTM step at (64, 200, 64, 256) ran far faster
   after a trace than before it, in our first version of this script).
4. **The residual written in place** (`rnnjax.fused`): the fused training step at
   I = 64, on one device and over the cores, with each step's gate-wide residual
   written over the input projection it has just read (what `rnnjax.fused` does) or
   stacked by the loop into a buffer of its own (what it did before; traced with
   `rnnjax.fused._forward_loop` swapped for `stacked_forward_loop` below),
   interleaved, in a process of its own.

Writes `step_profile.json` and `step_profile.md` to --out.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import speed
from cpu_profile import faults_and_ms, patched

ROWS = [
    ("lstm", (32, 1000, 1, 128)),
    ("lstm", (64, 200, 64, 256)),
    ("gru", (32, 1000, 1, 128)),
    ("gru", (64, 200, 64, 256)),
]
QUICK_ROWS = [("lstm", (8, 30, 40, 16)), ("gru", (8, 30, 1, 16))]
IN_PLACE_SHAPE = (64, 200, 64, 256)
QUICK_IN_PLACE_SHAPE = (8, 30, 40, 16)
GROUPS = (
    "matmuls in the loops",
    "matmuls outside the loops",
    "other work in the loops",
    "other work outside the loops",
    "gradient sum over the devices",
)
# Trace events that are the runtime's bookkeeping, not an operation of the program, and
# those of a device waiting for the other inside a collective (part of the gradient sum).
_BOOKKEEPING = re.compile(r"^(ThunkExecutor|end: |\[\d+\] |CommonPjRt)")
_WAITING = re.compile(r"^(Rendezvous|Wait)")
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")


# -- the compiled program's text --------------------------------------------------------


def operation_groups(hlo_text: str) -> dict[str, str]:
    """`{instruction name: group}` for every instruction of a compiled program's text.

    An instruction is "in the loops" when it belongs to the body of a `while` (or of a
    computation such a body calls, other than a fusion's own insides), a matmul when it
    is a `dot` or a fusion whose computation holds one, and a collective by its opcode.
    A `while` itself, whose trace event is the loop's own bookkeeping between the
    operations of its body, counts as other work in the loops.
    """
    computations: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) \(", line)
        if header:
            current = header.group(1)
            computations[current] = []
        elif current is not None and line.strip().removeprefix("ROOT ").startswith("%"):
            name, _, rest = line.strip().removeprefix("ROOT ")[1:].partition(" = ")
            computations[current].append((name, rest))
    bodies = {
        body
        for instructions in computations.values()
        for _, rest in instructions
        for body in re.findall(r"\bbody=%([\w.\-]+)", rest)
    }
    # Computations a loop body reaches through calls, conditionals and nested loops.
    in_loops, pending = set(), list(bodies)
    while pending:
        name = pending.pop()
        if name in in_loops or name not in computations:
            continue
        in_loops.add(name)
        for _, rest in computations[name]:
            if " fusion(" not in rest:
                pending += re.findall(
                    r"(?:body|to_apply|calls|branch_computations)=%([\w.\-]+)", rest
                )

    def has_dot(computation: str) -> bool:
        return any(" dot(" in rest for _, rest in computations.get(computation, ()))

    groups = {}
    for computation, instructions in computations.items():
        where = "in the loops" if computation in in_loops else "outside the loops"
        for name, rest in instructions:
            called = re.findall(r"\bcalls=%([\w.\-]+)", rest)
            if any(f" {op}(" in rest for op in _COLLECTIVES):
                groups[name] = GROUPS[4]
            elif " while(" in rest:
                groups[name] = "other work in the loops"
            elif " dot(" in rest or (" fusion(" in rest and any(map(has_dot, called))):
                groups[name] = f"matmuls {where}"
            else:
                groups[name] = f"other work {where}"
    return groups


# -- one row ----------------------------------------------------------------------------


def self_times_ns(events) -> dict[str, int]:
    """`{name: nanoseconds}` of one trace line's events, each counted without the events
    nested inside it (a loop's event spans the operations of its body on some lines)."""
    totals = collections.Counter()
    stack: list[list] = []  # [end_ns, name, self_ns] of the events still open
    for event in sorted(events, key=lambda e: (e.start_ns, -e.duration_ns)):
        while stack and stack[-1][0] <= event.start_ns:
            _, name, own = stack.pop()
            totals[name] += own
        if stack:
            stack[-1][2] -= event.duration_ns
        stack.append([event.start_ns + event.duration_ns, event.name, event.duration_ns])
    for _, name, own in stack:
        totals[name] += own
    return totals


def traced_operation_ms(step, calls: int, devices: int) -> dict[str, float]:
    """Milliseconds per call and per device of every operation `step()` runs, from a
    trace of `calls` calls (each operation's own time, without what nests inside it)."""
    import jax
    from jax.profiler import ProfileData

    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        for _ in range(calls):
            step()
        jax.profiler.stop_trace()
        paths = [
            os.path.join(root, name)
            for root, _, names in os.walk(folder)
            for name in names
            if name.endswith(".xplane.pb")
        ]
        profile = ProfileData.from_file(max(paths, key=os.path.getmtime))
        total = collections.Counter()
        for plane in profile.planes:
            for line in plane.lines:
                if line.name == "python":  # the host's Python calls, not the program's
                    continue
                for name, ns in self_times_ns(line.events).items():
                    if not _BOOKKEEPING.match(name):
                        total[name] += ns
    return {name: ns / 1e6 / calls / devices for name, ns in total.items()}


def profile_row(cell_name: str, shape: tuple, rounds: int) -> dict:
    """The profile, memory and wall time of one row (see the module docstring)."""
    import jax

    from rnnjax import parallel

    programs = speed.rnnjax_programs(cell_name, shape, fused=None, split=True)
    mesh, args = programs["mesh"], programs["args"]
    devices = jax.local_device_count()
    with jax.set_mesh(mesh):
        compiled = programs["train"].lower(*args).compile()
    groups = operation_groups(compiled.as_text())
    train = parallel.on_mesh(programs["train"], mesh)

    def step():
        jax.block_until_ready(train(*args))

    # The untimed and untraced calls first: the trace allocates memory of its own, and
    # the allocator's state it leaves behind changes what later calls cost.
    timed = {"rnnjax": (step,)}
    if speed._installed("torch"):
        timed["PyTorch"] = (speed.torch_impl(cell_name, shape)[0],)
    for (fn,) in timed.values():
        fn()
    wall = {name: ms for name, (ms,) in speed.interleaved_median_ms(timed, rounds).items()}
    faults = faults_and_ms(step, repeats=rounds, warmups=0)["faults"]
    operations = traced_operation_ms(step, calls=rounds, devices=devices)
    by_group = dict.fromkeys(GROUPS, 0.0)
    unmatched = 0.0
    for name, ms in operations.items():
        if name in groups:
            by_group[groups[name]] += ms
        elif _WAITING.match(name):
            by_group[GROUPS[4]] += ms
        else:
            unmatched += ms
    top = sorted(operations.items(), key=lambda item: -item[1])[:10]
    return {
        "cell": cell_name,
        "shape": list(shape),
        "devices": devices,
        "wall_ms": wall,
        "groups_ms": by_group,
        "unmatched_ms": unmatched,
        "top_operations_ms": [[name, groups.get(name, "?"), ms] for name, ms in top],
        "scratch_mib_per_device": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "minor_faults_per_call": faults,
    }


# -- the residual in place, against a stacked residual -----------------------------------


def stacked_forward_loop(kernel, params, xs, projections, state, valid, *, reverse, unroll):
    """`rnnjax.fused._forward_loop` as it was before the residual went in place: the loop
    reads the projections as a scanned input and stacks every residual, the gate-wide
    one included, in buffers of their own."""
    import jax

    from rnnjax import fused

    bias = params.b[None, :]
    save_h_prev = valid is not None

    def body(carry, step_inputs):
        input_t, valid_t = step_inputs
        xw_t = input_t @ params.w_ih if projections is None else input_t
        new, h, residual = fused._kernel_step(kernel, params, carry, xw_t + bias)
        new, h = fused.masked_step(valid_t, new, carry, h)
        h_prev = kernel.hidden(carry) if save_h_prev else None
        return new, (h, h_prev, residual)

    inputs = xs if projections is None else projections
    final, (hs, h_prev, residuals) = jax.lax.scan(
        body, state, (inputs, valid), reverse=reverse, unroll=unroll
    )
    return final, hs, h_prev, tuple(residuals)


def in_place_ms(shape: tuple, rounds: int) -> list[dict]:
    """The fused training step of every cell with the residual in place or stacked, on
    one device and over the cores, interleaved (milliseconds)."""
    import jax

    from rnnjax import fused

    placements = {"one device": False}
    if jax.local_device_count() > 1 and shape[0] % jax.local_device_count() == 0:
        placements["over the cores"] = True
    timed, keys = {}, []
    for cell_name in ("lstm", "gru", "rnn"):
        for placement, split in placements.items():
            for label, loop in (
                ("in place", fused._forward_loop),
                ("stacked", stacked_forward_loop),
            ):
                with patched(fused, "_forward_loop", loop):
                    step = speed.rnnjax_impl(cell_name, shape, fused=True, split=split)[0]
                    step()  # traced and compiled inside the block
                timed[(cell_name, placement, label)] = (step,)
            keys.append((cell_name, placement))
    medians = speed.interleaved_median_ms(timed, rounds)
    return [
        {
            "cell": cell_name,
            "placement": placement,
            "in_place_ms": medians[(cell_name, placement, "in place")][0],
            "stacked_ms": medians[(cell_name, placement, "stacked")][0],
        }
        for cell_name, placement in keys
    ]


# -- the report -------------------------------------------------------------------------


def row_label(row: dict) -> str:
    return f"{row['cell']} ({', '.join(map(str, row['shape']))})"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Where rnnjax's training step spends its time",
        "",
        f"JAX {meta['jax']}, {meta['cpu_count']} CPUs ({meta['jax_cpu_devices']} JAX CPU "
        f"devices); float32; rnnjax's default path over the cores; {meta['rounds']} traced "
        "calls, and the wall times a median of as many interleaved rounds.",
        "",
        "## The training step by kind of work (milliseconds per call and per device)",
        "",
        "| cell (B, T, I, H) | " + " | ".join(GROUPS) + " | busy | wall time | wall - busy |",
        "|---|" + "---|" * (len(GROUPS) + 3),
    ]
    for row in results["rows"]:
        label = row_label(row)
        groups = [row["groups_ms"][group] for group in GROUPS]
        cells = [f"{ms:.1f}" for ms in groups]
        busy = sum(groups) + row["unmatched_ms"]
        wall = row["wall_ms"]["rnnjax"]
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {busy:.1f} | {wall:.1f} | {wall - busy:.1f} |"
        )
    lines += [
        "",
        '"busy" is the groups\' sum (with the few operations that are none of the '
        "groups'): one device's time in the program's operations, as the trace shows it. The "
        'wall time is the step untraced; "wall - busy" is what the trace puts in no '
        "operation (among other things, the runtime's own work between operations).",
        "",
        "## Memory per call, and the step against PyTorch's",
        "",
        "| cell (B, T, I, H) | scratch per device (MiB) | minor page faults per call | "
        "rnnjax (ms) | PyTorch (ms) | rnnjax / PyTorch | loop matmuls / PyTorch |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        label = row_label(row)
        wall = row["wall_ms"]
        torch_ms = wall.get("PyTorch")
        ratios = (
            [
                f"{torch_ms:.1f}",
                f"{wall['rnnjax'] / torch_ms:.2f}",
                f"{row['groups_ms'][GROUPS[0]] / torch_ms:.2f}",
            ]
            if torch_ms
            else ["–", "–", "–"]
        )
        lines.append(
            f"| {label} | {row['scratch_mib_per_device']:.1f} | "
            f"{row['minor_faults_per_call']:,.0f} | {wall['rnnjax']:.1f} | "
            + " | ".join(ratios)
            + " |"
        )
    lines += [
        "",
        "## The ten longest operations of each row (milliseconds per call and per device)",
        "",
        "| cell (B, T, I, H) | operation | group | ms |",
        "|---|---|---|---|",
    ]
    for row in results["rows"]:
        label = row_label(row)
        for name, group, ms in row["top_operations_ms"]:
            lines.append(f"| {label} | `{name}` | {group} | {ms:.1f} |")
    shape = ", ".join(map(str, results["in_place_shape"]))
    lines += [
        "",
        f"## The fused training step at (B, T, I, H) = ({shape}): the gate-wide residual "
        "written over the input projection, or stacked in a buffer of its own (milliseconds)",
        "",
        "| cell | where | in place | stacked | speed-up |",
        "|---|---|---|---|---|",
    ]
    for row in results["in_place"]:
        speed_up = row["stacked_ms"] / row["in_place_ms"]
        lines.append(
            f"| {row['cell']} | {row['placement']} | {row['in_place_ms']:.1f} | "
            f"{row['stacked_ms']:.1f} | {speed_up:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def in_child(*args: str) -> dict:
    """Runs this script with `args` in a new Python process and returns its JSON: each
    measurement starts from a fresh allocator, which the others' memory does not reach."""
    command = [sys.executable, os.path.abspath(__file__), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(argv: list[str]) -> int:
    """`--row CELL B,T,I,H ROUNDS` or `--in-place B,T,I,H ROUNDS`, in a child process."""
    from rnnjax import parallel

    parallel.use_cpu_cores()
    kind, *rest = argv
    shape = tuple(int(n) for n in rest[-2].split(","))
    rounds = int(rest[-1])
    result = profile_row(rest[0], shape, rounds) if kind == "--row" else in_place_ms(shape, rounds)
    print(json.dumps(result))
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--row"], ["--in-place"]):
        return child(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "step_profile"))
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 rounds")
    parser.add_argument(
        "--rounds", type=int, default=None, help="traced calls and timing rounds (default 7)"
    )
    args = parser.parse_args(argv)

    from rnnjax import parallel

    devices = parallel.use_cpu_cores()
    import jax

    rounds = str(args.rounds or (3 if args.quick else 7))
    rows = QUICK_ROWS if args.quick else ROWS
    in_place_shape = QUICK_IN_PLACE_SHAPE if args.quick else IN_PLACE_SHAPE
    started = time.perf_counter()
    results = {
        "meta": {
            **speed.versions(),
            "jax": jax.__version__,
            "cpu_count": os.cpu_count(),
            "jax_cpu_devices": devices,
            "rounds": int(rounds),
            "command": " ".join(["python", *sys.argv]),
        },
        "rows": [
            in_child("--row", cell_name, ",".join(map(str, shape)), rounds)
            for cell_name, shape in rows
        ],
        "in_place_shape": list(in_place_shape),
        "in_place": in_child("--in-place", ",".join(map(str, in_place_shape)), rounds),
    }
    results["meta"]["seconds"] = time.perf_counter() - started
    from rnnjax._files import write_results

    print(write_results(args.out, "step_profile", results, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
