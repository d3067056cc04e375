"""Where an LSTM step's time goes on the CPU: the measurements behind the README's speed notes.

    python benchmarks/cpu_profile.py --out results/cpu_profile     # about 8 minutes

Fifteen measurements, float32, median of 7 after warm-up, written to `cpu_profile.json`
and `cpu_profile.md` in --out:

1. **The loop's matmul alone**: a `lax.scan` whose body is only `h @ w_hh` plus a
   `tanh`, at (B, H) = (32, 128) and T = 1000, run once on all cores and once in a
   child process pinned to one core (`os.sched_setaffinity`): if the times match,
   XLA runs the per-step matmul on one core.
2. **Gate nonlinearities, split or whole**: an LSTM step's elementwise part over a
   precomputed input `(T, B, 4H)`, written as four narrow blocks (split, then
   sigmoid/tanh each) or as sigmoid and tanh over all four blocks, sliced afterwards.
3. **The whole LSTM forward** of rnnjax (default path) and of PyTorch at the same
   shape, per step, for comparison with (1).
4. **PyTorch with and without flushing denormals** (`torch.set_flush_denormal`), one
   LSTM training step at (32, 1000, 1, 128), when torch is installed.
5. **One input feature**: the LSTM and GRU forward of rnnjax's default path at I = 1
   and I = 2, and at I = 1 with the readable equations (`cell.step.reference`),
   which XLA compiles to slow code when `x @ w_ih` has one input feature.
6. **XLA's CPU options**: the LSTM training step and forward at (32, 1000, 1, 128)
   under each of a few `XLA_FLAGS` that choose the matmul library (each in its own
   process, as flags are read when JAX starts): does any make the loop faster?
7. **Independent chains**: the batch split into two halves that run as two separate
   recurrences in one loop body (two small matmuls with no dependency between
   them, which XLA's CPU runtime may run on two cores at once), LSTM training step
   and forward at (32, 1000, 1, 128), interleaved with the one-chain loop.
8. **Page faults**: the training step of every cell (rnnjax's two paths, PyTorch)
   with glibc's default allocator, after `rnnjax.host_memory.retain_freed_memory()`,
   and started with huge pages (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), each in
   its own process: milliseconds, minor page faults per call, and the size of XLA's
   per-call scratch block.
9. **The batch over two CPU devices**, in a child process with one JAX CPU device per
   core (`rnnjax.parallel.use_cpu_cores(2)`): the LSTM training step and forward at
   (32, 1000, 1, 128) on one device, on two devices with the batch placed split and
   the rest left to XLA's automatic partitioning, and on two devices under
   `jax.set_mesh`, where `rnnjax.unroll` splits the recurrence itself
   (`jax.shard_map`); with the number of collective operations inside loop bodies.
10. **The backward loop's matmul**, `d_gates @ w_hh^T` in a reverse scan at the same
   shape, with `w_hh` contracted over its second axis as autodiff writes it (the
   matmul library then transposes `w_hh` at every step) or with a transposed copy
   made once before the loop (what the fused kernels give their backward pass).
11. **A step in the allocator near 32 MiB**: the RNN's training step (default
   path) over two CPU devices at (B, I, H) = (32, 1, 128) and T from 980 to 1020,
   where each device's scratch block grows towards 32 MiB, with glibc's defaults
   and with huge pages, each configuration in its own process: milliseconds, minor
   page faults per call and the scratch block per device. glibc keeps a freed
   block for reuse only up to its largest dynamic `mmap` threshold, 32 MiB; a
   larger one goes back to the kernel and is faulted in again on the next call.
12. **The recurrent product's derivative**: the default path's training step of
   each cell over two CPU devices at (32, 1000, 1, 128) and (64, 200, 64, 256),
   with the cells' recurrent matmul as they run it (`rnnjax.cells.recurrent_product`,
   whose backward pass multiplies by a transposed copy of `w_hh` made once) and as
   plain `h @ w_hh` (autodiff's backward then contracts `w_hh` over its second axis
   at every step; traced with `rnnjax.cells.recurrent_product` swapped for
   `jnp.matmul`), interleaved, in a child process with glibc's defaults and in one
   with huge pages (which takes the allocator's page faults out of the comparison).
13. **Where the fused kernels project the inputs**: the `fused=True` training step of
   the LSTM and the GRU at I = 1, 8, 32 and 64, on one CPU device and over two, with
   `xs @ w_ih` computed as one matmul before the loop or step by step inside it
   (traced with `rnnjax.fused.IN_LOOP_INPUT_MAX` set to choose), interleaved.
14. **The fused LSTM's g block**: the `fused=True` LSTM training step at the two
   shapes of (12), on one CPU device and over two, with the kernel's forward step
   computing `tanh` of the g block from the sigmoid it takes of all four blocks
   (`2 sigmoid(2x) - 1`, as `rnnjax/fused.py` does) or from a `tanh` pass over all
   four blocks (as it did before; traced with `rnnjax.fused.LSTM_KERNEL` swapped),
   interleaved.
15. **The matmul floor over two devices**: for the LSTM at the speed benchmark's two
   shapes, the matrix products a training step cannot avoid, timed alone on each
   device's half of the batch (the forward and backward loops, one `(B/2, H) x (H, 4H)`
   and one `(B/2, 4H) x (4H, H)` product per step with a tanh between, and the
   input projection and weight gradients as one matmul each), against rnnjax's fused
   training step over two devices and PyTorch's (when installed), interleaved.

"Default path" here is the reference path, `rnnjax.unroll(..., fused=False)`: autodiff
through `cell.step`, which was every cell's default when this profile was written and
is still the GRU's and RNN's. The LSTM's default is now its fused kernel
(`rnnjax.cells.preferred_fused`), which the profile times as `fused=True`.
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

B, T, H = 32, 1000, 128
MODES = ("glibc defaults", "huge pages")  # the allocator settings of (11) and (12)


def faults_and_ms(fn, repeats=7, warmups=3) -> dict:
    """Median milliseconds and median minor page faults of `fn()` after warm-up."""
    for _ in range(warmups):
        fn()
    times, faults = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"ms": statistics.median(times), "faults": statistics.median(faults)}


def in_child(*args: str, env: dict | None = None) -> Any:
    """This script run as `python cpu_profile.py *args` in its own process (in `env`,
    default this one's): the JSON its last line of output holds."""
    child = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def huge_pages_env(mode: str) -> dict | None:
    """The environment of a child run in `mode`: huge pages, or this process's."""
    from rnnjax import host_memory

    return host_memory.environment_with_huge_pages() if mode == "huge pages" else None


def median_ms(fn, repeats=7) -> float:
    return faults_and_ms(fn, repeats, warmups=2)["ms"]


def loop_matmul_ms() -> float:
    import jax
    import jax.numpy as jnp

    w = 0.05 * jax.random.normal(jax.random.key(0), (H, 4 * H))
    xw = jax.random.normal(jax.random.key(1), (T, B, 4 * H))

    @jax.jit
    def run(w, xw):
        def body(h, x):
            return jnp.tanh((x + h @ w)[:, :H]), None

        return jax.lax.scan(body, jnp.zeros((B, H)), xw)[0]

    return median_ms(lambda: jax.block_until_ready(run(w, xw)))


def backward_matmul_ms() -> dict:
    """The backward loop's matmul `d_gates @ w_hh^T`, two ways: contracting `w_hh (H, 4H)`
    over its second axis, as autodiff writes it (the matmul library transposes `w_hh`
    at every step), or multiplying by a transposed copy `(4H, H)` made once."""
    import jax
    import jax.numpy as jnp

    w = 0.05 * jax.random.normal(jax.random.key(0), (H, 4 * H))
    factors = jax.random.uniform(jax.random.key(1), (T, B, 4 * H))

    def scan_of(product):
        @jax.jit
        def run(w, factors):
            def body(d_h, factor):
                return jnp.tanh(product(jnp.tile(d_h, 4) * factor, w)), None

            return jax.lax.scan(body, jnp.ones((B, H)), factors, reverse=True)[0]

        return run

    every_step = scan_of(lambda d, w: jax.lax.dot_general(d, w, (((1,), (1,)), ((), ()))))
    once = scan_of(lambda d, w_t: d @ w_t)
    w_t = jnp.array(w.T)  # materialised before the call: the loop sees a (4H, H) array
    return {
        "w_hh transposed at every step": median_ms(
            lambda: jax.block_until_ready(every_step(w, factors))
        ),
        "a transposed copy made once": median_ms(lambda: jax.block_until_ready(once(w_t, factors))),
    }


def gate_nonlinearities_ms() -> dict:
    import jax
    import jax.numpy as jnp

    xw = jax.random.normal(jax.random.key(1), (T, B, 4 * H))

    def split(x):
        i, f, g, o = jnp.split(x, 4, axis=-1)
        return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)

    def whole(x):
        sig, tanh = jax.nn.sigmoid(x), jnp.tanh(x)
        return sig[:, :H], sig[:, H : 2 * H], tanh[:, 2 * H : 3 * H], sig[:, 3 * H :]

    def scan_of(gates):
        @jax.jit
        def run(xw):
            def body(c, x):
                i, f, g, o = gates(x)
                c = f * c + i * g
                return c, o * jnp.tanh(c)

            return jax.lax.scan(body, jnp.zeros((B, H)), xw)[1]

        return run

    timings = {}
    for name, gates in (("split", split), ("whole", whole)):
        run = scan_of(gates)
        timings[name] = median_ms(lambda run=run: jax.block_until_ready(run(xw)))
    return timings


