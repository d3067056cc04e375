"""The vanishing-gradient study: criteria, a tiny end-to-end run, every output file."""

import json
import sys

import numpy as np
import pytest

from rnnjax import vanishing
from rnnjax.cli import main


def test_success_criteria():
    assert vanishing.classify("adding", 0.009, 1 / 6) == "solved"
    assert vanishing.classify("adding", 0.05, 1 / 6) == "partial"
    assert vanishing.classify("adding", 0.16, 1 / 6) == "failed"
    assert vanishing.classify("copy", 0.5, 1.0) == "solved"
    assert vanishing.classify("copy", 0.95, 1.0) == "failed"
    assert vanishing.classify("recall", 0.005, 0.0833) == "solved"


def test_quick_mode_settings():
    assert vanishing.QUICK.tasks == ("adding",) and vanishing.QUICK.lengths == (50, 100)
    # The classic cells and one of the zoo's, so the main command shows both.
    classic = set(vanishing.VARIANTS) - set(vanishing.ZOO_VARIANTS)
    assert set(vanishing.QUICK.variants) == classic | {"min_gru"}
    assert set(vanishing.StudyConfig().variants) == set(vanishing.VARIANTS)
    full = vanishing.StudyConfig()
    assert full.lengths == (50, 100, 200, 400, 1000) and full.seeds == (0, 1, 2)
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
    assert {
        "results.json",
        "report.md",
        "grad_norms.png",
        "grad_heatmap.png",
        "learning_curves.png",
        "success_vs_length.png",
    } <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 3 * 2
    run = results["runs"][0]
    for field in (
        "status",
        "final_test_loss",
        "baseline_loss",
        "steps",
        "seconds",
        "eval",
        "steps_to_solve",
        "diagnostics",
    ):
        assert field in run
    for moment in ("init", "final"):
        measured = run["diagnostics"][moment]
        assert len(measured["grad"]["h"]) == run["length"]
        assert len(measured["jacobian"]["h"]) == run["length"]
        assert "horizon" in measured and "spectral_radius" in measured["health"]
    chrono = next(r for r in results["runs"] if r["variant"] == "lstm-chrono")
    assert "c" in chrono["diagnostics"]["init"]["grad"]  # the LSTM's cell state too
    copy = next(r for r in results["runs"] if r["task"] == "copy")
    assert len(copy["diagnostics"]["init"]["grad"]["h"]) == copy["length"] + 20
    assert copy["final_test_accuracy"] is not None
    assert results["meta"]["jax_version"] and results["meta"]["cpu_count"]
    report = (out / "report.md").read_text()
    for heading in (
        "## Adding problem",
        "## Copy memory",
        "## Recall the first value",
        "Gradient horizon",
        "## Cell health",
        "trivial baseline",
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
def test_a_diverging_run_is_recorded_as_failed_and_the_study_goes_on():
    """A run whose loss stops being finite (IndRNN's unbounded recurrence under a huge
    learning rate) is recorded, measured at its last finite state, and does not stop the
    study."""
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
    assert indrnn["status"] == "failed" and indrnn["diverged_at_step"] is not None
    assert indrnn["steps"] == indrnn["diverged_at_step"]
    assert all(np.isfinite(e["loss"]) for e in indrnn["eval"])
    assert "diverged at step" in "\n".join(lines)
    assert len(records) == 2
