"""Runs and sweeps: parameters are plain data (never code), checked before anything runs; grids
have one meaning; sweeps share upstream work and report failures; a run holds its directory,
records its status and shows its progress.

Most tests use a stand-in for the notebooks; two run real ones (01_parse alone, and one small
sweep that runs the whole series)."""
import ast
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from papermill.translators import PythonTranslator

from midilstm import refresh, runs, sweeps, values
from midilstm.cli import main
from midilstm.errors import ParameterError
from midilstm.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = "!!omap [ 'x\", __import__(\"os\").system(\"touch PWNED\"), \"': 1 ]"
TAGGED = [PAYLOAD, "!!python/object/apply:os.system ['touch PWNED']", "!x foo", "!!str 5",
          "!!binary aGk=", "!!set {a: null}", "[1, !!omap [a: 1]]", "{a: !!python/name:os.system}",
          "! plain", "&anchor [1]", "[&a 1, *a]"]
# strings that would break out of a naive literal: quotes, triple quotes, backslashes, newlines
INJECTIONS = ['"', "'", '"""', "'''", "\\", '\\"', "a\nb", "a\r\nb", "\\n", '"; import os #',
              'x"); __import__("os").system("touch PWNED"); ("', "'''; __import__('os') #",
              "\\N{BULLET}", "\u2028", "é ✓", "{x}", "# comment", "\x00", "\ud800"]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "midilstm", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# --- parameters are data ---------------------------------------------------------------------------

def test_values_are_plain_yaml():
    assert values.parse_value("0.5", "x") == 0.5 and values.parse_value("[0, 1]", "x") == [0, 1]
    assert values.parse_value("null", "x") is None and values.parse_value("log", "x") == "log"
    assert values.parse_value("2024-01-01", "x") == "2024-01-01"  # a date stays the text it was
    assert values.parse_value("{a: [1, 2.5]}", "x") == {"a": [1, 2.5]}


@pytest.mark.parametrize("text", TAGGED)
def test_any_yaml_tag_anchor_or_alias_is_refused_naming_the_parameter(text):
    with pytest.raises(ParameterError) as err:
        values.parse_value(text, "piece")
    assert str(err.value).startswith("parameter piece: ") and "\n" not in str(err.value)


class Sneaky(str):
    def __repr__(self):
        return '""; __import__("os")'


@pytest.mark.parametrize("value", [("a", 1), {1, 2}, {1: "a"}, [{"k": ("t",)}], Sneaky("x"),
                                   b"bytes", 1j, object()])
def test_only_plain_data_reaches_a_notebook(value):
    with pytest.raises(ParameterError, match="^parameter p: "):
        values.plain(value, "p")


@pytest.mark.parametrize("text", INJECTIONS)
def test_strings_and_keys_reach_the_notebook_unchanged(text):
    """What papermill writes into the notebook is a literal that evaluates to the value itself."""
    value = values.plain({"list": [text, 1, None, True, 2.5], text: {text: text}}, "p")
    code = PythonTranslator.codify({"p": value, "q": text})
    tree = ast.parse(code)
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert assigned == {"p": value, "q": text}


def test_a_real_notebook_receives_a_hostile_string_unchanged(tmp_path, monkeypatch):
    """Through papermill into 01_parse: the string arrives as itself (no file of that name, so
    the run fails, and says so in the manifest), and nothing it spells out runs."""
    monkeypatch.chdir(tmp_path)
    hostile = 'x"""\'\'\'\\"); __import__("os").system("touch PWNED"); ("\n#{a}\u2028'
    with pytest.raises(Exception) as err:
        runs.run_series({"piece": hostile}, tmp_path / "r", series=("01_parse",),
                        log=lambda *_: None)
    executed = json.loads((tmp_path / "r" / "notebooks" / "01_parse.ipynb").read_text())
    injected = next(c for c in executed["cells"] if "injected-parameters" in c["metadata"]["tags"])
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(injected["source"])).body}
    assert values["piece"] == hostile
    assert not list(tmp_path.rglob("PWNED"))
    status = json.loads((tmp_path / "r" / "manifest.json").read_text())["status"]
    assert status["state"] == "failed" and status["error"] == runs.one_line(err.value)


