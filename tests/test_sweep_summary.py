"""A sweep's summary shows what the sweep changed, and its progress is one line per event.

``summary.png``: each swept parameter against the measures it can move (the parameter table
says which notebooks take it), the other swept parameters as lines, failed points in the
title; the facets' data is checked against each run's metrics.json. The lines: a real 2-job
sweep (the pool's processes, the command line) with a stand-in for the notebooks, whose
stdout is written slowly, one write at a time, as an unbuffered terminal takes it.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from midilstm import params as parameters
from midilstm import runs, sweep_plot, sweeps
from midilstm.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
NLL = "train.val_nll"
SAMPLES = ["evaluate.samples_mean.polyphony", "evaluate.samples_mean.ngram_repetition",
           "evaluate.samples_mean.scale_consistency", "evaluate.max_copied_fraction"]


def fake_metrics(params: dict) -> dict:
    """What 03 and 05 would record, each measure moved by the parameters that move it."""
    t, bins, hidden = (params.get("temperature", 1.0), params.get("n_time_bins", 32),
                       params.get("hidden_size", 64))
    return {"train": {"val_nll": round(4 + hidden / 100 + bins / 1000, 4), "best_epoch": 3},
            "evaluate": {"samples_mean": {"polyphony": round(2 * t + bins / 100, 4),
                                          "ngram_repetition": round(t / 10, 4),
                                          "scale_consistency": round(1 - t / 10 - bins / 1000, 4)},
                         "max_copied_fraction": round(0.01 * t + hidden / 10_000, 4)}}


@pytest.fixture
def fake_series(monkeypatch):
    def fake(params, out, *, series=runs.SERIES, **_):
        if params.get("temperature", 1) > 1.5 and "04_generate" in series:
            raise RuntimeError("boom at high temperature")
        if "04_generate" in series:
            RunDir(out).save_json("metrics.json", fake_metrics(params))
        return Path(out)

    monkeypatch.setattr(sweeps, "run_series", fake)


def run_sweep(tmp_path, grid):
    result = sweeps.sweep(grid, tmp_path, log=lambda *_: None)
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"
    return result, sweep_plot.summary_figure(result.rows, list(grid))


def drawn(fig) -> dict:
    """{(parameter, measure title): {legend label: [(x, y), ...]}} of the figure's facets."""
    out = {}
    for ax in fig.axes:
        if ax.axison and ax.get_gid():
            out[(ax.get_xlabel(), ax.get_title())] = {
                line.get_label(): list(zip(line.get_xdata(), line.get_ydata()))
                for line in ax.get_lines()}
    return out


def label(key: str) -> str:
    return next(m.label for m in sweep_plot.MEASURES if m.key == key)


def recorded(tmp_path, run: str, key: str):
    value = json.loads((tmp_path / run / "metrics.json").read_text())
    for part in key.split("."):
        value = value[part]
    return value


# --- which measures a parameter can move -----------------------------------------------------------

def test_the_parameter_table_decides_what_each_parameter_can_move():
    for name, spec in parameters.PARAMETERS.items():
        keys = [m.key for m in sweep_plot.moved_by(name)]
        trains = bool(set(spec.notebooks) & set(runs.UPSTREAM))  # as sweeps shares 01..03
        assert (NLL in keys) == trains, name
        assert (keys[-len(SAMPLES):] == SAMPLES) == (trains or "04_generate" in spec.notebooks), name
    assert [m.key for m in sweep_plot.moved_by("temperature")] == SAMPLES
    assert [m.key for m in sweep_plot.moved_by("hidden_size")] == [NLL, *SAMPLES]
    assert sweep_plot.moved_by("grid_events") == []  # 05's own grid: none of these


def test_a_temperature_sweep_plots_the_sample_measures_against_it_and_no_nll(tmp_path, fake_series):
    result, fig = run_sweep(tmp_path, {"temperature": [1.2, 0.8]})
    facets = drawn(fig)
    assert list(facets) == [("temperature", label(k)) for k in SAMPLES]
    assert not any(title == label(NLL) for _, title in facets)
    for key in SAMPLES:  # x in order, whatever the grid's; y as metrics.json holds it
        (points,) = facets[("temperature", label(key))].values()
        runs_by_t = {r["temperature"]: r["run"] for r in result.rows}
        assert points == [(t, recorded(tmp_path, runs_by_t[t], key)) for t in (0.8, 1.2)]
    assert fig.axes[0].get_legend() is None  # one line: nothing to tell apart
    assert fig.texts[0].get_text().startswith("2 of 2 points ok")  # the suptitle


def test_a_training_parameter_shows_the_held_out_nll_and_the_samples(tmp_path, fake_series):
    result, fig = run_sweep(tmp_path, {"hidden_size": [8, 16], "temperature": [1.0]})
    facets = drawn(fig)
    assert list(facets) == [("hidden_size", label(k)) for k in [NLL, *SAMPLES]]
    (points,) = facets[("hidden_size", label(NLL))].values()
    assert points == [(8, recorded(tmp_path, "run_000", NLL)), (16, recorded(tmp_path, "run_001", NLL))]
    assert "with temperature=1.0" in fig.texts[0].get_text()  # what every point shares