def lstm_forward_ms() -> dict:
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (B, T, 1))
    forward = jax.jit(lambda params, xs: rnnjax.unroll(cell, params, xs, fused=False)[0])
    result = {"rnnjax": median_ms(lambda: jax.block_until_ready(forward(params, xs)))}
    try:
        import torch
    except ImportError:
        return result
    torch.set_flush_denormal(True)
    module = torch.nn.LSTM(1, H, batch_first=True)
    txs = torch.randn(B, T, 1)
    with torch.no_grad():
        result["PyTorch"] = median_ms(lambda: module(txs))
    return result


def input_size_forward_ms() -> dict:
    import jax
    import jax.numpy as jnp

    import rnnjax

    timings = {}
    for name, make in (("lstm", rnnjax.lstm), ("gru", rnnjax.gru)):
        cell = make(H)
        readable = rnnjax.Cell(cell.init, cell.initial_state, cell.step.reference)
        for label, used, input_size in (
            ("I = 1, readable equations", readable, 1),
            ("I = 1, default path", cell, 1),
            ("I = 2, default path", cell, 2),
        ):
            params = used.init(jax.random.key(0), input_size, jnp.float32)
            xs = jax.random.normal(jax.random.key(1), (B, T, input_size))
            forward = jax.jit(lambda p, xs, used=used: rnnjax.unroll(used, p, xs, fused=False)[0])
            timings[f"{name}, {label}"] = median_ms(
                lambda f=forward, p=params, xs=xs: jax.block_until_ready(f(p, xs))
            )
    return timings


