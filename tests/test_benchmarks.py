"""Tiny smoke runs of the benchmarks (every output, sane contents), and the CPU profile's report."""

import collections
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


def test_forecast_smoke(tmp_path, capsys):
    forecast = load("forecast")
    out = tmp_path / "forecast"
    assert (
        forecast.main(
            [
                "--points",
                "600",
                "--steps",
                "5",
                "--window",
                "20",
                "--test-stride",
                "50",
                "--cells",
                "rnn,lstm",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} >= {
        "forecast.json",
        "report.md",
        "forecast.png",
        "nrmse.png",
    }
    results = json.loads((out / "forecast.json").read_text())
    for name, horizon in (("mackey-glass", 50), ("seasonal", 48)):
        record = results["series"][name]
        assert set(record["nrmse"]) == {"naive", "rnn", "lstm"}
        assert all(len(errors) == horizon for errors in record["nrmse"].values())
        assert len(record["example"]["forecasts"]["lstm"]) == horizon
    assert "| naive |" in (out / "report.md").read_text()
    capsys.readouterr()


def test_text_smoke_on_a_given_file(tmp_path, capsys):
    text = load("text")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 120)
    out = tmp_path / "text"
    assert (
        text.main(
            [
                "--text",
                str(corpus),
                "--chars",
                "5000",
                "--steps",
                "6",
                "--length",
                "20",
                "--eval-every",
                "3",
                "--sample-chars",
                "12",
                "--lstm-hidden",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} >= {"text.json", "report.md", "learning_curves.png"}
    results = json.loads((out / "text.json").read_text())
    budget = results["parameter_budget"]
    for cell in ("rnn", "lstm", "gru"):
        record = results["cells"][cell]
        assert abs(record["parameters"] - budget) / budget < 0.05  # equal parameter count
        assert record["sample"].startswith("def ") and len(record["sample"]) == 4 + 12
        assert [p["step"] for p in record["curve"]] == [3, 6]
    assert results["cells"]["lstm"]["hidden"] == 8
    capsys.readouterr()


def test_text_rejects_a_too_short_corpus(tmp_path):
    text = load("text")
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("too short")
    with pytest.raises(SystemExit) as exit_info:
        text.main(["--text", str(corpus), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2


def test_speed_smoke():
    """Every installed implementation is timed on a tiny shape; the report has every table."""
    speed = load("speed")
    shape = (2, 6, 3, 4)
    rows = [
        {"cell": cell, "shape": list(shape), "results": speed.measure_shape(cell, shape, rounds=1)}
        for cell in ("lstm", "gru")
    ]
    # Beside the default, the path it does not take: the reference path for the LSTM
    # (whose default is its fused kernel), the fused kernel for the GRU.
    assert {speed.DEFAULT, speed.REFERENCE} <= set(rows[0]["results"])
    assert {speed.DEFAULT, speed.FUSED} <= set(rows[1]["results"])
    for row in rows:
        for timing in row["results"].values():
            assert timing["train_ms"] > 0 and timing["forward_ms"] > 0
            assert timing["train_gflops"] > 0
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
        "compile_seconds": {10: 0.5, 20: 0.6},
        "memory": [memory],
    }
    report = speed.markdown(results)
    for heading in ("Training step", "Inference", "each peer", "GFLOP/s", "Compile time", "Memory"):
        assert heading in report
    assert "| lstm (2, 6, 3, 4) |" in report and "1.20x" in report
    assert f"| {speed.SPLIT} / best JAX peer |" in report and "(2 JAX CPU devices)" in report
    # The LSTM's reference path and the GRU's kernel share the "other path" column.
    assert "| rnnjax default path | rnnjax other path |" in report
    for peer in (name for name in rows[0]["results"] if not name.startswith("rnnjax")):
        assert f"rnnjax default path / {peer} |" in report
    # The fastest path's table names the one made fastest above, on the training side.
    fastest = report.split("## Training step: the fastest rnnjax path on each row")[1]
    assert f"| lstm (2, 6, 3, 4) | {speed.SPLIT_REFERENCE} |" in fastest.split("## Inference")[0]
    # The default path a run timed is named in the report's first lines, when recorded.
    assert "default path is" not in report
    results["meta"]["default_path"] = speed.DEFAULT_PATH
    assert "rnnjax's default path is `fused=None`" in speed.markdown(results)
    # The allocator a run used is named in the report's first lines.
    assert "--huge-pages" not in report
    results["meta"].update(huge_pages=True, transparent_huge_pages="madvise")
    assert "Run with `--huge-pages`: glibc asks for transparent huge pages" in speed.markdown(
        results
    )
    results["meta"].update(huge_pages=False, transparent_huge_pages="never")
    assert "could not use them" in speed.markdown(results)


def test_fused_smoke(monkeypatch):
    """Both paths are timed on a tiny shape; the report's speed-ups are reference over
    fused, and the committed report regenerates from its JSON byte for byte."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # fused.py imports speed.py beside it
    bench = load("fused")
    rows = []
    for cell in ("lstm", "gru"):
        measured = bench.measure_shape(cell, (2, 6, 3, 4), rounds=1, split_available=False)
        assert set(measured) == {("one device", path) for path in bench.PATHS}
        assert all(ms > 0 for ms in measured.values())
        times = {path: ms for (_, path), ms in measured.items()}
        rows.append({"cell": cell, "shape": [2, 6, 3, 4], "results": {"one device": times}})
    meta = {**load("speed").versions(), "rounds": 1, "jax_cpu_devices": 1}
    report = bench.markdown({"meta": meta, "shapes": rows})
    lstm = rows[0]["results"]["one device"]
    speed_up = lstm["reference"] / lstm["fused"]
    assert f"| lstm (2, 6, 3, 4) | {lstm['reference']:.1f} | " in report
    assert f"| {speed_up:.2f}x |" in report and "over the cores" not in report
    assert f"| lstm | {int(speed_up > 1)} of 1 | {speed_up:.2f}x - {speed_up:.2f}x |" in report
    folder = BENCHMARKS / "results" / "fused"
    committed = json.loads((folder / "fused.json").read_text())
    assert bench.markdown(committed) == (folder / "fused.md").read_text()


def test_unroll_smoke(monkeypatch):
    """Each factor is timed on a tiny shape; the report names the factor rnnjax chooses."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # unroll.py imports speed.py beside it
    unroll = load("unroll")
    rows = []
    for cell, shape in (("gru", (2, 6, 3, 4)), ("lstm", (2, 6, 3, 4)), ("rnn", (2, 5, 3, 4))):
        measured = unroll.measure_shape(cell, shape, rounds=1, split_available=False)
        assert set(measured) == {("one device", f) for f in unroll.FACTORS}
        assert all(t["train_ms"] > 0 and t["forward_ms"] > 0 for t in measured.values())
        results = {str(factor): times for (_, factor), times in measured.items()}
        chosen = unroll.preferred(cell, shape[1])
        rows.append(
            {
                "cell": cell,
                "shape": list(shape),
                "chosen": chosen,
                "results": {"one device": results},
            }
        )
    # 2 for the GRU at an even T, 1 for the LSTM, and 1 for the RNN at an odd T.
    assert [row["chosen"] for row in rows] == [2, 1, 1]
    meta = {**load("speed").versions(), "rounds": 1, "jax_cpu_devices": 1}
    report = unroll.markdown({"meta": meta, "shapes": rows})
    assert "## Training step" in report and "## Inference" in report
    gru = rows[0]["results"]["one device"]
    speed_up = gru["1"]["train_ms"] / gru["2"]["train_ms"]
    assert "| gru (2, 6, 3, 4) | 2 | " in report and f"{speed_up:.2f}x |" in report
    assert "over the cores" not in report  # no column for a placement that did not run
    # --other-path: the path each cell's default does not take.
    assert [unroll.path_fused(c, other_path=True) for c in ("lstm", "gru", "rnn")] == [
        False,
        True,
        False,
    ]
    assert unroll.path_fused("gru") is None  # the default path, fused=None


def test_step_profile_groups_the_operations_of_a_compiled_program(monkeypatch):
    """The matmul of a loop's body counts as in the loops, a matmul after the loop as
    outside them, and the body's other operations as the loops' other work."""
    import jax
    import jax.numpy as jnp

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # step_profile.py imports speed.py beside it
    step_profile = load("step_profile")

    def program(w, h):
        def body(h, _):
            return jnp.tanh(h @ w), None

        h, _ = jax.lax.scan(body, h, None, length=5)
        return h @ w.T

    text = jax.jit(program).lower(jnp.ones((6, 6)), jnp.ones((3, 6))).compile().as_text()
    groups = step_profile.operation_groups(text)
    counts = collections.Counter(groups.values())
    assert counts["matmuls in the loops"] == 1
    assert counts["matmuls outside the loops"] == 1
    assert counts["other work in the loops"] >= 1  # the tanh, the loop's counter, the while
    assert set(groups.values()) <= set(step_profile.GROUPS)


def test_step_profile_smoke(monkeypatch):
    """A tiny row is profiled and timed, the in-place residual is timed against the
    stacked one, and the report shows both (and regenerates from its JSON)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports speed.py and cpu_profile.py
    step_profile = load("step_profile")
    row = step_profile.profile_row("lstm", (2, 6, 40, 4), rounds=1)
    assert set(row["groups_ms"]) == set(step_profile.GROUPS)
    assert row["groups_ms"]["matmuls in the loops"] > 0
    assert row["wall_ms"]["rnnjax"] > 0 and row["scratch_mib_per_device"] >= 0
    in_place = step_profile.in_place_ms((2, 6, 40, 4), rounds=1)
    assert {(r["cell"], r["placement"]) for r in in_place} >= {("lstm", "one device")}
    assert all(r["in_place_ms"] > 0 and r["stacked_ms"] > 0 for r in in_place)
    meta = {"jax": "x", "cpu_count": 1, "jax_cpu_devices": 1, "rounds": 1}
    results = {"meta": meta, "rows": [row], "in_place_shape": [2, 6, 40, 4], "in_place": in_place}
    report = step_profile.markdown(results)
    assert "| lstm (2, 6, 40, 4) | " in report and "| lstm | one device | " in report
    folder = BENCHMARKS / "results" / "step_profile"
    committed = json.loads((folder / "step_profile.json").read_text())
    assert step_profile.markdown(committed) == (folder / "step_profile.md").read_text()


def test_speed_report_names_the_default_path_of_each_cell():
    speed = load("speed")
    assert speed.fused_by_default() == ["rnn", "lstm"]
    assert speed.default_paths({"fused_by_default": ["rnn", "lstm"]}) == (
        "the LSTM and RNN",
        "the GRU",
    )
    # Reports from before `fused_by_default` was recorded had only the LSTM on its kernel.
    assert speed.default_paths({}) == ("the LSTM", "the GRU and RNN")


def test_checkpointing_smoke(monkeypatch):
    """A tiny row is timed with and without checkpointing; the report shows both and the
    speed-up, and the committed report regenerates from its JSON."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports speed.py and cpu_profile.py
    checkpointing = load("checkpointing")
    shape = (4, 9, 2, 3)
    measured = checkpointing.measure_row("gru", shape, "fused=True", "one device", rounds=1)
    assert set(measured) == {"off", "3"}  # round(sqrt(9))
    for timing in measured.values():
        assert timing["ms"] > 0 and timing["faults"] >= 0 and timing["scratch_mib"] > 0
    row = {
        "cell": "gru",
        "shape": list(shape),
        "path": "fused=True",
        "placement": "one device",
        "checkpoint_every": 3,
        "results": measured,
    }
    meta = {**load("speed").versions(), "rounds": 1, "quick": True}
    report = checkpointing.markdown({"meta": meta, "rows": [row]})
    speed_up = measured["off"]["ms"] / measured["3"]["ms"]
    assert "| gru (4, 9, 2, 3) | fused=True | one device | 3 | " in report
    assert f"| {speed_up:.2f}x |" in report
    # Every speed row over two devices, both paths; one device only at T = 1000.
    rows = checkpointing.rows_to_measure(quick=False)
    assert len(rows) == 2 * len(load("speed").FULL_SHAPES) + 2 * 3
    assert {shape[1] for _, shape, _, placement in rows if placement == "one device"} == {1000}
    folder = BENCHMARKS / "results" / "checkpointing"
    committed = json.loads((folder / "checkpointing.json").read_text())
    assert checkpointing.markdown(committed) == (folder / "checkpointing.md").read_text()


@pytest.mark.parametrize("folder", ["speed", "speed-huge-pages", "speed-retained"])
def test_speed_reports_regenerate_from_their_committed_json(folder):
    """Each committed speed report is what `markdown` makes of its JSON, whichever default
    path it timed (reports from before the LSTM's fused default record none)."""
    speed = load("speed")
    folder = BENCHMARKS / "results" / folder
    results = json.loads((folder / "speed.json").read_text())
    assert speed.markdown(results) == (folder / "speed.md").read_text()


def test_cpu_profile_report_regenerates_from_its_committed_json():
    """The committed profile's Markdown is what `markdown` makes of its JSON; a JSON from
    before the allocator-step, recurrent-product, projection, LSTM-kernel and matmul-floor
    measurements renders without them."""
    cpu_profile = load("cpu_profile")
    folder = BENCHMARKS / "results" / "cpu_profile"
    results = json.loads((folder / "cpu_profile.json").read_text())
    assert cpu_profile.markdown(results) == (folder / "cpu_profile.md").read_text()
    older = {
        key: value
        for key, value in results.items()
        if key
        not in (
            "scratch_cliff_ms",
            "recurrent_product_ms",
            "projection_ms",
            "lstm_kernel_ms",
            "matmul_floor_ms",
        )
    }
    report = cpu_profile.markdown(older)
    assert "scratch per device" not in report and "recurrent_product" not in report
    assert "inside the loop" not in report and "matmul loops" not in report
    assert "tanh pass" not in report
    assert report.startswith("# Where an LSTM step's time goes on the CPU")


def test_cpu_profile_matmul_floor_table_without_pytorch():
    """Without PyTorch the floor table keeps its rnnjax columns and drops PyTorch's."""
    cpu_profile = load("cpu_profile")
    results = json.loads((BENCHMARKS / "results" / "cpu_profile" / "cpu_profile.json").read_text())
    floor = {
        row: {label: ms for label, ms in timing.items() if label != "PyTorch"}
        for row, timing in results["matmul_floor_ms"].items()
    }
    report = cpu_profile.markdown({**results, "matmul_floor_ms": floor})
    row = next(iter(floor))
    loops, one_shot = floor[row]["matmul loops"], floor[row]["one-shot matmuls"]
    assert f"| {row} | {loops:.1f} | {one_shot:.1f} | {loops + one_shot:.1f} |" in report
    assert "floor / PyTorch" not in report