def test_two_swept_parameters_give_a_row_each_with_the_other_as_lines(tmp_path, fake_series):
    result, fig = run_sweep(tmp_path, {"temperature": [0.8, 1.2], "n_time_bins": [16, 32]})
    facets = drawn(fig)
    assert list(facets) == ([("temperature", label(k)) for k in SAMPLES]
                            + [("n_time_bins", label(k)) for k in [NLL, *SAMPLES]])
    run_of = {(r["temperature"], r["n_time_bins"]): r["run"] for r in result.rows}
    for key in SAMPLES:
        lines = facets[("temperature", label(key))]
        assert lines == {f"n_time_bins={b}": [(t, recorded(tmp_path, run_of[t, b], key))
                                              for t in (0.8, 1.2)] for b in (16, 32)}
    for key in [NLL, *SAMPLES]:
        lines = facets[("n_time_bins", label(key))]
        assert lines == {f"temperature={t}": [(b, recorded(tmp_path, run_of[t, b], key))
                                              for b in (16, 32)] for t in (0.8, 1.2)}
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert [[t.get_text() for t in legend.get_texts()] for legend in legends] == [
        ["n_time_bins=16", "n_time_bins=32"], ["temperature=0.8", "temperature=1.2"]]


def test_failed_points_are_named_in_the_title_and_drawn_as_gaps(tmp_path, fake_series):
    result, fig = run_sweep(tmp_path, {"temperature": [0.8, 2.0, 1.2]})
    assert result.failed == 1
    title = fig.texts[0].get_text()
    assert title.startswith("2 of 3 points ok; 1 failed: run_001 (temperature=2.0)"), title
    ax = next(ax for ax in fig.axes if ax.get_title() == label(SAMPLES[0]))
    assert list(ax.get_lines()[0].get_xdata()) == [0.8, 1.2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.8", "1.2", "2"]  # 2.0 is on the axis


def test_a_one_point_sweep_draws_its_point(tmp_path, fake_series):
    _, fig = run_sweep(tmp_path, {"temperature": [0.9]})
    facets = drawn(fig)
    assert list(facets) == [("temperature", label(k)) for k in SAMPLES]
    assert all(len(line) == 1 for lines in facets.values() for line in lines.values())


def test_values_that_are_not_numbers_get_a_categorical_axis(tmp_path, fake_series):
    _, fig = run_sweep(tmp_path, {"top_k": [None, 5], "arch": ["lstm", "transformer"]})
    ax = next(ax for ax in fig.axes if ax.get_xlabel() == "top_k")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["null", "5"]
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[0, 1], [0, 1]]
    ax = next(ax for ax in fig.axes if ax.get_xlabel() == "arch")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lstm", "transformer"]


def test_a_parameter_that_moves_none_of_the_measures_says_so(tmp_path, fake_series):
    _, fig = run_sweep(tmp_path, {"grid_events": [10, 20]})
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert ax.get_xlabel() == "grid_events" and not ax.get_lines()
    assert "moves neither the held-out NLL" in " ".join(t.get_text() for t in ax.texts)


# --- one line per event ----------------------------------------------------------------------------

class Writes:
    """A stream that keeps each write apart."""

    def __init__(self):
        self.writes = []

    def write(self, text):
        self.writes.append(text)

    def flush(self):
        pass


def test_each_event_is_one_write_of_one_line(tmp_path, monkeypatch):
    out, err = Writes(), Writes()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    def fails(params, path, *, warn, **_):
        warn("skipped a\nb.mid: not a MIDI file")  # a file name with a line break in it
        raise RuntimeError("boom\nand more")

    monkeypatch.setattr(sweeps, "run_series", fails)
    assert sweeps._run_point(({"temperature": 1.0}, tmp_path / "run_000", runs.SERIES, "new", None))
    assert out.writes[0].startswith("[run_000] 01_parse..05_evaluate starts: temperature=1.0")
    assert out.writes[1].startswith("[run_000] failed: RuntimeError: boom")
    assert err.writes == ["[run_000] skipped a\\nb.mid: not a MIDI file\n"]
    for text in out.writes + err.writes:
        assert text.endswith("\n") and text.count("\n") == 1, text


TWO_JOBS = """
import io, multiprocessing, os, sys, time
from pathlib import Path
from midilstm import sweeps
from midilstm.cli import main

class Slow(io.RawIOBase):  # an unbuffered terminal that takes its time: each write apart
    def writable(self):
        return True
    def write(self, data):
        n = os.write(1, bytes(data))
        time.sleep(0.05)
        return n

sys.stdout = io.TextIOWrapper(Slow(), write_through=True)
both = multiprocessing.Barrier(2)  # the two points end together, in their own processes

def fake(params, out, *, series, **_):
    if "04_generate" in series:
        both.wait(timeout=60)
    return Path(out)

sweeps.run_series = fake
sys.exit(main(["sweep", "--out", sys.argv[1], "--jobs", "2", "-p", "temperature", "0.8", "1.2"]))
"""
EVENT = re.compile(r"(sweep: 2 points into \S+|\[run_00[01]\] (01_parse\.\.03_train|04_generate\."
                   r"\.05_evaluate) (starts: .*|done)|2 of 2 points ok|summary: \S+ \(and summary\.png\))")


def test_a_two_job_sweep_prints_one_line_per_event(tmp_path):
    proc = subprocess.run([sys.executable, "-c", TWO_JOBS, str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line for line in lines if not EVENT.fullmatch(line)] == [], proc.stdout
    events = sorted(line.split(":")[0] for line in lines if line.startswith("[run_00"))
    assert events == ["[run_000] 01_parse..03_train done", "[run_000] 01_parse..03_train starts",
                      "[run_000] 04_generate..05_evaluate done",
                      "[run_000] 04_generate..05_evaluate starts",
                      "[run_001] 04_generate..05_evaluate done",
                      "[run_001] 04_generate..05_evaluate starts"], proc.stdout
