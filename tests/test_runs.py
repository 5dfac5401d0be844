"""Run directories, papermill parameter checks and sweeps (the notebooks themselves run under
nbval; here the sweep machinery runs with a stand-in for the series)."""
import csv
import json

import numpy as np
import pytest

from midilstm import runs
from midilstm.events import make_events
from midilstm.rundir import RunDir


def test_pieces_round_trip_in_order_with_labels(tmp_path):
    run = RunDir(tmp_path / "run")
    pieces = [make_events([(60, 90, 0.0), (60, 0, 0.5)]), make_events([(62, 80, 0.25)])]
    run.save_pieces("events.npz", pieces, ["a.mid", "b.mid"])
    loaded, labels = run.load_pieces("events.npz")
    assert labels == ["a.mid", "b.mid"]
    assert all(np.array_equal(a, b) for a, b in zip(pieces, loaded))


def test_missing_artifact_says_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="codec.json is missing"):
        RunDir(tmp_path).load_json("codec.json")


def test_metrics_sections_accumulate_and_manifest_records_steps(tmp_path):
    run = RunDir(tmp_path)
    run.update_metrics("parse", {"events": 10})
    run.update_metrics("train", {"val_nll": 5.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "parse": {"events": 10}, "train": {"val_nll": 5.0}}
    run.record_step("01_parse", {"piece": "default"})
    run.save_json("parse_report.json", [{"path": "x.mid", "sha256": "ab" * 32}])
    manifest = run.finish({"parameters": {"seed": 3}})
    assert manifest["steps"] == {"01_parse": {"piece": "default"}}
    assert manifest["inputs"] == {"x.mid": "ab" * 32}
    assert set(manifest["versions"]) >= {"python", "torch", "numpy", "mido"}
    assert "commit" in manifest["git"] and manifest["parameters"] == {"seed": 3}
    assert set(manifest["outputs"]) == {"metrics.json", "parse_report.json"}


def test_every_notebook_declares_its_knobs_and_a_run_dir():
    for name in runs.SERIES:
        declared = runs.declared_parameters(name)
        assert "run_dir" in declared
        assert all(p["help"] for p in declared.values()), f"{name}: a knob without a comment"
    assert {"piece", "channels"} <= set(runs.declared_parameters("01_parse"))
    assert {"temperature", "top_k", "n_events", "seed"} <= set(runs.declared_parameters("04_generate"))


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter"):
        runs.run_series({"temprature": 0.9}, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_sweep_keeps_going_past_a_failing_point_and_tabulates(tmp_path, monkeypatch):
    def fake_series(params, out, **_):
        if params["temperature"] > 1:
            raise RuntimeError("boom at high temperature")
        RunDir(out).update_metrics("train", {"val_nll": 4.0 + params["temperature"]})

    monkeypatch.setattr(runs, "run_series", fake_series)
    summary = runs.sweep({"temperature": [0.5, 2.0, 1.0]}, tmp_path, log=lambda *_: None)
    rows = list(csv.DictReader(summary.open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert [r["train.val_nll"] for r in rows] == ["4.5", "", "5.0"]
    assert "boom at high temperature" in rows[1]["error"]
    assert "boom" in (tmp_path / "run_001" / "error.txt").read_text()
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_cli_values_are_parsed_as_yaml():
    assert runs._value("0.5") == 0.5 and runs._value("[0, 1]") == [0, 1]
    assert runs._value("null") is None and runs._value("log") == "log"
