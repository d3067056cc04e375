"""Speed: rnnjax against Flax, Equinox and PyTorch on the CPU, side by side in one process.

    python benchmarks/speed.py --out benchmarks/results/speed   # about 15 minutes on 2 cores
    python benchmarks/speed.py --quick --out results/speed-quick
    python benchmarks/speed.py --report-only --out benchmarks/results/speed

Five measurements, written to `speed.json` and `speed.md` in --out:

1. **Training step and inference** per shape `(B, T, I, H)` and cell, float32:
   one training step is `value_and_grad` of the mean squared error between the
   last hidden state and a fixed target (no optimizer update, for every library
   alike); inference is the forward pass over the whole sequence returning every
   step's output. Each library is compiled and warmed up first, then all of them
   are timed in interleaved rounds and the median is reported. Peers run only if
   installed: Flax linen (`nn.RNN` around each cell, and `OptimizedLSTMCell`),
   Equinox (its cells in a `lax.scan`; it has no vanilla RNN cell) and PyTorch
   (`nn.RNN/LSTM/GRU`, all cores, denormals flushed to zero as XLA does: without it
   PyTorch's training steps slow down on gradients that underflow).
2. **Achieved GFLOP/s** of each training step (`6 B T (I + H) G` for `G` gate
   units: forward and two backward matmuls) against a large matmul measured here.
3. **Compile time** of rnnjax's training step at T = 100 and T = 10,000.
4. **Long sequences**: the training step of every cell of `rnnjax.zoo` (but the vanilla
   RNN) at T = 1,000, 10,000 and 100,000 and equal hidden size, each cell's default path
   on one device, interleaved, with the GRU's and the LSTM's time over each cell's.
5. **Memory and time against T** for an LSTM (B = 16, H = 64, I = 1) trained
   with and without gradient checkpointing (`checkpoint_every ~ sqrt(T)`), each
   configuration in its own process, peak resident memory read from the OS.

**rnnjax default path** is `rnnjax.unroll(..., fused=None)`: each cell's
whole-sequence implementation, `Cell.sequence` (the fused kernel for the LSTM and the
RNN, a tuned scan for the GRU). The reference path, **rnnjax fused=False** (the
cells' equations scanned step by step), is timed beside it.

**rnnjax over the cores** is the default path (and **rnnjax fused=False over the
cores** the reference path) with the batch split over one JAX CPU device per core
(`rnnjax.parallel.use_cpu_cores()`, called before anything else, and a mesh set
with `jax.set_mesh`): each core runs the whole recurrence on its share of the
sequences (`rnnjax.parallel`). Its arguments are placed on the devices once, before
any call, as rnnjax's own training keeps them. **..., checkpointed** are those two
with gradient checkpointing as well, over chunks of `sqrt_chunk(T)` = round(sqrt(T))
steps (`rnnjax.unroll(..., checkpoint_every=...)`). Every other implementation runs
on JAX's first device as its users would by default.
"""

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

