"""Tiny smoke runs of the product benchmarks: every output, sane contents."""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_speed_smoke():
    """Every installed implementation is timed on a tiny shape; the report has every table."""
    speed = load("speed")
    shape = (2, 6, 3, 4)
    rows = [
        {"cell": cell, "shape": list(shape), "results": speed.measure_shape(cell, shape, rounds=1)}
        for cell in ("lstm", "gru", "min_gru")
    ]
    # Beside the default (the cell's `sequence`), the reference path.
    for row in rows:
        assert {speed.DEFAULT, speed.REFERENCE} <= set(row["results"])
    for row in rows:
        for timing in row["results"].values():
            assert timing["train_ms"] > 0 and timing["forward_ms"] > 0
            if row["cell"] in speed.GATES:
                assert timing["train_gflops"] > 0
    assert set(rows[2]["results"]) <= {n for n in rows[0]["results"] if n.startswith("rnnjax")}
    long_rows = speed.long_sequence_table([((2, 8, 1, 4), 1)])
    assert set(long_rows[0]["train_ms"]) == set(speed.LONG_CELLS)
    memory = speed.memory_worker(length=40, chunk=6, repeats=1)
    assert memory["checkpoint_every"] == 6 and memory["peak_rss_mb"] > 0
    # As on a machine with several cores: the split column and its two ratios.
    rows[0]["results"][speed.SPLIT] = dict(rows[0]["results"]["rnnjax default path"])
    rows[0]["results"][speed.SPLIT_REFERENCE] = {
        **rows[0]["results"][speed.REFERENCE],
        "train_ms": 0.5 * min(t["train_ms"] for t in rows[0]["results"].values()),
    }
    results = {
        "meta": {**speed.versions(), "rounds": 1, "matmul_peak_gflops": 1.0, "jax_cpu_devices": 2},
        "shapes": rows,
        "long_sequences": long_rows,
        "compile_seconds": {10: 0.5, 20: 0.6},
        "memory": [memory],
    }
    report = speed.markdown(results)
    for heading in (
        "Training step",
        "Inference",
        "each peer",
        "GFLOP/s",
        "Long sequences",
        "Compile time",
        "Memory",
    ):
        assert heading in report
    assert "| min_gru (2, 6, 3, 4) |" in report and "| (2, 8, 1, 4) |" in report
    assert "| lstm (2, 6, 3, 4) |" in report and "1.20x" in report
    assert f"| {speed.SPLIT} / best JAX peer |" in report and "(2 JAX CPU devices)" in report
    assert "| rnnjax default path | rnnjax other path |" in report
    for peer in (name for name in rows[0]["results"] if not name.startswith("rnnjax")):
        assert f"rnnjax default path / {peer} |" in report
    # The fastest path's table names the one made fastest above, on the training side.
    fastest = report.split("## Training step: the fastest rnnjax path on each row")[1]
    assert f"| lstm (2, 6, 3, 4) | {speed.SPLIT_REFERENCE} |" in fastest.split("## Inference")[0]


def test_speed_report_regenerates_from_its_committed_json():
    """The committed speed report is what `markdown` makes of its JSON."""
    speed = load("speed")
    folder = BENCHMARKS / "results" / "speed"
    results = json.loads((folder / "speed.json").read_text())
    assert speed.markdown(results) == (folder / "speed.md").read_text()
