"""`host_memory`: in subprocesses, since its settings change the whole process."""

import json
import os
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
from rnnjax import host_memory
if sys.argv[1] == "retain":
    applied = host_memory.retain_freed_memory()
elif sys.argv[1] == "huge pages":
    applied = host_memory.huge_pages_active()
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
    # Host memory is what is measured: the CPU backend, also where a GPU is present.
    environment = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if mode == "huge pages":
        environment = host_memory.environment_with_huge_pages(environment)
    result = subprocess.run(
        [sys.executable, "-c", WORKER, mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_faults() -> dict:
    """The worker with glibc's defaults, shared by the tests that compare against it."""
    return run_worker("default")


def test_retained_memory_stops_the_page_faults_of_each_call(default_faults):
    retained = run_worker("retain")
    if not retained["applied"]:
        pytest.skip("the C library is not glibc")
    default = default_faults
    # Without it every call touches its scratch block's pages afresh; with it, they are reused.
    assert default["faults_per_call"] > 10_000, default
    assert retained["faults_per_call"] < 1_000, retained


def test_huge_pages_fault_the_scratch_block_in_far_fewer_times(default_faults):
    huge = run_worker("huge pages")
    if not huge["applied"]:
        pytest.skip("needs glibc 2.35+ and transparent huge pages (madvise or always)")
    default = default_faults
    # Faulted in 4 KiB at a time, the 82 MB block takes about 20,000 faults; 2 MiB at a
    # time, about 40 (the call's smaller blocks add a few more).
    assert default["faults_per_call"] > 10_000, default
    assert huge["faults_per_call"] < default["faults_per_call"] / 10, (huge, default)


def test_huge_pages_environment_keeps_other_tunables():
    env = host_memory.environment_with_huge_pages(
        {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=2:glibc.malloc.arena_max=2"}
    )
    assert env["PATH"] == "/bin"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert host_memory.huge_pages_requested(env)
    assert not host_memory.huge_pages_requested({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"})
    assert not host_memory.huge_pages_requested({})
    assert host_memory.transparent_huge_pages_mode() in ("always", "madvise", "never", None)


def test_elsewhere_than_linux_it_changes_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(host_memory.ctypes, "CDLL", pytest.fail)  # never reaches the C library
    assert host_memory.retain_freed_memory() is False
    assert host_memory.huge_pages_active() is False