FULL_SHAPES = [
    ("lstm", (32, 1000, 1, 128)),
    ("lstm", (64, 200, 64, 256)),
    ("gru", (32, 1000, 1, 128)),
    ("gru", (64, 200, 64, 256)),
    ("rnn", (32, 1000, 1, 128)),
    ("rnn", (64, 200, 64, 256)),
    ("lstm", (16, 10000, 1, 64)),
    ("indrnn", (32, 1000, 1, 128)),
    ("exprnn", (32, 1000, 1, 128)),
    ("lru", (32, 1000, 1, 128)),
    ("min_gru", (32, 1000, 1, 128)),
    ("min_lstm", (32, 1000, 1, 128)),
]
QUICK_SHAPES = [
    ("lstm", (32, 200, 1, 128)),
    ("gru", (32, 200, 1, 128)),
    ("rnn", (32, 200, 1, 128)),
    ("min_gru", (32, 200, 1, 128)),
]
# The long-sequence table: training-step time of every cell at equal hidden size, one
# device, each cell's default path, interleaved. `(B, T, I, H)` and timing rounds.
LONG_CELLS = ("gru", "lstm", "indrnn", "exprnn", "lru", "min_gru", "min_lstm")
FULL_LONG_SHAPES = [((32, 1000, 1, 128), 5), ((16, 10000, 1, 64), 5), ((16, 100000, 1, 64), 3)]
QUICK_LONG_SHAPES = [((32, 1000, 1, 128), 3), ((16, 10000, 1, 64), 3)]
FULL_MEMORY_LENGTHS = (1000, 10000, 100000)
QUICK_MEMORY_LENGTHS = (1000, 10000)
# Gate blocks of the cells whose steps multiply the state by a matrix (`6 B T (I + H) G H`
# FLOPs per training step); the later cells' recurrences are elementwise (or, for
# expRNN, one `H x H` product), so the report gives no GFLOP/s for them.
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
DEFAULT = "rnnjax default path"
SPLIT = "rnnjax over the cores"
SPLIT_CHUNKED = "rnnjax over the cores, checkpointed"
# The path a cell's default does not take, timed beside it: the fused kernel for the
# GRU (opt-in), the reference path for the LSTM and RNN (whose default is their kernel).
FUSED = "rnnjax fused=True"
SPLIT_FUSED = "rnnjax fused=True over the cores"
SPLIT_FUSED_CHUNKED = "rnnjax fused=True over the cores, checkpointed"
REFERENCE = "rnnjax fused=False"
SPLIT_REFERENCE = "rnnjax fused=False over the cores"
SPLIT_REFERENCE_CHUNKED = "rnnjax fused=False over the cores, checkpointed"
# What `meta["default_path"]` records: reports written before the LSTM's default became
# its fused kernel have no such key, and their default path was `fused=False` throughout.
DEFAULT_PATH = "fused=None"
# Each cell's other path, `{report column: (its fused=True name, its fused=False name)}`:
# `implementations` times one of each pair, and the report gives the pair one column.
OTHER_PATH = {
    "rnnjax other path": (FUSED, REFERENCE),
    "rnnjax other path over the cores": (SPLIT_FUSED, SPLIT_REFERENCE),
    "rnnjax other path over the cores, checkpointed": (
        SPLIT_FUSED_CHUNKED,
        SPLIT_REFERENCE_CHUNKED,
    ),
}


def sqrt_chunk(length: int) -> int:
    """The `checkpoint_every` this benchmark gives a sequence of `length` steps: the
    classic `sqrt(T)`, which balances the saved chunk states against one chunk's
    activations (T = 1000: 32; T = 200: 14; T = 10,000: 100)."""
    return max(1, round(math.sqrt(length)))


# -- the implementations: each returns (train_step, forward), both taking no arguments --


def rnnjax_programs(
    cell_name, shape, fused=True, split=False, unroll=None, checkpoint_every=None
) -> dict:
    """rnnjax's jitted training step (`"train"`) and forward (`"forward"`) at `shape`, their
    arguments (`"args"`: with a mesh, the parameters replicated on it and the batch split
    over it) and the mesh they run under (`"mesh"`, None for one device)."""
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import parallel

    _, _, inputs, hidden = shape
    cell = getattr(rnnjax, cell_name)(hidden)
    params = cell.init(jax.random.key(0), inputs, jnp.float32)
    xs, target = _jax_data(shape)
    options = {"fused": fused, "unroll": unroll, "checkpoint_every": checkpoint_every}

    def loss(params, xs):
        hs, _ = rnnjax.unroll(cell, params, xs, **options)
        return jnp.mean((hs[:, -1] - target) ** 2)

    mesh = parallel.device_mesh(jax.local_device_count()) if split else None
    if mesh is not None:
        # Placed on the mesh once, as rnnjax's own training keeps its data and state
        # (`rnnjax.runs`), so that no call pays for scattering them over the devices.
        params = parallel.replicate(params, mesh)
        xs = jax.device_put(xs, parallel.batch_sharded(mesh))
    return {
        "train": jax.jit(jax.value_and_grad(loss)),
        "forward": jax.jit(lambda params, xs: rnnjax.unroll(cell, params, xs, **options)[0]),
        "args": (params, xs),
        "mesh": mesh,
    }


