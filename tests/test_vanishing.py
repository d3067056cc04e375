"""The vanishing-gradient study: criteria, a tiny end-to-end run, every output file."""

import csv
import gzip
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import diagnostics, summary, vanishing
from rnnjax.cli import main


def test_success_criteria():
    adding, copy, recall = (1 / 6, 0.3, (100**2 - 1) / 12 / 100**2)
    assert vanishing.meets_criterion("adding", {"loss": 0.009}, adding)
    assert not vanishing.meets_criterion("adding", {"loss": 0.011}, adding)
    # Copy is solved by recalling 99% of the symbols, whatever its loss.
    assert vanishing.meets_criterion("copy", {"loss": 0.2, "accuracy": 0.99}, copy)
    assert not vanishing.meets_criterion("copy", {"loss": 0.01, "accuracy": 0.98}, copy)
    assert vanishing.meets_criterion("recall", {"loss": 0.008}, recall)
    assert not vanishing.meets_criterion("recall", {"loss": 0.009}, recall)

    def status(losses, diverged=False, task="adding", baseline=adding):
        return vanishing.classify(task, [{"loss": v} for v in losses], baseline, diverged)

    assert status([0.1, 0.005, 0.02]) == "solved"  # met at an evaluation, lost later
    assert status([0.1, 0.14]) == "partial"  # final loss within 90% of the baseline
    assert status([0.1, 0.16]) == "failed"
    assert status([0.1], diverged=True) == "diverged"
    assert status([0.005], diverged=True) == "solved"
    # Beating the memoryless baseline is not solving copy.
    beaten = [{"loss": 0.5 * copy, "accuracy": 0.4}]
    assert vanishing.classify("copy", beaten, copy, diverged=False) == "partial"


def test_the_inputs_that_matter():
    from rnnjax.tasks import get_task

    key = jax.random.key(0)
    adding = vanishing.marked_inputs("adding", get_task("adding").generate(key, 5, 30))
    assert adding.shape == (5, 30) and (adding.sum(axis=1) == 2).all()
    assert (adding[:, :15].sum(axis=1) == 1).all()  # one marker in each half
    copy = vanishing.marked_inputs("copy", get_task("copy").generate(key, 2, 30))
    assert copy.shape == (2, 50) and copy[:, :10].all() and not copy[:, 10:].any()
    recall = vanishing.marked_inputs("recall", get_task("recall").generate(key, 2, 30))
    assert recall[:, 0].all() and recall.sum() == 2


def test_gradient_summary_reads_up_to_the_anchor():
    state = np.array([-6.0, -5.0, -4.0, -3.0, 5.0, 9.0])  # a decade per step up to step 3
    norms = diagnostics.StateNorms(state=state, leaves={"h": state - 1, "c": state})
    summary = vanishing.gradient_summary(norms, anchor=3)
    assert summary["decay"]["state"] == pytest.approx(1.0)
    assert summary["decay"]["h"] == pytest.approx(1.0)
    assert summary["horizon"]["state"] == 3  # within 1e-3 of step 3 over all 3 steps back


def test_study_settings():
    assert vanishing.QUICK.tasks == ("adding",) and vanishing.QUICK.lengths == (50, 100)
    # The classic cells and one of the zoo's, so the main command shows both.
    classic = set(vanishing.VARIANTS) - set(vanishing.ZOO_VARIANTS)
    assert set(vanishing.QUICK.variants) == classic | {"min_gru"}
    full = vanishing.StudyConfig()
    assert set(full.variants) == set(vanishing.VARIANTS)
    assert full.lengths == (50, 200, 1000) and len(full.seeds) == 5
    assert set(full.tasks) == {"adding", "copy", "recall"}