XLA_FLAG_CHOICES = (
    "",
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_use_onednn=true",
    "--xla_cpu_experimental_onednn_custom_call=true",
    "--xla_cpu_use_xnnpack=true",
)


def lstm_step_ms() -> dict:
    """The LSTM training step and forward of the default path, in this process."""
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (B, T, 1))

    def loss(params):
        return jnp.mean(rnnjax.unroll(cell, params, xs, fused=False)[0][:, -1] ** 2)

    train_step = jax.jit(jax.value_and_grad(loss))
    forward = jax.jit(lambda params: rnnjax.unroll(cell, params, xs, fused=False)[0])
    return {
        "training step": median_ms(lambda: jax.block_until_ready(train_step(params))),
        "forward": median_ms(lambda: jax.block_until_ready(forward(params))),
    }


def xla_flags_ms() -> dict:
    timings = {}
    for flags in XLA_FLAG_CHOICES:
        timings[flags or "(none)"] = in_child("--lstm-step", env={**os.environ, "XLA_FLAGS": flags})
    return timings


def batch_chains_ms(rounds=5) -> dict:
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), 1)
    xs = jax.random.normal(jax.random.key(1), (T, B, 1))

    def last_hidden(params, xs, chains):
        groups = jnp.split(xs, chains, axis=1)
        start = tuple(cell.initial_state(params, (B // chains,)) for _ in range(chains))

        def body(states, x_groups):
            return tuple(cell.step(params, s, x)[0] for s, x in zip(states, x_groups)), None

        final, _ = jax.lax.scan(body, start, tuple(groups))
        return jnp.concatenate([state.h for state in final], axis=0)

    timings = {}
    for chains in (1, 2):
        forward = jax.jit(lambda p, x, k=chains: last_hidden(p, x, k))
        train = jax.jit(jax.grad(lambda p, x, k=chains: jnp.mean(last_hidden(p, x, k) ** 2)))
        timings[chains] = (forward, train, [], [])
    for _ in range(rounds):
        for forward, train, forward_ms, train_ms in timings.values():
            forward_ms.append(median_ms(lambda f=forward: jax.block_until_ready(f(params, xs)), 1))
            train_ms.append(median_ms(lambda f=train: jax.block_until_ready(f(params, xs)), 1))
    return {
        f"{chains} chain{'s' if chains > 1 else ''}": {
            "training step": statistics.median(train_ms),
            "forward": statistics.median(forward_ms),
        }
        for chains, (_, _, forward_ms, train_ms) in timings.items()
    }


def allocator_step(mode: str) -> dict:
    """Training steps of every cell, rnnjax (both paths) and PyTorch, in this process."""
    from rnnjax import host_memory

    applied = None
    if mode == "retained":
        applied = host_memory.retain_freed_memory()
    elif mode == "huge pages":
        applied = host_memory.huge_pages_active()
    import jax
    import jax.numpy as jnp

    import rnnjax

    try:
        import torch
    except ImportError:
        torch = None
    results = {"applied": applied}
    xs = jax.random.normal(jax.random.key(1), (B, T, 1))
    for name in ("lstm", "gru", "rnn"):
        cell = getattr(rnnjax, name)(H)
        params = cell.init(jax.random.key(0), 1, jnp.float32)
        for label, fused in (("rnnjax default", False), ("rnnjax fused=True", True)):

            def loss(params, fused=fused, cell=cell):
                return jnp.mean(rnnjax.unroll(cell, params, xs, fused=fused)[0][:, -1] ** 2)

            step = jax.jit(jax.value_and_grad(loss))
            scratch = step.lower(params).compile().memory_analysis().temp_size_in_bytes
            timing = faults_and_ms(
                lambda step=step, params=params: jax.block_until_ready(step(params))
            )
            results[f"{name}, {label}"] = {**timing, "scratch_mb": scratch / 1e6}
        if torch is not None:
            torch.set_flush_denormal(True)
            torch.manual_seed(0)
            module = getattr(torch.nn, {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[name])(
                1, H, batch_first=True
            )
            xs_torch = torch.randn(B, T, 1)

            def torch_step(module=module, xs_torch=xs_torch):
                module.zero_grad()
                loss = (module(xs_torch)[0][:, -1] ** 2).mean()
                loss.backward()

            results[f"{name}, PyTorch"] = faults_and_ms(torch_step)
    return results


def allocator_ms() -> dict:
    modes = ("glibc defaults", "retained", "huge pages")
    return {mode: in_child("--allocator-step", mode, env=huge_pages_env(mode)) for mode in modes}


def split_step(rounds=5) -> dict:
    """In this process, with two CPU devices: one device, XLA's partitioner, rnnjax's split."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), 1)
    xs = jax.random.normal(jax.random.key(1), (B, T, 1))
    mesh = parallel.device_mesh(2)

    def loss(params, xs):
        return jnp.mean(rnnjax.unroll(cell, params, xs, fused=False)[0][:, -1] ** 2)

    def forward(params, xs):
        return rnnjax.unroll(cell, params, xs, fused=False)[0]

    placed = (parallel.replicate(params, mesh), jax.device_put(xs, parallel.batch_sharded(mesh)))
    variants = {
        "one device": (None, (params, xs)),
        "two devices, XLA's partitioner": (None, placed),
        "two devices, split by rnnjax.unroll": (mesh, (params, xs)),
    }
    built = {}
    for label, (ambient, args) in variants.items():
        step = jax.jit(jax.value_and_grad(loss))
        train = parallel.on_mesh(step, ambient)
        run = parallel.on_mesh(jax.jit(forward), ambient)
        compiled = parallel.on_mesh(lambda s=step, a=args: s.lower(*a).compile(), ambient)()
        collectives = parallel.collectives_in_loops(compiled.as_text())
        built[label] = (train, run, args, [], [], collectives)
        jax.block_until_ready(train(*args))
        jax.block_until_ready(run(*args))
    for _ in range(rounds):
        for train, run, args, train_ms, forward_ms, _ in built.values():
            train_ms.append(median_ms(lambda f=train, a=args: jax.block_until_ready(f(*a)), 1))
            forward_ms.append(median_ms(lambda f=run, a=args: jax.block_until_ready(f(*a)), 1))
    return {
        label: {
            "training step": statistics.median(train_ms),
            "forward": statistics.median(forward_ms),
            "collectives in loops": collectives,
        }
        for label, (_, _, _, train_ms, forward_ms, collectives) in built.items()
    }


def split_ms() -> dict:
    return in_child("--split-step")


CLIFF_STEPS = (980, 990, 1000, 1020)


def scratch_step(steps: int) -> dict:
    """The RNN training step over two CPU devices at T = `steps`, in this process."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    import jax
    import jax.numpy as jnp

    import rnnjax

    cell = rnnjax.rnn(H)
    params = cell.init(jax.random.key(0), 1, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (B, steps, 1))
    mesh = parallel.device_mesh(2)

    def loss(params, xs):
        return jnp.mean(rnnjax.unroll(cell, params, xs)[0][:, -1] ** 2)

    step = jax.jit(jax.value_and_grad(loss))
    compiled = parallel.on_mesh(lambda: step.lower(params, xs).compile(), mesh)()
    train = parallel.on_mesh(step, mesh)
    timing = faults_and_ms(lambda: jax.block_until_ready(train(params, xs)), repeats=11)
    scratch = compiled.memory_analysis().temp_size_in_bytes
    return {**timing, "scratch_mib_per_device": scratch / 2**20}


def scratch_cliff_ms() -> dict:
    return {
        mode: {
            str(steps): in_child("--scratch-step", str(steps), env=huge_pages_env(mode))
            for steps in CLIFF_STEPS
        }
        for mode in MODES
    }


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any):
    """`owner.name = value` inside the block, restored after it: code that JAX traces
    there (and compiles) reads `value`."""
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def interleaved_medians(timed: dict, rounds: int) -> dict:
    """Median milliseconds of each `timed[label]()`, over `rounds` rounds that call every
    label in turn (each call after two warm-up calls of its own)."""
    times = {label: [] for label in timed}
    for _ in range(rounds):
        for label, fn in timed.items():
            times[label].append(median_ms(fn, 1))
    return {label: statistics.median(ms) for label, ms in times.items()}


def training_step(cell_name: str, shape: tuple, mesh: Any, fused: bool = False):
    """rnnjax's compiled training step (MSE of the last hidden state) at `shape`, on
    `mesh` (None: one device), as a call with no arguments; the cell is made and the
    step compiled here, so a `patched` block around this call reaches both."""
    import jax
    import jax.numpy as jnp

    import rnnjax
    from rnnjax import parallel

    batch, steps, inputs, hidden = shape
    cell = getattr(rnnjax, cell_name)(hidden)
    params = cell.init(jax.random.key(0), inputs, jnp.float32)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, inputs))

    def loss(params, xs):
        return jnp.mean(rnnjax.unroll(cell, params, xs, fused=fused)[0][:, -1] ** 2)

    step = parallel.on_mesh(jax.jit(jax.value_and_grad(loss)), mesh)
    jax.block_until_ready(step(params, xs))  # compiles now
    return lambda: jax.block_until_ready(step(params, xs))


def shape_label(cell_name: str, shape: tuple) -> str:
    return f"{cell_name} ({', '.join(map(str, shape))})"


PRODUCT_SHAPES = ((32, 1000, 1, 128), (64, 200, 64, 256))


def recurrent_product_step(rounds=7) -> dict:
    """Each cell's training step over two devices, recurrent product plain or as rnnjax's."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    import jax.numpy as jnp

    from rnnjax import cells

    mesh = parallel.device_mesh(2)
    results = {}
    for name in ("rnn", "gru", "lstm"):
        for shape in PRODUCT_SHAPES:
            timed = {}
            for label, product in (("h @ w_hh", jnp.matmul), ("recurrent_product", None)):
                with patched(cells, "recurrent_product", product or cells.recurrent_product):
                    timed[label] = training_step(name, shape, mesh)
            results[shape_label(name, shape)] = interleaved_medians(timed, rounds)
    return results


def recurrent_product_ms() -> dict:
    return {mode: in_child("--recurrent-product-step", env=huge_pages_env(mode)) for mode in MODES}


PROJECTION_SHAPES = (
    (32, 1000, 1, 128),
    (32, 1000, 8, 128),
    (32, 1000, 32, 128),
    (64, 200, 64, 256),
)


def projection_step(rounds=7) -> dict:
    """The fused training step with the inputs projected before the loop or inside it."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    from rnnjax import fused

    results = {}
    for placement, mesh in (("one device", None), ("two devices", parallel.device_mesh(2))):
        for name in ("lstm", "gru"):
            for shape in PROJECTION_SHAPES:
                timed = {}
                for label, widest in (("before the loop", 0), ("inside the loop", 2**31)):
                    with patched(fused, "IN_LOOP_INPUT_MAX", widest):
                        timed[label] = training_step(name, shape, mesh, fused=True)
                row = f"{shape_label(name, shape)}, {placement}"
                results[row] = interleaved_medians(timed, rounds)
    return results


def projection_ms() -> dict:
    return in_child("--projection-step")


def lstm_forward_with_tanh_pass(state: Any, xw: Any, hw: Any) -> tuple:
    """The fused LSTM kernel's forward step as it was before `g` came from the sigmoid:
    a sigmoid and a tanh, each over all four blocks (`lstm_kernel_step` compares)."""
    import jax
    import jax.numpy as jnp

    hidden = state.h.shape[-1]
    pre = xw + hw
    sig, tanh = jax.nn.sigmoid(pre), jnp.tanh(pre)
    i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
    g = tanh[:, 2 * hidden : 3 * hidden]
    c = f * state.c + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    factors = jnp.concatenate(
        [g * i * (1 - i), state.c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], axis=-1
    )
    return type(state)(h, c), h, (factors, o * (1 - tanh_c * tanh_c), f)


def lstm_kernel_step(rounds=7) -> dict:
    """The fused LSTM training step with `g = tanh(pre_g)` from a tanh pass over all four
    blocks or from the sigmoid pass, `2 sigmoid(2 pre_g) - 1`."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    from rnnjax import fused

    kernels = {
        "tanh pass": fused.LSTM_KERNEL._replace(forward=lstm_forward_with_tanh_pass),
        "from the sigmoid": fused.LSTM_KERNEL,
    }
    results = {}
    for placement, mesh in (("one device", None), ("two devices", parallel.device_mesh(2))):
        for shape in PRODUCT_SHAPES:
            timed = {}
            for label, kernel in kernels.items():
                with patched(fused, "LSTM_KERNEL", kernel):  # registered as the cell is made
                    timed[label] = training_step("lstm", shape, mesh, fused=True)
            results[f"{shape_label('lstm', shape)}, {placement}"] = interleaved_medians(
                timed, rounds
            )
    return results


def lstm_kernel_ms() -> dict:
    return in_child("--lstm-kernel-step")


FLOOR_SHAPES = ((32, 1000, 1, 128), (64, 200, 64, 256))


def matmul_floor_row(shape: tuple, mesh: Any, torch: Any, rounds: int) -> dict:
    """Milliseconds of the floor's two parts, rnnjax and PyTorch at one LSTM shape."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from rnnjax import parallel

    batch, steps, inputs, hidden = shape
    gates = 4 * hidden
    keys = jax.random.split(jax.random.key(0), 5)
    w_hh = 0.05 * jax.random.normal(keys[0], (hidden, gates))
    w_hh_t = w_hh.T.copy()
    w_ih = 0.05 * jax.random.normal(keys[1], (inputs, gates))
    split = NamedSharding(mesh, PartitionSpec(None, parallel.BATCH_AXIS))
    xs, hs, d_gates = (
        jax.device_put(jax.random.normal(key, (steps, batch, width)), split)
        for key, width in zip(keys[2:5], (inputs, hidden, gates))
    )

    def loops(w_hh, w_hh_t, xs):
        def forward(h, _):
            g = h @ w_hh  # every gate block feeds the next step, so none is skipped
            return jnp.tanh(sum(g[:, k * hidden : (k + 1) * hidden] for k in range(4))), None

        def backward(d, _):
            return jnp.tanh(jnp.tile(d @ w_hh_t, (1, 4))), None

        local = xs.shape[1]
        h, _ = jax.lax.scan(forward, jnp.zeros((local, hidden)), None, length=steps)
        d, _ = jax.lax.scan(backward, jnp.zeros((local, gates)), None, length=steps)
        return jnp.sum(h) + jnp.sum(d)

    def one_shot(w_ih, xs, hs, d_gates):
        rows = xs.shape[0] * xs.shape[1]
        xs, hs, d_gates = (a.reshape(rows, a.shape[-1]) for a in (xs, hs, d_gates))
        return jnp.sum(xs @ w_ih) + jnp.sum(hs.T @ d_gates) + jnp.sum(xs.T @ d_gates)

    def on_devices(fn, batched):
        def local(*args):
            return jax.lax.psum(fn(*args), parallel.BATCH_AXIS)

        specs = tuple(split.spec if b else PartitionSpec() for b in batched)
        return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec()))

    run_loops = on_devices(loops, (False, False, True))
    run_one_shot = on_devices(one_shot, (False, True, True, True))
    timed = {
        "matmul loops": lambda: jax.block_until_ready(run_loops(w_hh, w_hh_t, xs)),
        "one-shot matmuls": lambda: jax.block_until_ready(run_one_shot(w_ih, xs, hs, d_gates)),
        "rnnjax fused=True over the cores": training_step("lstm", shape, mesh, fused=True),
    }
    if torch is not None:
        torch.manual_seed(0)
        module = torch.nn.LSTM(inputs, hidden, batch_first=True)
        torch_xs, target = torch.randn(batch, steps, inputs), torch.zeros(batch, hidden)

        def torch_step():
            module.zero_grad()
            outputs, _ = module(torch_xs)
            ((outputs[:, -1] - target) ** 2).mean().backward()

        timed["PyTorch"] = torch_step
    return interleaved_medians(timed, rounds)