def rnnjax_impl(cell_name, shape, fused=True, split=False, unroll=None, checkpoint_every=None):
    import jax

    from rnnjax import parallel

    programs = rnnjax_programs(cell_name, shape, fused, split, unroll, checkpoint_every)
    grad, forward = (parallel.on_mesh(programs[k], programs["mesh"]) for k in ("train", "forward"))
    args = programs["args"]
    return (
        lambda: jax.block_until_ready(grad(*args)),
        lambda: jax.block_until_ready(forward(*args)),
    )


def flax_impl(cell_name, shape, optimized=False):
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    hidden = shape[-1]
    cells = {"rnn": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
    cell_type = nn.OptimizedLSTMCell if optimized else cells[cell_name]
    model = nn.RNN(cell_type(features=hidden))
    xs, target = _jax_data(shape)
    params = model.init(jax.random.key(0), xs)

    def loss(params, xs):
        return jnp.mean((model.apply(params, xs)[:, -1] - target) ** 2)

    grad = jax.jit(jax.value_and_grad(loss))
    forward = jax.jit(model.apply)
    return (
        lambda: jax.block_until_ready(grad(params, xs)),
        lambda: jax.block_until_ready(forward(params, xs)),
    )


def equinox_impl(cell_name, shape):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    batch, _, inputs, hidden = shape
    cell_type = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell_name]
    cell = cell_type(inputs, hidden, key=jax.random.key(0))
    xs, target = _jax_data(shape)

    def run(cell, xs):
        zeros = jnp.zeros((batch, hidden))
        state = (zeros, zeros) if cell_name == "lstm" else zeros
        step = jax.vmap(cell)

        def body(state, x):
            state = step(x, state)
            return state, state[0] if cell_name == "lstm" else state

        return jax.lax.scan(body, state, jnp.swapaxes(xs, 0, 1))[1]

    def loss(cell, xs):
        return jnp.mean((run(cell, xs)[-1] - target) ** 2)

    grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    forward = eqx.filter_jit(run)
    return (
        lambda: jax.block_until_ready(grad(cell, xs)),
        lambda: jax.block_until_ready(forward(cell, xs)),
    )


def torch_impl(cell_name, shape):
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(os.cpu_count() or 1)
    _, _, inputs, hidden = shape
    module_type = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell_name]
    torch.manual_seed(0)
    module = module_type(inputs, hidden, batch_first=True)
    xs, target = (torch.from_numpy(np.asarray(a)) for a in _numpy_data(shape))

    def train_step():
        module.zero_grad()
        outputs, _ = module(xs)
        loss = ((outputs[:, -1] - target) ** 2).mean()
        loss.backward()
        return loss.item()

    def forward():
        with torch.no_grad():
            return module(xs)[0]

    return train_step, forward


def _numpy_data(shape):
    batch, length, inputs, hidden = shape
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((batch, length, inputs)).astype(np.float32)
    target = (0.5 * rng.standard_normal((batch, hidden))).astype(np.float32)
    return xs, target


