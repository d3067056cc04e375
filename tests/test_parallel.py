"""Data parallelism over 4 simulated CPU devices, in a subprocess (XLA reads its flags once)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from rnnjax import parallel

WORKER = pathlib.Path(__file__).with_name("parallel_worker.py")


@pytest.fixture(scope="module")
def report():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    result = subprocess.run(
        [sys.executable, str(WORKER)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow
def test_four_devices_train_like_one(report):
    """Same loss curve and parameters; the only difference is float32 reduction order."""
    assert report["device_count"] == 4
    for devices in ("2", "4"):
        np.testing.assert_allclose(report["curves"][devices], report["curves"]["1"], rtol=1e-4)
    assert report["max_param_difference"] < 1e-4 * max(1.0, report["max_param_magnitude"])
    np.testing.assert_allclose(report["fixed_four"], report["fixed_one"], rtol=1e-4)


@pytest.mark.slow
def test_batch_is_sharded_and_state_replicated(report):
    assert "P('batch',)" in report["batch_sharding"]
    assert report["batch_devices"] == 4
    assert report["batch_shard_shape"] == [4, 16, 2]  # 16 sequences, 4 on each device
    assert "P()" in report["param_sharding_4"] and "'batch': 4" in report["param_sharding_4"]


@pytest.mark.slow
def test_unroll_under_a_mesh_splits_the_batch_and_equals_one_device(report):
    """Outputs and gradients (parameters and inputs) agree in float64 for every cell and
    option, in Hessian-vector products, eagerly, under vmap and for a model with
    variational dropout; the parameters' gradient sum stays out of the loops; uneven
    batches run unsplit."""
    split = report["split_unroll"]
    # 3 cells x 4 options, Hessian-vector products on both paths, eager, vmap, dropout
    assert len(split["max_difference"]) == 17
    for key, difference in split["max_difference"].items():
        assert difference < 1e-12, key
    assert len(split["split"]) == 12
    for key, was_split in split["split"].items():
        assert was_split, key
        assert split["collectives_in_loops"][key] == 0, key
    assert split["output_devices"] == 4
    assert not split["uneven_split"]


@pytest.mark.slow
def test_bad_device_counts_and_batches_are_refused(report):
    assert "devices must be between 1 and the 4 device(s) present" in report["errors"]["too_many"]
    assert (
        "batch_size (6) must be divisible by the number of devices (4)"
        in (report["errors"]["indivisible"])
    )


def test_one_device_means_no_mesh_and_process_shards_partition_the_batch():
    assert parallel.device_mesh(None) is None and parallel.device_mesh(1) is None
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        parallel.device_mesh(0)
    batch = np.arange(12)
    shards = [parallel.process_shard(batch, process_index=i, process_count=3) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate(shards), batch)
    with pytest.raises(ValueError, match="must be divisible by the number of processes"):
        parallel.process_shard(np.arange(10), process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"process_index must be in 0\.\.2, got 3"):
        parallel.process_shard(batch, process_index=3, process_count=3)


USE_CORES = """
import json, jax
from rnnjax import parallel
count = parallel.use_cpu_cores(3)
devices = jax.local_device_count()
again = parallel.use_cpu_cores(3)
try:
    parallel.use_cpu_cores(2)
    late = ""
except RuntimeError as error:
    late = str(error)
print(json.dumps({"count": count, "devices": devices, "again": again, "late": late}))
"""


@pytest.mark.slow
def test_use_cpu_cores_sets_the_device_count_once():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-c", USE_CORES], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["count"] == report["devices"] == report["again"] == 3
    assert "already started with 3 CPU device(s)" in report["late"]
    assert "use_cpu_cores(2) before JAX's first computation" in report["late"]
    with pytest.raises(ValueError, match="count must be a positive integer, got 0"):
        parallel.use_cpu_cores(0)


CLI_ON_TWO_CORES = """
import sys
from rnnjax.cli import main

sys.exit(main(["train", "--task", "adding", "--length", "8", "--hidden", "8", "--steps", "6",
               "--batch-size", "8", "--test-size", "16", "--eval-every", "3",
               "--devices", "2", "--out", sys.argv[1], "--no-progress"]))
"""


@pytest.mark.slow
def test_cli_devices_on_a_cpu_splits_over_cores(tmp_path):
    """`rnnjax train --devices 2` on a CPU gives JAX two CPU devices and trains on both."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, "-c", CLI_ON_TWO_CORES, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["devices"] == 2 and metrics["steps"] == 6
    assert np.isfinite(metrics["final_test_loss"])


@pytest.mark.slow
def test_cli_devices_after_jax_started_is_a_one_line_error(tmp_path, capsys):
    import jax.numpy as jnp

    from rnnjax.cli import main

    jnp.zeros(1).block_until_ready()  # JAX has started, with this process's device count
    count = jax.local_device_count("cpu")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--devices", str(count + 1), "--out", str(tmp_path), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"already started with {count} CPU device(s)" in err
    assert len(err.strip().splitlines()) == 1


def test_no_ambient_mesh_or_one_device_leaves_unroll_unsplit():
    from jax.sharding import Mesh

    assert parallel.ambient_batch_mesh(8) is None  # no mesh set
    one = Mesh(np.asarray(jax.devices()[:1]), (parallel.BATCH_AXIS,))
    other_axis = Mesh(np.asarray(jax.devices()[:1]), ("model",))
    for mesh in (one, other_axis):
        with jax.set_mesh(mesh):
            assert parallel.ambient_batch_mesh(8) is None
    assert parallel.on_mesh(len, None) is len
    assert parallel.batch_spec(None) == jax.sharding.PartitionSpec()
    assert parallel.batch_spec(1) == jax.sharding.PartitionSpec(None, parallel.BATCH_AXIS)