def matmul_floor_step(rounds=7) -> dict:
    """The LSTM training step's unavoidable matmuls over two devices, rnnjax, PyTorch."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    try:
        import torch

        torch.set_flush_denormal(True)
    except ImportError:
        torch = None
    mesh = parallel.device_mesh(2)
    return {
        shape_label("lstm", shape): matmul_floor_row(shape, mesh, torch, rounds)
        for shape in FLOOR_SHAPES
    }


def matmul_floor_ms() -> dict:
    return in_child("--matmul-floor-step")


def torch_denormals_ms() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    module = torch.nn.LSTM(1, H, batch_first=True)
    xs, target = torch.randn(B, T, 1), torch.zeros(B, H)

    def train_step():
        module.zero_grad()
        outputs, _ = module(xs)
        ((outputs[:, -1] - target) ** 2).mean().backward()

    result = {}
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        result["flushed" if flush else "not flushed"] = median_ms(train_step, repeats=3)
    torch.set_flush_denormal(True)
    return result


def table_row(cells: list) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def table_head(caption: str, columns: list) -> list:
    """Markdown lines that open a table: `caption` as a paragraph, then the header row
    of `columns` and its separator."""
    return ["", caption, "", table_row(columns), "|" + "---|" * len(columns)]


def speed_up_table(caption: str, timings: dict, before: str, after: str) -> list:
    """Markdown lines of an A/B table: each row's `before` and `after` milliseconds and
    the speed-up `before / after`, under `caption`."""
    lines = table_head(caption, ["cell (B, T, I, H), where", before, after, "speed-up"])
    for row, timing in timings.items():
        slow, fast = timing[before], timing[after]
        lines.append(table_row([row, f"{slow:.1f}", f"{fast:.1f}", f"{slow / fast:.2f}x"]))
    return lines


def markdown(results: dict) -> str:
    matmul = results["loop_matmul_ms"]
    gates = results["gate_nonlinearities_ms"]
    forward = results["lstm_forward_ms"]
    lines = ["# Where an LSTM step's time goes on the CPU"]
    lines += table_head(
        f"JAX {results['jax']}, {results['cpu_count']} CPUs, (B, T, H) = ({B}, {T}, {H}), "
        "float32, median of 7 after warm-up.",
        ["measurement", "ms per sequence", "us per step"],
    )
    lines += [
        f"| loop of `h @ w_hh` (+ tanh), all cores | {matmul['all cores']:.1f} | "
        f"{matmul['all cores'] * 1000 / T:.1f} |",
        f"| loop of `h @ w_hh` (+ tanh), one core | {matmul['one core']:.1f} | "
        f"{matmul['one core'] * 1000 / T:.1f} |",
    ]
    for label, ms in results.get("backward_matmul_ms", {}).items():
        lines.append(
            f"| backward loop of `d_gates @ w_hh^T`, {label} | {ms:.1f} | {ms * 1000 / T:.1f} |"
        )
    lines += [
        f"| gate nonlinearities, blocks split first | {gates['split']:.1f} | "
        f"{gates['split'] * 1000 / T:.1f} |",
        f"| gate nonlinearities, all blocks at once | {gates['whole']:.1f} | "
        f"{gates['whole'] * 1000 / T:.1f} |",
    ]
    for name, ms in forward.items():
        label = "rnnjax, default path" if name == "rnnjax" else name
        lines.append(f"| whole LSTM forward, {label} | {ms:.1f} | {ms * 1000 / T:.1f} |")
    for label, ms in results["input_size_forward_ms"].items():
        lines.append(f"| forward, {label} | {ms:.1f} | {ms * 1000 / T:.1f} |")
    lines += table_head(
        f"LSTM (B, T, I, H) = ({B}, {T}, 1, {H}), default path, under `XLA_FLAGS` (milliseconds):",
        ["XLA_FLAGS", "training step", "forward"],
    )
    for flags, ms in results["xla_flags_ms"].items():
        lines.append(f"| `{flags}` | {ms['training step']:.1f} | {ms['forward']:.1f} |")
    lines += table_head(
        "LSTM at the same shape, the batch run as one chain or as two independent "
        "halves in one loop body (milliseconds, median of 5 interleaved rounds):",
        ["loop", "training step", "forward"],
    )
    for label, ms in results["batch_chains_ms"].items():
        lines.append(f"| {label} | {ms['training step']:.1f} | {ms['forward']:.1f} |")
    denormals = results["torch_denormals_ms"]
    if denormals:
        lines += [
            "",
            "PyTorch LSTM training step at (32, 1000, 1, 128): "
            f"{denormals['not flushed']:.0f} ms with denormals, "
            f"{denormals['flushed']:.0f} ms flushed to zero "
            f"({denormals['not flushed'] / denormals['flushed']:.1f}x).",
        ]
    allocator = results["allocator_ms"]
    others = [
        (mode, title)
        for mode, title in (("retained", "memory retained"), ("huge pages", "huge pages"))
        if mode in allocator
    ]
    not_applied = [title for mode, title in others if not allocator[mode]["applied"]]
    lines += table_head(
        f"Training step at (B, T, I, H) = ({B}, {T}, 1, {H}) with glibc's default allocator, "
        "after `rnnjax.host_memory.retain_freed_memory()`, and started with "
        "`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (huge pages); each in its own process; "
        "milliseconds, and minor page faults per call; medians of 7"
        + (f"; not in effect here: {', '.join(not_applied)}" if not_applied else "")
        + "):",
        ["cell, library", "scratch block (MB)", "ms, glibc defaults", "faults"]
        + [column for _, title in others for column in (f"ms, {title}", "faults", "speed-up")],
    )
    for label, default in allocator["glibc defaults"].items():
        if label == "applied":
            continue
        scratch = f"{default['scratch_mb']:.0f}" if "scratch_mb" in default else "–"
        cells = [f"{label}", scratch, f"{default['ms']:.1f}", f"{default['faults']:,.0f}"]
        for mode, _ in others:
            row = allocator[mode][label]
            cells += [
                f"{row['ms']:.1f}",
                f"{row['faults']:,.0f}",
                f"{default['ms'] / row['ms']:.2f}x",
            ]
        lines.append(table_row(cells))
    lines += table_head(
        f"LSTM at (B, T, I, H) = ({B}, {T}, 1, {H}), default path, in a process with two JAX "
        "CPU devices (milliseconds, median of 5 interleaved rounds; collective operations "
        "inside the training step's loop bodies):",
        ["where the batch runs", "training step", "forward", "collectives in loops"],
    )
    for label, ms in results["split_ms"].items():
        lines.append(
            f"| {label} | {ms['training step']:.1f} | {ms['forward']:.1f} | "
            f"{ms['collectives in loops']} |"
        )
    cliff = results.get("scratch_cliff_ms")
    if cliff:
        lines += table_head(
            f"RNN training step (default path) over two CPU devices at (B, I, H) = ({B}, 1, {H}), "
            "each configuration in its own process; milliseconds, minor page faults per call "
            "(medians of 11), and each device's scratch block:",
            ["T", "scratch per device (MiB)"]
            + [column for mode in MODES for column in (f"ms, {mode}", "faults")],
        )
        for steps, default in cliff["glibc defaults"].items():
            huge = cliff["huge pages"][steps]
            lines.append(
                f"| {steps} | {default['scratch_mib_per_device']:.2f} | {default['ms']:.1f} | "
                f"{default['faults']:,.0f} | {huge['ms']:.1f} | {huge['faults']:,.0f} |"
            )
    product = results.get("recurrent_product_ms")
    if product:
        lines += table_head(
            "Training step (default path) over two CPU devices with the recurrent matmul "
            "as plain `h @ w_hh` or as `rnnjax.cells.recurrent_product` (backward against a "
            "transposed copy of `w_hh`); milliseconds, median of 7 interleaved rounds, each "
            "allocator setting in its own process:",
            ["cell (B, T, I, H)"]
            + [
                column
                for mode in MODES
                for column in (f"{mode}: `h @ w_hh`", "`recurrent_product`", "speed-up")
            ],
        )
        for row, default in product["glibc defaults"].items():
            huge = product["huge pages"][row]
            cells = [row]
            for timing in (default, huge):
                plain, ours = timing["h @ w_hh"], timing["recurrent_product"]
                cells += [f"{plain:.1f}", f"{ours:.1f}", f"{plain / ours:.2f}x"]
            lines.append(table_row(cells))
    projection = results.get("projection_ms")
    if projection:
        lines += speed_up_table(
            "`fused=True` training step with `xs @ w_ih` as one matmul before the loop or "
            "step by step inside it; milliseconds, median of 7 interleaved rounds:",
            projection,
            "before the loop",
            "inside the loop",
        )
    kernel = results.get("lstm_kernel_ms")
    if kernel:
        lines += speed_up_table(
            "`fused=True` LSTM training step with the g block's tanh from a tanh pass over "
            "all four blocks or from the sigmoid pass (`2 sigmoid(2x) - 1`); milliseconds, "
            "median of 7 interleaved rounds:",
            kernel,
            "tanh pass",
            "from the sigmoid",
        )
    floor = results.get("matmul_floor_ms")
    if floor:
        with_torch = all("PyTorch" in timing for timing in floor.values())
        columns = ["cell (B, T, I, H)", "matmul loops", "one-shot matmuls", "floor (sum)"]
        columns += ["rnnjax fused=True over the cores"]
        if with_torch:
            columns += ["PyTorch", "floor / PyTorch", "rnnjax / PyTorch"]
        lines += table_head(
            "LSTM training step over two CPU devices: the matrix products it cannot avoid, "
            "each device on its half of the batch (milliseconds, median of 7 interleaved "
            "rounds), against the whole step:",
            columns,
        )
        for row, timing in floor.items():
            total = timing["matmul loops"] + timing["one-shot matmuls"]
            ours = timing["rnnjax fused=True over the cores"]
            cells = [row, f"{timing['matmul loops']:.1f}", f"{timing['one-shot matmuls']:.1f}"]
            cells += [f"{total:.1f}", f"{ours:.1f}"]
            if with_torch:
                torch_ms = timing["PyTorch"]
                cells += [f"{torch_ms:.1f}", f"{total / torch_ms:.2f}", f"{ours / torch_ms:.2f}"]
            lines.append(table_row(cells))
    return "\n".join(lines) + "\n"


def one_core_matmul_ms() -> float:
    """The loop's matmul (1) with this process pinned to one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return loop_matmul_ms()