@pytest.mark.slow
def test_tiny_study_writes_every_output_and_resumes(tmp_path, capsys):
    out = tmp_path / "study"
    argv = [
        "bench",
        "vanishing",
        "--tasks",
        "adding,copy,recall",
        "--cells",
        "rnn,lstm-chrono",
        "--lengths",
        "6",
        "--seeds",
        "0",
        "--steps",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    figures = ("grad_norms", "grad_heatmap", "learning_curves", "success_vs_length")
    assert {"results.json", "runs.csv", "report.md"} <= names
    assert {f"{name}.{ext}" for name in figures for ext in ("png", "svg")} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for svg in out.glob("*.svg"):
        assert b"<svg" in svg.read_bytes()[:1000]
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 3 * 2
    run = results["runs"][0]
    for field in (
        "status",
        "final_test_loss",
        "baseline_loss",
        "beats_baseline",
        "solved_at_end",
        "parameters",
        "steps",
        "seconds",
        "eval",
        "steps_to_solve",
        "diagnostics",
    ):
        assert field in run
    assert run["steps"] == 4 and run["eval"][-1]["step"] == 4  # the whole budget
    for moment in ("init", "final"):
        measured = run["diagnostics"][moment]
        assert len(measured["grad"]["h"]) == run["length"]
        assert len(measured["jacobian"]["h"]) == run["length"]
        assert set(measured["decay"]) == {"state", "h"} == set(measured["horizon"])
        assert np.isfinite(measured["log10_grad_x_marked"])
        assert "spectral_radius" in measured["health"]
    chrono = next(r for r in results["runs"] if r["variant"] == "lstm-chrono")
    assert "c" in chrono["diagnostics"]["init"]["grad"]  # the LSTM's cell state too
    copy = next(r for r in results["runs"] if r["task"] == "copy")
    assert len(copy["diagnostics"]["init"]["grad"]["h"]) == copy["length"] + 20
    assert copy["anchor_step"] == copy["length"] + 10  # the first recall step
    assert copy["final_test_accuracy"] is not None
    assert results["meta"]["jax_version"] and results["meta"]["cpu_count"]
    with open(out / "runs.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["task"] for r in rows] == [r["task"] for r in results["runs"]]
    assert list(rows[0]) == list(summary.COLUMNS)
    assert float(rows[0]["final_loss"]) == run["final_test_loss"]
    assert int(rows[0]["parameters"]) == run["parameters"]
    report = (out / "report.md").read_text()
    for heading in (
        "## Criteria and statistics",
        "## Adding problem",
        "## Copy memory",
        "## Recall the first value",
        "Gradient decay over the whole state, steps per decade",
        "## Cell health",
        "trivial baseline",
        "0/1 [0.00–0.79]",  # k/n and its Wilson interval
        "![grad_norms](grad_norms.png)",
    ):
        assert heading in report
    assert "partial study" not in report
    capsys.readouterr()
    assert main([*argv, "--resume", "--no-plots"]) == 0
    assert "0 runs to do (6 done)" in capsys.readouterr().err
    # A study cut short is reported as partial, and the report can be redrawn alone.
    results["runs"] = results["runs"][:5]
    (out / "results.json").write_text(json.dumps(results))
    (out / "grad_norms.png").unlink()
    assert main([*argv, "--report-only"]) == 0
    redrawn = (out / "report.md").read_text()
    assert "**A partial study: 5 of the 6 planned runs**" in redrawn
    assert "--report-only" not in redrawn and (out / "grad_norms.png").is_file()
    assert len((out / "runs.csv").read_text().splitlines()) == 1 + 5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cells", "lstm,transformer"], "expected a comma-separated list from"),
        (["--lengths", "10,x"], "expected comma-separated integers"),
        (["--lengths", "1"], "lengths must be integers >= 2, got 1"),
    ],
)
def test_bad_options_exit_2(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "vanishing", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_without_matplotlib_the_study_stops_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "vanishing", "--quick", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and 'pip install "rnnjax[bench]"' in error
    assert not (tmp_path / "out").exists()


def test_a_compressed_results_file_is_read_and_kept(tmp_path):
    results = {"meta": {"study": {}}, "runs": [{"task": "adding", "seed": 0}]}
    path = vanishing.save_results(str(tmp_path / vanishing.COMPRESSED_RESULTS_FILE), results)
    assert vanishing.results_path(str(tmp_path)) == path
    assert vanishing.load_results(path) == results
    (tmp_path / vanishing.COMPRESSED_RESULTS_FILE).write_bytes(b"\x1f\x8b broken")
    with pytest.raises((ValueError, OSError)):
        vanishing.load_results(path)


def test_a_compressed_study_is_stored_one_file_per_seed(tmp_path):
    def run(seed, variant):
        return {"task": "adding", "variant": variant, "length": 50, "seed": seed}

    path = str(tmp_path / vanishing.COMPRESSED_RESULTS_FILE)
    first = {"meta": {"study": {"steps": 3}}, "runs": [run(0, "rnn"), run(0, "gru")]}
    vanishing.save_results(path, first)
    seed_0 = tmp_path / "results-seed-0.json.gz"
    with gzip.open(seed_0, "rt") as file:
        assert json.load(file) == {"runs": first["runs"]}
    with gzip.open(path, "rt") as file:
        index = json.load(file)
    assert "runs" not in index
    assert index["parts"] == [{"file": "results-seed-0.json.gz", "seed": 0, "runs": 2}]

    # A later seed adds a file and leaves the finished seed's file as it was.
    inode = seed_0.stat().st_ino
    second = {**first, "runs": [*first["runs"], run(1, "rnn")]}
    vanishing.save_results(path, second)
    assert seed_0.stat().st_ino == inode
    assert (tmp_path / "results-seed-1.json.gz").exists()
    assert vanishing.load_results(path) == second

    # A part that does not match the list is an error, not a silently shorter study.
    seed_0.write_bytes(gzip.compress(json.dumps({"runs": first["runs"][:1]}).encode()))
    with pytest.raises(ValueError, match="holds 1 runs"):
        vanishing.load_results(path)
    vanishing.save_results(path, second)  # mends the part, as its content differs
    (tmp_path / "results-seed-1.json.gz").unlink()
    with pytest.raises(FileNotFoundError, match="results-seed-1"):
        vanishing.load_results(path)

    # A file of the earlier form, every run inline, still reads.
    inline = tmp_path / "inline.json.gz"
    inline.write_bytes(gzip.compress(json.dumps(second).encode()))
    assert vanishing.load_results(str(inline)) == second


@pytest.mark.slow
def test_merge_adds_runs_made_elsewhere(tmp_path, capsys):
    """Two seeds run as two processes, then merged into one study."""

    def argv(out, seeds, *extra):
        return [
            "bench", "vanishing", "--tasks", "adding", "--cells", "rnn", "--lengths", "6",
            "--steps", "4", "--seeds", seeds, "--out", str(out), "--no-plots", *extra,
        ]  # fmt: skip

    first, second = tmp_path / "seed0", tmp_path / "seed1"
    assert main(argv(first, "0")) == 0
    assert main(argv(second, "1")) == 0
    other = str(second / "results.json")

    # A merged run must belong to the study's grid...
    with pytest.raises(SystemExit) as exit_info:
        main(argv(first, "0", "--report-only", "--merge", other))
    assert exit_info.value.code == 2
    assert "outside this study's grid" in capsys.readouterr().err
    # ...and share its training settings.
    with pytest.raises(SystemExit) as exit_info:
        main([*argv(first, "0,1", "--report-only", "--merge", other), "--steps", "5"])
    assert exit_info.value.code == 2
    assert "needs the same training settings" in capsys.readouterr().err

    assert main(argv(first, "0,1", "--report-only", "--merge", other)) == 0
    merged = json.loads((first / "results.json").read_text())
    assert sorted(run["seed"] for run in merged["runs"]) == [0, 1]
    assert merged["meta"]["study"]["seeds"] == [0, 1]
    assert merged["meta"]["merged_from"] == [other]
    assert merged["meta"]["command"].endswith("--seeds 0 --out " + str(first) + " --no-plots")
    assert merged["runs"][1] == json.loads((second / "results.json").read_text())["runs"][0]
    merged_report = (first / "report.md").read_text()
    assert (
        "partial study" not in merged_report
        and f"merged in (`--merge`) from `{other}`" in merged_report
    )
    # --report-only takes the stored study's settings, so a redraw needs no options.
    assert main(["bench", "vanishing", "--out", str(first), "--report-only", "--no-plots"]) == 0
    assert (first / "report.md").read_text() == merged_report
    # Merging again adds nothing, and a resumed study finds nothing left to run.
    assert main(argv(first, "0,1", "--report-only", "--merge", other)) == 0
    assert len(json.loads((first / "results.json").read_text())["runs"]) == 2
    capsys.readouterr()
    assert main(argv(first, "0,1", "--resume", "--merge", other)) == 0
    assert "0 runs to do (2 done)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_diverging_run_is_recorded_and_the_study_goes_on(monkeypatch):
    """A run whose loss stops being finite (an IndRNN without the study's bound on its
    recurrent weights, under a huge learning rate) is recorded, measured at its last
    finite state, and does not stop the study."""
    bounded = vanishing.make_variant_cell

    def unbounded_indrnn(variant, hidden, max_length):
        if variant == "indrnn":
            return rnnjax.make_cell("indrnn", hidden)
        return bounded(variant, hidden, max_length)

    monkeypatch.setattr(vanishing, "make_variant_cell", unbounded_indrnn)
    study = vanishing.StudyConfig(
        tasks=("adding",),
        variants=("indrnn", "gru"),
        lengths=(100,),
        seeds=(0,),
        steps=60,
        lr=1000.0,
        eval_every=20,
        test_size=32,
        probe_size=4,
    )
    lines = []
    records = vanishing.run_study(study, log=lines.append)["runs"]
    indrnn = next(r for r in records if r["variant"] == "indrnn")
    assert indrnn["status"] == "diverged" and indrnn["diverged_at_step"] is not None
    assert indrnn["steps"] == indrnn["diverged_at_step"]
    assert all(np.isfinite(e["loss"]) for e in indrnn["eval"])
    assert "diverged at step" in "\n".join(lines)
    assert len(records) == 2


def test_wilson_interval():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion",
    # Statistics in Medicine 17, 857-872: the score method's intervals in its examples.
    for (k, n), expected in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
    }.items():
        assert tuple(round(v, 4) for v in summary.wilson_interval(k, n)) == expected
    assert summary.wilson_interval(0, 5)[0] == 0.0 and summary.wilson_interval(5, 5)[1] == 1.0
    # k/n within its interval exactly, for every k and n the study can have (0/3 gave a
    # lower bound of 5.6e-17 by rounding, and a negative error bar in the figure).
    for n in range(1, 21):
        for k in range(n + 1):
            low, high = summary.wilson_interval(k, n)
            assert low <= k / n <= high
    # Narrower with more runs, always around k/n.
    assert np.diff(summary.wilson_interval(30, 50)) < np.diff(summary.wilson_interval(3, 5))
    with pytest.raises(ValueError, match="successes"):
        summary.wilson_interval(6, 5)


