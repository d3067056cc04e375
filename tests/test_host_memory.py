"""`host_memory.retain_freed_memory`: in subprocesses, since it changes the whole process."""

import json
import subprocess
import sys

import pytest

from rnnjax import host_memory

# Page faults per call of a vanilla-RNN training step at (B, T, H) = (32, 1000, 128),
# whose scratch block (residuals of all 1,000 steps) is 82 MB (cpu_profile.md): the
# median of 21 calls after three warm-up calls. (With memory retained, the heap still grows now and
# then, when a block does not fit the free space, and faults that block in once;
# without it, every call does.)
WORKER = """
import json, resource, sys
if sys.argv[1] == "retain":
    from rnnjax import host_memory
    applied = host_memory.retain_freed_memory()
else:
    applied = None
import jax, jax.numpy as jnp
import rnnjax

cell = rnnjax.rnn(128)
params = cell.init(jax.random.key(0), 1)
xs = jax.random.normal(jax.random.key(1), (32, 1000, 1))

@jax.jit
def grads(params, xs):
    return jax.grad(lambda p: jnp.mean(rnnjax.unroll(cell, p, xs)[0][:, -1] ** 2))(params)

for _ in range(3):
    jax.block_until_ready(grads(params, xs))
faults = []
for _ in range(21):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(grads(params, xs))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults_per_call": sorted(faults)[10]}))
"""


def run_worker(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_retained_memory_stops_the_page_faults_of_each_call():
    retained = run_worker("retain")
    if not retained["applied"]:
        pytest.skip("the C library is not glibc")
    default = run_worker("default")
    # Without it every call touches its scratch block's pages afresh; with it, they are reused.
    assert default["faults_per_call"] > 10_000, default
    assert retained["faults_per_call"] < 1_000, retained


def test_elsewhere_than_linux_it_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(host_memory.ctypes, "CDLL", pytest.fail)  # never reaches the C library
    assert host_memory.retain_freed_memory() is False