# What this script runs when `in_child` starts it: flag -> (measurement, its argument's type).
CHILD_STEPS = {
    "--lstm-step": (lstm_step_ms, None),
    "--allocator-step": (allocator_step, str),
    "--scratch-step": (scratch_step, int),
    "--recurrent-product-step": (recurrent_product_step, None),
    "--projection-step": (projection_step, None),
    "--lstm-kernel-step": (lstm_kernel_step, None),
    "--matmul-floor-step": (matmul_floor_step, None),
    "--split-step": (split_step, None),
    "--one-core-matmul": (one_core_matmul_ms, None),
}


def main() -> int:
    if sys.argv[1:2] and sys.argv[1] in CHILD_STEPS:
        measure, argument_type = CHILD_STEPS[sys.argv[1]]
        arguments = [] if argument_type is None else [argument_type(sys.argv[2])]
        print(json.dumps(measure(*arguments)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("results", "cpu_profile"))
    args = parser.parse_args()

    import jax

    one_core = in_child("--one-core-matmul")
    results = {
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "loop_matmul_ms": {
            "all cores": loop_matmul_ms(),
            "one core": one_core,
        },
        "backward_matmul_ms": backward_matmul_ms(),
        "gate_nonlinearities_ms": gate_nonlinearities_ms(),
        "lstm_forward_ms": lstm_forward_ms(),
        "input_size_forward_ms": input_size_forward_ms(),
        "xla_flags_ms": xla_flags_ms(),
        "batch_chains_ms": batch_chains_ms(),
        "torch_denormals_ms": torch_denormals_ms(),
        "allocator_ms": allocator_ms(),
        "split_ms": split_ms(),
        "scratch_cliff_ms": scratch_cliff_ms(),
        "recurrent_product_ms": recurrent_product_ms(),
        "projection_ms": projection_ms(),
        "lstm_kernel_ms": lstm_kernel_ms(),
        "matmul_floor_ms": matmul_floor_ms(),
    }
    from rnnjax._files import write_results

    print(write_results(args.out, "cpu_profile", results, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