def _jax_data(shape):
    import jax.numpy as jnp

    return tuple(jnp.asarray(a) for a in _numpy_data(shape))


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def implementations(cell_name, shape):
    """`{name: constructor}` of every implementation available for this cell."""
    import jax

    import rnnjax

    # The default (`fused=None`: the cell's `sequence`) and the reference path beside it.
    other_fused = getattr(rnnjax, cell_name)(shape[-1]).sequence is None
    names = [
        fused_name if other_fused else reference for fused_name, reference in OTHER_PATH.values()
    ]
    impls = {
        DEFAULT: lambda: rnnjax_impl(cell_name, shape, fused=None),
        names[0]: lambda: rnnjax_impl(cell_name, shape, fused=other_fused),
    }
    if jax.local_device_count() > 1 and shape[0] % jax.local_device_count() == 0:
        impls[SPLIT] = lambda: rnnjax_impl(cell_name, shape, fused=None, split=True)
        impls[names[1]] = lambda: rnnjax_impl(cell_name, shape, fused=other_fused, split=True)
        chunk = sqrt_chunk(shape[1])
        impls[SPLIT_CHUNKED] = lambda: rnnjax_impl(
            cell_name, shape, fused=None, split=True, checkpoint_every=chunk
        )
        impls[names[2]] = lambda: rnnjax_impl(
            cell_name, shape, fused=other_fused, split=True, checkpoint_every=chunk
        )
    if cell_name not in GATES:  # the later cells: no peer has them
        return impls
    if _installed("flax"):
        impls["Flax linen"] = lambda: flax_impl(cell_name, shape)
        if cell_name == "lstm":
            impls["Flax OptimizedLSTMCell"] = lambda: flax_impl(cell_name, shape, optimized=True)
    if _installed("equinox") and cell_name != "rnn":
        impls["Equinox"] = lambda: equinox_impl(cell_name, shape)
    if _installed("torch"):
        impls["PyTorch"] = lambda: torch_impl(cell_name, shape)
    return impls


# -- timing -------------------------------------------------------------------------------