def test_payload_through_run_and_grid_creates_nothing(tmp_path):
    run = cli("run", "--out", "r", "-p", "piece", PAYLOAD, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("error: parameter piece: ") and run.stderr.count("\n") == 1
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"temperature: [0.8]\npiece: {PAYLOAD}\n")
    sweep = cli("sweep", "--out", "s", "--grid", "grid.yaml", cwd=tmp_path)
    assert sweep.returncode == 2
    assert sweep.stderr.startswith("error: parameter piece: grid.yaml: YAML tags")
    assert sorted(os.listdir(tmp_path)) == ["grid.yaml"]  # no PWNED, and no run started


@pytest.mark.parametrize("args, name", [
    (["-p", "epochs", "ten"], "epochs"), (["-p", "top_p", "2"], "top_p"),
    (["-p", "epochs", "0"], "epochs"), (["-p", "temperature", "0"], "temperature"),
    (["-p", "run_dir", "x"], "run_dir"), (["-p", "temprature", "1"], "temprature")])
def test_bad_parameters_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, args, name):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: parameter {name}: ") and err.count("\n") == 1
    assert main(["sweep", "--out", "s", "-p", *args[1:]]) == 2
    assert capsys.readouterr().err.startswith(f"error: parameter {name}: ")
    assert os.listdir(tmp_path) == []  # not even a default run directory


# --- grids ----------------------------------------------------------------------------------------

