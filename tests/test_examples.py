"""Tiny smoke runs of the examples, the seed's use cases: every output, sane contents."""

import importlib.util
import json
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
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


@pytest.mark.slow
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