def time_once(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved_median_ms(calls: dict, rounds: int) -> dict:
    """Median milliseconds of every call in `calls`, `{key: (fn, ...)}` of no-argument
    functions, over `rounds` rounds that each time every fn once, in turn, so that a
    slow moment of a shared machine falls on all of them alike. Returns
    `{key: [ms, ...]}`, one median per fn, in the order of that key's fns.

    Every timed call follows an untimed call of the same fn, so that no fn pays for
    the one before it: PyTorch's OpenMP threads keep spinning for a while after its
    calls return, and a fn timed right after PyTorch ran several milliseconds slower
    than the same fn timed later in the round (measured on 2 cores)."""
    times = {key: [[] for _ in fns] for key, fns in calls.items()}
    for _ in range(rounds):
        for key, fns in calls.items():
            for fn, samples in zip(fns, times[key]):
                fn()
                samples.append(time_once(fn))
    return {
        key: [1000 * statistics.median(samples) for samples in per_fn]
        for key, per_fn in times.items()
    }


def measure_shape(cell_name, shape, rounds):
    """Compile and warm every implementation, then time them in interleaved rounds."""
    built, first_call = {}, {}
    for name, make in implementations(cell_name, shape).items():
        train_step, forward = make()
        first_call[name] = time_once(train_step)  # trace + compile + one step
        time_once(forward)
        time_once(train_step)
        time_once(forward)
        built[name] = (train_step, forward)
    medians = interleaved_median_ms(built, rounds)
    batch, length, inputs, hidden = shape
    flops = 6 * batch * length * (inputs + hidden) * GATES.get(cell_name, 0) * hidden
    return {
        name: {
            "train_ms": train_ms,
            "forward_ms": forward_ms,
            "first_call_s": first_call[name],
            "train_gflops": flops / (train_ms / 1000) / 1e9 if flops else None,
        }
        for name, (train_ms, forward_ms) in medians.items()
    }


def long_sequence_table(shapes) -> list[dict]:
    """Training-step milliseconds of every cell in `LONG_CELLS` at each shape: each
    cell's default path on one device, compiled and warmed up, then timed in
    interleaved rounds (median)."""
    rows = []
    for shape, rounds in shapes:
        print(f"long sequences {shape} ...", flush=True)
        calls = {}
        for cell_name in LONG_CELLS:
            train_step, _ = rnnjax_impl(cell_name, shape, fused=None)
            train_step()
            calls[cell_name] = (train_step,)
        medians = interleaved_median_ms(calls, rounds)
        train_ms = {name: ms[0] for name, ms in medians.items()}
        print("  " + ", ".join(f"{n} {ms:.1f} ms" for n, ms in train_ms.items()), flush=True)
        rows.append({"shape": list(shape), "rounds": rounds, "train_ms": train_ms})
    return rows


def matmul_peak_gflops(size=2048, repeats=7) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    seconds = statistics.median(
        time_once(lambda: jax.block_until_ready(matmul(a))) for _ in range(repeats)
    )
    return 2 * size**3 / seconds / 1e9


def compile_seconds(length, repeats=3, shape=(32, None, 1, 128)) -> float:
    """Median time to lower and compile rnnjax's LSTM training step at this length."""
    import jax
    import jax.numpy as jnp

    import rnnjax

    batch, _, inputs, hidden = shape
    cell = rnnjax.lstm(hidden)
    params = cell.init(jax.random.key(0), inputs, jnp.float32)
    xs = jnp.zeros((batch, length, inputs), jnp.float32)

    def fresh_step():
        """A new function each time, so nothing is served from JAX's caches."""

        def loss(params, xs):
            return jnp.mean(rnnjax.unroll(cell, params, xs, fused=True)[0][:, -1] ** 2)

        return jax.jit(jax.value_and_grad(loss))

    return statistics.median(
        time_once(lambda: fresh_step().lower(params, xs).compile()) for _ in range(repeats)
    )


# -- memory against length, one process per configuration -----------------------------


def memory_worker(length: int, chunk: int, repeats: int) -> dict:
    """In this process: one LSTM training step at this length; peak RSS and median time."""
    import jax
    import jax.numpy as jnp

    import rnnjax

    batch, inputs, hidden = 16, 1, 64
    cell = rnnjax.lstm(hidden)
    params = cell.init(jax.random.key(0), inputs, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (batch, length, inputs), jnp.float32)

    def loss(params, xs):
        hs, _ = rnnjax.unroll(cell, params, xs, checkpoint_every=chunk or None, fused=True)
        return jnp.mean(hs[:, -1] ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    jax.block_until_ready(step(params, xs))
    seconds = statistics.median(
        time_once(lambda: jax.block_until_ready(step(params, xs))) for _ in range(repeats)
    )
    return {
        "length": length,
        "checkpoint_every": chunk or None,
        "train_s": seconds,
        "peak_rss_mb": peak_resident_mb(),
    }


def peak_resident_mb() -> float:
    """This process's peak resident memory since it started its program (Linux VmHWM).

    Not `getrusage`'s `ru_maxrss`, which a child process inherits from the parent
    it was forked from, so it would report the benchmark's own footprint.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def json_from_child(script: str, *args: str) -> dict:
    """`python script *args` run in a process of its own: the JSON of its last output line."""
    done = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_table(lengths) -> list[dict]:
    rows = []
    for length in lengths:
        for chunk in (0, sqrt_chunk(length)):
            row = json_from_child(__file__, "--memory-worker", str(length), str(chunk))
            print(
                f"  memory T={length:>6} checkpoint_every={row['checkpoint_every']}: "
                f"{row['peak_rss_mb']:.0f} MB, {row['train_s']:.2f} s per step",
                flush=True,
            )
            rows.append(row)
    return rows


# -- report ----------------------------------------------------------------------------------


def versions() -> dict:
    import importlib.metadata

    found = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    for package in ("jax", "jaxlib", "flax", "equinox", "torch"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def fused_by_default() -> list[str]:
    """The cells whose default path (`fused=None`) is a fused kernel."""
    return ["lstm", "rnn"]


CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _cells_in_words(cells: list[str]) -> str:
    """`["lstm", "rnn"]` -> "the LSTM and RNN"."""
    names = [CELL_NAMES[c] for c in cells]
    if not names:
        return "no cell"
    return "the " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def default_paths(meta: dict) -> tuple[str, str]:
    """In words, the cells whose default was a fused kernel and the others in the run of
    `meta`."""
    fused = meta.get("fused_by_default", ["lstm", "rnn"])
    order = ("lstm", "gru", "rnn")  # as the reports have always named them
    return (
        _cells_in_words([c for c in order if c in fused]),
        _cells_in_words([c for c in order if c not in fused]),
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}"


def per_peer_ratios(results: dict) -> list[str]:
    """Markdown lines: each rnnjax path's time over each peer's, training and inference."""
    ours = [DEFAULT, SPLIT]
    lines = []
    for kind, key in (("Training step", "train_ms"), ("Inference", "forward_ms")):
        peers = []
        for row in results["shapes"]:
            peers += [n for n in row["results"] if not n.startswith("rnnjax") and n not in peers]
        present = [n for n in ours if any(n in row["results"] for row in results["shapes"])]
        heads = [f"{short} / {peer}" for short in present for peer in peers]
        lines += [
            "",
            f"## {kind}: rnnjax / each peer (below 1: rnnjax is faster)",
            "",
            "| cell (B, T, I, H) | " + " | ".join(heads) + " |",
            "|---" * (len(heads) + 1) + "|",
        ]
        for row in results["shapes"]:
            res = row["results"]
            cells = [
                ratio(res[name][key], res[peer][key]) if name in res and peer in res else "–"
                for name in present
                for peer in peers
            ]
            lines.append(f"| {row['cell']} {tuple(row['shape'])} | " + " | ".join(cells) + " |")
    return lines


def best_jax_peer(res: dict, key: str) -> float | None:
    """The faster of Flax (either cell) and Equinox on one row, or None if neither ran."""
    times = [res[n][key] for n in res if n.startswith(("Flax", "Equinox"))]
    return min(times) if times else None


def fastest_path(results: dict) -> list[str]:
    """Markdown lines: on each row, the fastest of rnnjax's paths and its ratios."""
    lines = []
    for kind, key in (("Training step", "train_ms"), ("Inference", "forward_ms")):
        lines += [
            "",
            f"## {kind}: the fastest rnnjax path on each row",
            "",
            "| cell (B, T, I, H) | fastest rnnjax path | ms | / PyTorch | / best JAX peer |",
            "|---|---|---|---|---|",
        ]
        for row in results["shapes"]:
            res = row["results"]
            path = min((n for n in res if n.startswith("rnnjax")), key=lambda n: res[n][key])
            ours = res[path][key]
            best = best_jax_peer(res, key)
            torch = ratio(ours, res["PyTorch"][key]) if "PyTorch" in res else "–"
            best_jax = ratio(ours, best) if best else "–"
            lines.append(
                f"| {row['cell']} {tuple(row['shape'])} | {path} | {ours:.1f} | {torch} | "
                f"{best_jax} |"
            )
    return lines


def columns(results: dict) -> list[tuple[str, tuple[str, ...]]]:
    """The report's timing columns as `(heading, names)`: a row's entry in a column is its
    result under the first of `names` it has. Each implementation has a column of its
    own, except in reports that time each cell's other path beside its default (those
    with a `rnnjax fused=False` result): there the LSTM's `fused=False` and the GRU's and
    RNN's `fused=True` share the `OTHER_PATH` columns."""
    names = []
    for row in results["shapes"]:
        names += [n for n in row["results"] if n not in names]
    if REFERENCE not in names:
        return [(name, (name,)) for name in names]
    found = {}
    for name in names:
        heading = next((h for h, pair in OTHER_PATH.items() if name in pair), name)
        found.setdefault(heading, OTHER_PATH.get(heading, (name,)))
    return list(found.items())


def entry(res: dict, names: tuple[str, ...]) -> dict | None:
    """A row's result in the column of `names` (see `columns`), or None."""
    return next((res[n] for n in names if n in res), None)


LONG_NAMES = {
    "gru": "GRU",
    "lstm": "LSTM",
    "indrnn": "IndRNN",
    "exprnn": "expRNN",
    "lru": "LRU",
    "min_gru": "minGRU",
    "min_lstm": "minLSTM",
}


def long_sequence_lines(rows: list[dict]) -> list[str]:
    """Markdown lines of the long-sequence table: milliseconds per training step, then
    the GRU's and the LSTM's time over each cell's (above 1: that cell is faster)."""
    if not rows:
        return []
    cells = [c for c in LONG_CELLS if c in rows[0]["train_ms"]]

    def table(value) -> list[str]:
        """One row per shape, one column per cell: `value(train_ms, cell)`."""
        head = "| (B, T, I, H) | " + " | ".join(LONG_NAMES[c] for c in cells) + " |"
        body = [
            f"| {tuple(row['shape'])} | "
            + " | ".join(value(row["train_ms"], c) for c in cells)
            + " |"
            for row in rows
        ]
        return [head, "|---" * (len(cells) + 1) + "|", *body]

    lines = [
        "",
        "## Long sequences: training step of every cell at equal hidden size, milliseconds",
        "",
        "Each cell's default path on one device (`value_and_grad` of the same loss as "
        "above), interleaved rounds, median.",
        "",
        *table(lambda ms, c: f"{ms[c]:.1f}"),
    ]
    for reference in ("gru", "lstm"):
        lines += [
            "",
            f"{LONG_NAMES[reference]}'s time over each cell's (above 1: that cell trains faster):",
            "",
            *table(lambda ms, c, r=reference: f"{ms[r] / ms[c]:.2f}"),
        ]
    return lines


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Speed: rnnjax against its peers on the CPU",
        "",
        f"JAX {meta['jax']}, Flax {meta['flax']}, Equinox {meta['equinox']}, "
        f"PyTorch {meta['torch']}; {meta['cpu_count']} CPUs ({meta['jax_cpu_devices']} JAX CPU "
        f"devices); float32; median of "
        f"{meta['rounds']} interleaved rounds after warm-up. A large float32 matmul runs "
        f"at {meta['matmul_peak_gflops']:.0f} GFLOP/s here."
        + (
            f" rnnjax's default path is `{meta['default_path']}`: each cell's `Cell.sequence` "
            f"(the fused kernel for {default_paths(meta)[0]}, a tuned scan for "
            f"{default_paths(meta)[1]}); the reference path (`fused=False`) is timed beside it."
            if meta.get("default_path")
            else ""
        ),
        "",
        "## Training step (value_and_grad), milliseconds",
        "",
    ]
    for kind, key in (("train", "train_ms"), ("forward", "forward_ms")):
        if kind == "forward":
            lines += ["", "## Inference (forward over the whole sequence), milliseconds", ""]
        cols = columns(results)
        names = [heading for heading, _ in cols]
        ours_names = [DEFAULT] + ([SPLIT] if SPLIT in names else [])
        short = {DEFAULT: "rnnjax default", SPLIT: SPLIT}
        ratio_heads = [
            f"{short[n]} / {peer}" for n in ours_names for peer in ("PyTorch", "best JAX peer")
        ]
        lines.append("| cell (B, T, I, H) | " + " | ".join(names + ratio_heads) + " |")
        lines.append("|---" * (len(names) + len(ratio_heads) + 1) + "|")
        for row in results["shapes"]:
            res = row["results"]
            cells = [
                f"{entry(res, pair)[key]:.1f}" if entry(res, pair) else "–" for _, pair in cols
            ]
            best = best_jax_peer(res, key)
            for name in ours_names:
                ours = res[name][key] if name in res else None
                torch = res["PyTorch"][key] if "PyTorch" in res else None
                cells.append(ratio(ours, torch) if ours and torch else "–")
                cells.append(ratio(ours, best) if ours and best else "–")
            lines.append(f"| {row['cell']} {tuple(row['shape'])} | " + " | ".join(cells) + " |")
        note = '"best JAX peer": the faster of Flax (either cell) and Equinox on that row.'
        if any(n.endswith(", checkpointed") for n in names):
            note += ' "checkpointed": `checkpoint_every` = round(sqrt(T)) (T = 1000: 32).'
        if "rnnjax other path" in names:
            note += ' "other path": the reference path, `fused=False`.'

        lines += ["", note]
    lines += per_peer_ratios(results)
    lines += fastest_path(results)
    lines += [
        "",
        "## Achieved GFLOP/s of the training step",
        "",
        "| cell (B, T, I, H) | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for row in results["shapes"]:
        res = row["results"]
        cells = [
            f"{entry(res, pair)['train_gflops']:.1f}"
            if entry(res, pair) and entry(res, pair)["train_gflops"] is not None
            else "–"
            for _, pair in cols
        ]
        lines.append(f"| {row['cell']} {tuple(row['shape'])} | " + " | ".join(cells) + " |")
    lines += long_sequence_lines(results.get("long_sequences", []))
    compile_times = results["compile_seconds"]
    lines += [
        "",
        "## Compile time of rnnjax's LSTM training step (B = 32, H = 128, fused=True)",
        "",
        "| T | seconds |",
        "|---|---|",
    ]
    lines += [f"| {t} | {s:.2f} |" for t, s in compile_times.items()]
    lengths = list(compile_times)
    lines += [
        "",
        f"T = {lengths[-1]} / T = {lengths[0]}: "
        f"{compile_times[lengths[-1]] / compile_times[lengths[0]]:.2f}x.",
        "",
    ]
    lines += [
        "## Memory and time against T: LSTM, B = 16, H = 64, fused=True, one training step",
        "",
        "| T | checkpoint_every | peak resident memory (MB) | seconds per step |",
        "|---|---|---|---|",
    ]
    for row in results["memory"]:
        lines.append(
            f"| {row['length']} | {row['checkpoint_every'] or 'off'} | "
            f"{row['peak_rss_mb']:.0f} | {row['train_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-worker":
        print(json.dumps(memory_worker(int(sys.argv[2]), int(sys.argv[3]), repeats=2)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "speed"))
    parser.add_argument("--quick", action="store_true", help="small shapes, T up to 10,000")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite speed.md from the speed.json already in --out, measuring nothing",
    )
    args = parser.parse_args()
    if args.report_only:
        from rnnjax._files import write_text

        with open(os.path.join(args.out, "speed.json")) as stored:
            text = markdown(json.load(stored))
        write_text(os.path.join(args.out, "speed.md"), text)
        print(f"wrote {args.out}/speed.md")
        return 0
    import jax

    from rnnjax import parallel

    parallel.use_cpu_cores()  # before JAX's first computation
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    rounds = args.rounds or (3 if args.quick else 5)

    meta = {**versions(), "rounds": rounds, "quick": args.quick}
    meta["default_path"] = DEFAULT_PATH
    meta["fused_by_default"] = fused_by_default()
    meta["jax_cpu_devices"] = jax.local_device_count("cpu")
    results = {"meta": meta, "shapes": []}
    results["meta"]["matmul_peak_gflops"] = matmul_peak_gflops()
    for cell_name, shape in shapes:
        print(f"{cell_name} {shape} ...", flush=True)
        measured = measure_shape(cell_name, shape, rounds)
        for name, row in measured.items():
            print(
                f"  {name:<24} train {row['train_ms']:8.1f} ms   "
                f"forward {row['forward_ms']:8.1f} ms",
                flush=True,
            )
        results["shapes"].append({"cell": cell_name, "shape": list(shape), "results": measured})
    results["long_sequences"] = long_sequence_table(
        QUICK_LONG_SHAPES if args.quick else FULL_LONG_SHAPES
    )
    results["compile_seconds"] = {length: compile_seconds(length) for length in (100, 10000)}
    print(f"compile seconds: {results['compile_seconds']}", flush=True)
    results["memory"] = memory_table(QUICK_MEMORY_LENGTHS if args.quick else FULL_MEMORY_LENGTHS)

    from rnnjax._files import write_results

    write_results(args.out, "speed", results, markdown)
    print(f"wrote {args.out}/speed.json and speed.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