def test_grid_files_one_meaning(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("piece: ab\ntemperature: 0.8\nchannels: [[0], [1, 2]]\ntop_k: [5, null]\n")
    assert sweeps.load_grid(path) == {"piece": ["ab"], "temperature": [0.8],
                                    "channels": [[0], [1, 2]], "top_k": [5, None]}


@pytest.mark.parametrize("text, says", [
    ("- a\n- b\n", "not a list"), ("3\n", "not a int"), ("", "not an empty file"),
    ("temperature: []\n", "no values"), ("{1: [2]}\n", "names are strings"), ("a: [b\n", "YAML")])
def test_bad_grid_files_give_one_line_naming_the_file(tmp_path, capsys, text, says):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    assert main(["sweep", "--out", str(tmp_path / "s"), "--grid", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and says in err, err
    assert not (tmp_path / "s").exists()


def test_the_example_grid_is_valid():
    grid = sweeps.load_grid(ROOT / "examples" / "grid.yaml")
    points = sweeps.grid_points(grid)
    assert 2 <= len(points) <= 8


# --- sweeps with a stand-in for the notebooks ------------------------------------------------------

@pytest.fixture
def fake_series(monkeypatch):
    calls = []

    def fake(params, out, *, series=runs.SERIES, mode="new", copy_from=None, **_):
        calls.append((Path(out).name, tuple(series), mode, copy_from and Path(copy_from).name))
        if params.get("temperature", 1) > 1.5 and "04_generate" in series:
            raise RuntimeError("boom at high temperature")
        if params.get("n_time_bins") == 7:
            raise RuntimeError("boom in 02")
        RunDir(out).save_json("metrics.json", {"train": {"val_nll": 4.0 + params.get("temperature", 1)}})
        return Path(out)

    monkeypatch.setattr(sweeps, "run_series", fake)
    return calls


def test_sweep_keeps_going_past_a_failing_point_and_tabulates(tmp_path, fake_series):
    result = sweeps.sweep({"temperature": [0.5, 2.0, 1.0]}, tmp_path, log=lambda *_: None)
    rows = list(csv.DictReader(result.summary.open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"] and result.failed == 1
    assert [r["train.val_nll"] for r in rows] == ["4.5", "", "5.0"]
    assert "boom at high temperature" in rows[1]["error"]
    assert "boom" in (tmp_path / "run_001" / "error.txt").read_text()
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_points_sharing_upstream_parameters_share_one_parse_encode_and_training(tmp_path, fake_series):
    sweeps.sweep({"temperature": [0.5, 1.0], "n_time_bins": [16, 32]}, tmp_path, log=lambda *_: None)
    up = [c for c in fake_series if c[1] == runs.UPSTREAM]
    down = sorted(c for c in fake_series if c[1] == runs.SERIES[3:])
    assert [c[0] for c in up] == ["run_000", "run_001"]  # one per n_time_bins
    assert down == [("run_000", runs.SERIES[3:], "resume", None),
                    ("run_001", runs.SERIES[3:], "resume", None),
                    ("run_002", runs.SERIES[3:], "new", "run_000"),
                    ("run_003", runs.SERIES[3:], "new", "run_001")]


def test_an_upstream_failure_fails_its_group_once(tmp_path, fake_series):
    result = sweeps.sweep({"temperature": [0.5, 1.0], "n_time_bins": [7, 32]}, tmp_path,
                        log=lambda *_: None)
    assert [r["status"] for r in result.rows] == ["failed", "ok", "failed", "ok"]
    assert "not run: run_000 failed" in result.rows[2]["error"]
    assert sum(c[0] == "run_002" for c in fake_series) == 0


def test_sweep_exit_status_counts_failed_points(tmp_path, fake_series, capsys):
    assert main(["sweep", "--out", str(tmp_path), "-p", "temperature", "0.5", "2.0"]) == 1
    captured = capsys.readouterr()
    assert "[run_000]" in captured.out and "starts" in captured.out  # each point as it runs
    assert "1 of 2 points failed" in captured.err
    assert main(["sweep", "--out", str(tmp_path / "b"), "-p", "temperature", "0.5"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--out", str(tmp_path / "b"), "-p", "temperature", "0.5"]) == 2  # refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a sweep: use --force" in err
    assert main(["sweep", "--out", str(tmp_path / "b"), "--force", "-p", "temperature", "0.5"]) == 0


# --- real notebooks --------------------------------------------------------------------------------

def test_progress_lines_are_passed_on():
    seen = []
    lines = runs.ProgressLines("[r] 03_train", seen.append)
    lines.write("model: 3 layers\nepoch 1/20 loss 4.0")
    lines.write(" 900 events/s\nepoch 2/20 loss 3.5\r")
    assert seen == ["[r] 03_train: epoch 1/20 loss 4.0 900 events/s",
                    "[r] 03_train: epoch 2/20 loss 3.5"]


def test_skipped_files_are_listed_one_line_each(tmp_path):
    run = RunDir(tmp_path)
    run.save_parse_report([], [{"path": "songs/b.mid", "reason": "not a MIDI file"},
                               {"path": "c.mid", "reason": "truncated"}])
    lines = []
    runs._report_skipped(run, lines.append)
    assert lines == ["skipped songs/b.mid: not a MIDI file", "skipped c.mid: truncated"]


def test_a_real_run_holds_its_directory_and_records_its_status(tmp_path, monkeypatch, build_midi):
    """01_parse alone, from the folder where the command is typed: skipped files are listed on
    stderr with the paths as typed, files are -rw-r--r-- under umask 022, a second run into the
    directory is refused, and the status says complete."""
    from conftest import off, on

    monkeypatch.chdir(tmp_path)
    (tmp_path / "songs").mkdir()
    build_midi(tmp_path / "songs", name="a.mid", tracks=[[on(60, 80), off(60, t=480)] * 8])
    (tmp_path / "songs" / "broken.mid").write_bytes(b"not midi")
    old = os.umask(0o022)
    try:
        result = cli("run", "--out", "r", "--to", "01_parse", "-p", "piece", "songs", cwd=tmp_path)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert "IPKernelApp" not in result.stderr and "Traceback" not in result.stderr
    skipped = RunDir(tmp_path / "r").parse_report()["skipped"]
    assert [s["path"] for s in skipped] == ["songs/broken.mid"]  # as typed, not absolute
    assert f"skipped songs/broken.mid: {skipped[0]['reason']}" in result.stderr.splitlines()
    assert "01_parse starts" in result.stdout and "01_parse done in" in result.stdout
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"]["state"] == "complete"
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file() and p.name != ".midilstm.lock"]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o644"}
    again = cli("run", "--out", "r", "--to", "01_parse", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and again.stderr.count("\n") == 1
    with RunDir(tmp_path / "r").lock():  # another run holds it: refused, whatever the flags
        held = cli("run", "--out", "r", "--force", "--to", "01_parse", cwd=tmp_path)
    assert held.returncode == 2 and "another run is using" in held.stderr
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["status"]["state"] == "complete"


def test_ctrl_c_gives_one_line_exit_130_and_marks_the_run_interrupted(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "midilstm", "run", "--out", "r"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:
        if "03_train starts" in line:  # inside torch's native code: the hardest moment
            break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().count("\n") == 0 and err.startswith("interrupted: r keeps"), err
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"]["state"] == "interrupted"
    assert (tmp_path / "r" / "events.npz").exists()  # what finished is kept
    assert (tmp_path / "r" / "notebooks" / "kernel.log").exists()  # the kernels' own messages


@pytest.mark.slow
def test_a_real_sweep_trains_once_for_points_that_differ_only_in_sampling(tmp_path):
    """The whole series, small: two temperatures share one parse, encoding and model."""
    small = {"epochs": 2, "n_events": 40, "n_variations": 1, "grid_events": 30,
             "grid_variations": 1, "temperatures": "[1.0]", "top_ks": "[0]"}
    result = cli("sweep", "--out", "s", "-p", "temperature", "0.8", "1.2",
                 *(a for k, v in small.items() for a in ("-p", k, v)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "IPKernelApp" not in result.stderr + result.stdout and "Warning" not in result.stderr
    rows = list(csv.DictReader((tmp_path / "s" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    a, b = tmp_path / "s" / "run_000", tmp_path / "s" / "run_001"
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["copied_from"] == {"run": "../run_000", "steps": list(runs.UPSTREAM)}
    assert manifest["status"]["state"] == "complete" and "02_encode" in manifest["wall_seconds"]
    step = manifest["steps"]["04_generate"]
    assert step.get("params", step)["temperature"] == 1.2  # (older notebooks: the params alone)
    assert (b / "generated").is_dir() and not (b / "notebooks" / "03_train.ipynb").samefile(
        a / "notebooks" / "03_train.ipynb")


# --- committed notebooks ---------------------------------------------------------------------------

def test_stable_notebooks_drop_times_durations_and_paths():
    for name in runs.SERIES:
        text = (runs.NOTEBOOK_DIR / f"{name}.ipynb").read_text()
        stable = refresh.stable_notebook(text)
        assert refresh.stable_notebook(stable) == stable
        nb = json.loads(stable)
        assert not {"start_time", "end_time", "duration", "input_path", "output_path"} & set(
            nb["metadata"].get("papermill", {}))
        assert all("execution" not in c["metadata"] and "papermill" not in c["metadata"]
                   for c in nb["cells"])
        assert [c["source"] for c in nb["cells"]] == [c["source"] for c in json.loads(text)["cells"]]
        assert str(ROOT) not in json.dumps(nb["metadata"])
        renamed = text  # a re-execution draws new random widget ids: the stable text is the same
        for model_id in set(re.findall("[0-9a-f]{32}", text)):
            renamed = renamed.replace(model_id, uuid.uuid4().hex)
        assert refresh.stable_notebook(renamed) == stable


def test_every_notebook_declares_what_the_parameter_table_says():
    import papermill

    from midilstm import params

    for name in runs.SERIES:
        declared = papermill.inspect_notebook(str(runs.NOTEBOOK_DIR / f"{name}.ipynb"))
        assert set(declared) == set(params.names(name))


def test_steps_from_and_to():
    assert runs.steps() == runs.SERIES
    assert runs.steps("03_train") == runs.SERIES[2:]
    assert runs.steps(None, "01_parse") == ("01_parse",)
    with pytest.raises(ParameterError, match="comes after"):
        runs.steps("04_generate", "02_encode")


def test_refresh_keeps_a_notebook_whose_checked_outputs_did_not_change():
    from midilstm.refresh import _checked_view

    def notebook(timing: str, fact: str) -> str:
        cell = lambda tags, text: {"cell_type": "code", "metadata": {"tags": tags}, "source": ["x"],
                                   "outputs": [{"output_type": "stream", "name": "stdout", "text": [text]}]}
        return json.dumps({"cells": [cell(["nbval-ignore-output"], timing), cell([], fact)]})

    assert _checked_view(notebook("1,000 events/s", "3 notes")) == \
        _checked_view(notebook("2,000 events/s", "3 notes"))
    assert _checked_view(notebook("1,000 events/s", "3 notes")) != \
        _checked_view(notebook("1,000 events/s", "4 notes"))
    with_figure = json.loads(notebook("1,000 events/s", "3 notes"))
    with_figure["cells"][0]["outputs"].append({"output_type": "display_data",
                                               "data": {"image/png": "iVBOR"}})
    assert _checked_view(json.dumps(with_figure)) != _checked_view(notebook("1,000 events/s", "3 notes"))


def test_refresh_force_rewrites_stale_ignored_outputs(tmp_path, monkeypatch):
    """A source edited in the file keeps the old source's ignored outputs unless forced."""
    import nbformat
    import papermill

    def notebook(printed: str) -> str:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("print(summary)")
        cell.metadata["tags"] = ["nbval-ignore-output"]
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed)]
        nb.cells = [cell]
        return nbformat.writes(nb)

    def execute(source, output, **_):  # what a real execution would print now
        Path(output).write_text(notebook("{'new_key': 8}\n"))

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(runs, "NOTEBOOK_DIR", tmp_path)
    path = tmp_path / "05_evaluate.ipynb"
    path.write_text(notebook("{'old_key': 8}\n"))
    refresh.refresh_notebooks(("05_evaluate",), log=lambda *a: None)
    assert "old_key" in path.read_text()  # unchanged as far as nbval can tell: left alone
    refresh.refresh_notebooks(("05_evaluate",), log=lambda *a: None, force=True)
    assert "new_key" in path.read_text() and "old_key" not in path.read_text()


# --- interruption leftovers -------------------------------------------------------------------

def test_a_stop_that_breaks_an_import_is_no_failure_of_the_point(tmp_path, monkeypatch):
    """SIGTERM from the parent's Ctrl-C may land inside ``import papermill`` and surface as some
    other error: the point is interrupted, not failed, and no error.txt is written."""
    def importing(*_, **__):
        try:
            sweeps._stop_worker(signal.SIGTERM, None)
        except KeyboardInterrupt:
            raise ImportError("cannot import name 'execute' from partially initialized module "
                              "'papermill'") from None

    monkeypatch.setattr(sweeps, "run_series", importing)
    with pytest.raises(KeyboardInterrupt):
        sweeps._run_point(({}, tmp_path / "run_000", runs.SERIES, "new", None))
    assert not (tmp_path / "run_000" / "error.txt").exists()


SLOW_SWEEP = """
import os, signal, sys, threading, time
from midilstm import sweeps
def slow(params, out, **_):
    import papermill  # noqa: F401  (as run_series does first)
    time.sleep(60)
sweeps.run_series = slow
threading.Timer(float(sys.argv[2]), lambda: os.killpg(0, signal.SIGINT)).start()
try:
    sweeps.sweep({"temperature": [0.5, 1.0, 1.5]}, sys.argv[1], jobs=3, log=lambda *_: None)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("delay", [0.05, 0.5])
def test_ctrl_c_while_sweep_workers_start_marks_no_point_failed(tmp_path, delay):
    proc = subprocess.run([sys.executable, "-c", SLOW_SWEEP, str(tmp_path / "s"), str(delay)],
                          capture_output=True, text=True, timeout=120, check=False,
                          start_new_session=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip().endswith("interrupted"), proc.stdout + proc.stderr
    rows = list(csv.DictReader((tmp_path / "s" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["interrupted"] * 3, rows
    assert not list((tmp_path / "s").glob("run_*/error.txt"))


def test_a_points_error_txt_goes_when_resume_completes_it(tmp_path, fake_series):
    sweeps.sweep({"temperature": [0.5, 2.0]}, tmp_path, log=lambda *_: None)
    assert (tmp_path / "run_001" / "error.txt").exists()
    (tmp_path / "run_001" / "notes.txt").write_text("the user's")
    result = sweeps.sweep({"temperature": [0.5, 1.0]}, tmp_path, mode="resume",
                          log=lambda *_: None)
    assert [r["status"] for r in result.rows] == ["ok", "ok"]
    assert not (tmp_path / "run_001" / "error.txt").exists()
    assert (tmp_path / "run_001" / "notes.txt").exists()


def test_error_lines_cut_long_numbers(tmp_path):
    class CellError(Exception):  # as papermill's: the cell's own error in ename / evalue
        ename, evalue = "MidiInputError", f"x.mid: delta {'7' * 4200} is too long\nmore"

    line = runs.one_line(CellError())
    assert line == "MidiInputError: x.mid: delta 777777...(4200 digits) is too long"
    run = RunDir(tmp_path)
    assert run.set_status("failed", line)["status"]["error"] == line
