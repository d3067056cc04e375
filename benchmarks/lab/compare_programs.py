"""Whether two checkouts of rnnjax compile the same programs for the speed rows.

    python benchmarks/lab/compare_programs.py OLD_CHECKOUT NEW_CHECKOUT

For every row of `benchmarks/speed.py`, rnnjax's default path (`fused=None`), its
training step (`value_and_grad`) and its forward pass, on one device and with the
batch split over two CPU devices: XLA's optimized program as compiled by each
checkout (one process per checkout), compared after removing source locations and
renaming instructions in order of appearance. Identical programs run at the same
speed whatever a timing on a noisy machine says, so this is the sharp check that a
refactoring kept the speed; `ab_checkouts.py` times the same rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

ROWS = [
    ("lstm", (32, 1000, 1, 128)),
    ("lstm", (64, 200, 64, 256)),
    ("gru", (32, 1000, 1, 128)),
    ("gru", (64, 200, 64, 256)),
    ("rnn", (32, 1000, 1, 128)),
    ("rnn", (64, 200, 64, 256)),
    ("lstm", (16, 10000, 1, 64)),
]


def dump(path: str) -> None:
    """Writes `{row: optimized HLO text}` for the rnnjax that `sys.path` finds."""
    from rnnjax import parallel

    parallel.use_cpu_cores(2)
    import jax
    import jax.numpy as jnp

    import rnnjax

    programs = {}
    mesh = parallel.device_mesh(2)
    for cell_name, shape in ROWS:
        batch, length, inputs, hidden = shape
        cell = getattr(rnnjax, cell_name)(hidden)
        params = cell.init(jax.random.key(0), inputs, jnp.float32)
        xs = jnp.zeros((batch, length, inputs), jnp.float32)

        def loss(params, xs, cell=cell):
            hs, _ = rnnjax.unroll(cell, params, xs)
            return jnp.mean(hs[:, -1] ** 2)

        jitted = {
            "train": jax.jit(jax.value_and_grad(loss)),
            "forward": jax.jit(lambda params, xs, cell=cell: rnnjax.unroll(cell, params, xs)[0]),
        }
        placed = (
            parallel.replicate(params, mesh),
            jax.device_put(xs, parallel.batch_sharded(mesh)),
        )
        for name, program in jitted.items():
            key = f"{cell_name} {shape}"
            programs[f"{key} one device {name}"] = program.lower(params, xs).compile().as_text()
            with jax.set_mesh(mesh):
                compiled = program.lower(*placed).compile()
            programs[f"{key} over the cores {name}"] = compiled.as_text()
    with open(path, "w") as f:
        json.dump(programs, f)


def canonical(text: str) -> str:
    """The program without source locations, its instructions renamed in order."""
    lines = []
    for line in text.splitlines():
        if re.match(r"^\s*\d+ ", line) or line.strip() in (
            "FileNames",
            "FunctionNames",
            "FileLocations",
            "StackFrames",
        ):
            continue
        line = re.sub(r"metadata=\{[^}]*\}", "", line)
        lines.append(re.sub(r",?\s*stack_frame_id=\d+", "", line))
    names: dict[str, str] = {}
    joined = re.sub(r"^HloModule \S+", "HloModule", "\n".join(lines), flags=re.M)
    return re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), joined)


def main() -> None:
    if sys.argv[1] == "--dump":
        dump(sys.argv[2])
        return
    old, new = sys.argv[1:3]
    texts = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, checkout in (("old", old), ("new", new)):
            path = os.path.join(folder, f"{label}.json")
            env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
            subprocess.run([sys.executable, __file__, "--dump", path], env=env, check=True)
            with open(path) as f:
                texts[label] = json.load(f)
    print("| program | compiled program |\n|---|---|")
    same = 0
    for key, text in texts["old"].items():
        equal = canonical(text) == canonical(texts["new"][key])
        same += equal
        print(f"| {key} | {'identical' if equal else 'differs'} |")
    print(f"\n{same} of {len(texts['old'])} programs identical up to instruction names.")


if __name__ == "__main__":
    main()