def test_censored_median():
    assert summary.censored_median([400, 200, 300]) == 300
    assert summary.censored_median([400, None, 300, None]) == 400  # 2 of 4 solved by 400
    assert summary.censored_median([400, None, None, None, 100]) is None  # beyond the budget
    with pytest.raises(ValueError):
        summary.censored_median([])


@pytest.mark.slow
def test_runs_in_parallel_processes_equal_runs_in_one():
    study = vanishing.StudyConfig(
        tasks=("adding",),
        variants=("rnn", "gru"),
        lengths=(8,),
        seeds=(0, 1),
        steps=6,
        eval_every=3,
        test_size=16,
        probe_size=4,
    )
    saved = []
    alone = vanishing.run_study(study, log=lambda line: None)["runs"]
    together = vanishing.run_study(study, log=lambda line: None, jobs=2, on_record=saved.append)
    assert [vanishing.run_key(r) for r in together["runs"]] == vanishing.study_grid(study)
    assert len(saved) == 4 and len(saved[-1]) == 4  # saved after every run

    def numbers(run):
        return run["eval"], run["diagnostics"]["final"]["grad"], run["status"]

    assert [numbers(r) for r in together["runs"]] == [numbers(r) for r in alone]
    with pytest.raises(ValueError, match="jobs"):
        vanishing.run_study(study, jobs=0)


def test_the_study_bounds_indrnn_recurrent_weights_by_the_sequence_length():
    cell = vanishing.make_variant_cell("indrnn", 3, 100)
    params = cell.init(jax.random.key(0), 2)._replace(w_hh=jnp.array([1.5, 0.5, -3.0]))
    x, h = jnp.ones((1, 2)), jnp.ones((1, 3))
    bounded = rnnjax.make_cell("indrnn", 3, recurrent_max_abs=2.0 ** (1 / 100))
    np.testing.assert_array_equal(cell.step(params, h, x)[1], bounded.step(params, h, x)[1])
    assert not np.array_equal(cell.step(params, h, x)[1], rnnjax.indrnn(3).step(params, h, x)[1])
