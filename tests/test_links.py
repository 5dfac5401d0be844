"""Never through a link (issue 18, item 1): nothing a run writes, deletes, locks or appends to in
its directory is reached through a symbolic link. Each test plants a link to a victim file or
folder in tmp_path, does what the audit did, and checks that the victim's bytes are unchanged
and that the refusal is one line naming the link."""
import ast
import hashlib
import os
from pathlib import Path

import numpy as np
import papermill
import pytest

from midilstm import files, params, rundir, runs, sweeps
from midilstm.cli import main
from midilstm.errors import RunDirError
from midilstm.events import make_events
from midilstm.export import write_midi
from midilstm.lock import LOCK_ENV
from midilstm.rundir import RunDir


@pytest.fixture(scope="module")
def defaults():
    """Each notebook's own default parameters (without run_dir), as papermill reads them."""
    out = {}
    for name in params.SERIES:
        cell = papermill.inspect_notebook(str(runs.NOTEBOOK_DIR / f"{name}.ipynb"))
        out[name] = {k: ast.literal_eval(v["default"]) for k, v in cell.items() if k != "run_dir"}
    return out


@pytest.fixture(autouse=True)
def no_lock_token(monkeypatch):
    monkeypatch.delenv(LOCK_ENV, raising=False)


@pytest.fixture
def victim(tmp_path):
    """Someone else's folder: a MIDI sample, a notebook, a log and a 3,893-byte file."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "sample_0.mid").write_bytes(b"MThd victim's own sample")
    (folder / "sample_1.wav").write_bytes(b"RIFF victim's own audio")
    (folder / "01_parse.ipynb").write_text('{"victim": true}')
    (folder / "kernel.log").write_text("victim's log\n")
    (folder / "notes.txt").write_text("victim's notes")
    (folder / "precious.bin").write_bytes(os.urandom(3893))
    return folder


def fingerprint(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def a_run(tmp_path):
    """A run directory holding a finished-looking run (a manifest of ours)."""
    run = RunDir(tmp_path / "run")
    run.save_json("manifest.json", {"status": {"state": "complete"}})
    return run


def refused(call) -> str:
    with pytest.raises(RunDirError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and "symbolic link" in text and "refusing" in text, text
    return text


def cli_refusal(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# --- the lock --------------------------------------------------------------------------------------

def test_a_symlinked_lock_is_refused_and_its_target_never_truncated(a_run, victim, capsys,
                                                                    defaults):
    before = fingerprint(victim)
    (a_run / ".midilstm.lock").symlink_to(victim / "precious.bin")
    assert ".midilstm.lock is a symbolic link" in refused(lambda: a_run.lock().__enter__())
    refused(lambda: a_run.begin("01_parse", defaults["01_parse"]))  # a notebook looking at the lock: refused too
    err = cli_refusal(["run", "--out", str(a_run.path), "--resume"], capsys)
    assert ".midilstm.lock is a symbolic link" in err and str(victim / "precious.bin") in err
    assert fingerprint(victim) == before and len((victim / "precious.bin").read_bytes()) == 3893


def test_a_lock_that_is_a_hard_link_or_a_fifo_is_refused(a_run, victim):
    os.link(victim / "precious.bin", a_run / ".midilstm.lock")
    with pytest.raises(RunDirError, match="hard link"):
        a_run.lock().__enter__()
    (a_run / ".midilstm.lock").unlink()
    os.mkfifo(a_run / ".midilstm.lock")
    with pytest.raises(RunDirError, match="not a regular file"):
        a_run.lock().__enter__()
    assert len((victim / "precious.bin").read_bytes()) == 3893


# --- generated/, notebooks/, kernel.log --------------------------------------------------------

@pytest.mark.parametrize("argv", [["--force"], ["--resume", "--from", "04_generate"]])
def test_a_symlinked_generated_folder_is_refused_before_anything_runs(a_run, victim, capsys, argv):
    before = fingerprint(victim)
    (a_run / "generated").symlink_to(victim, target_is_directory=True)
    err = cli_refusal(["run", "--out", str(a_run.path), *argv], capsys)
    assert "generated is a symbolic link" in err and str(victim) in err
    assert fingerprint(victim) == before


def test_nothing_writes_or_deletes_through_a_symlinked_generated_folder(a_run, victim, defaults):
    before = fingerprint(victim)
    (a_run / "generated").symlink_to(victim, target_is_directory=True)
    events = make_events([(60, 64, 0.0), (62, 64, 0.5)])
    for call in (lambda: write_midi(events, a_run / "generated" / "sample_0.mid"),  # notebook 04
                 lambda: a_run.fresh_folder("generated"),
                 a_run._remove_artefacts,  # run --force
                 lambda: a_run.prepare("force"), lambda: a_run.prepare("resume"),
                 lambda: a_run.begin("04_generate", defaults["04_generate"]),
                 lambda: a_run.refuse_links()):
        assert "generated is a symbolic link" in refused(call)
    assert fingerprint(victim) == before


def test_a_symlinked_sample_inside_generated_is_refused(a_run, victim):
    before = fingerprint(victim)
    (a_run / "generated").mkdir()
    (a_run / "generated" / "sample_0.mid").symlink_to(victim / "sample_0.mid")
    events = make_events([(60, 64, 0.0)])
    text = refused(lambda: write_midi(events, a_run / "generated" / "sample_0.mid"))
    assert "generated/sample_0.mid is a symbolic link" in text
    assert "generated/sample_0.mid" in refused(lambda: a_run.prepare("resume"))
    a_run.fresh_folder("generated")  # removes the link itself, never its target
    assert not (a_run / "generated" / "sample_0.mid").exists()
    assert fingerprint(victim) == before


def test_a_symlinked_notebooks_folder_or_kernel_log_is_refused(a_run, victim, capsys):
    before = fingerprint(victim)
    (a_run / "notebooks").symlink_to(victim, target_is_directory=True)
    err = cli_refusal(["run", "--out", str(a_run.path), "--resume"], capsys)
    assert "notebooks is a symbolic link" in err
    refused(lambda: runs._executed_notebook(a_run, "01_parse").__enter__())
    (a_run / "notebooks").unlink()
    (a_run / "notebooks").mkdir()
    (a_run / "notebooks" / "kernel.log").symlink_to(victim / "kernel.log")
    assert "notebooks/kernel.log is a symbolic link" in refused(
        lambda: files.open_append(a_run / "notebooks" / "kernel.log", a_run.path).__enter__())
    err = cli_refusal(["run", "--out", str(a_run.path), "--resume"], capsys)
    assert "kernel.log is a symbolic link" in err
    (a_run / "notebooks" / "kernel.log").unlink()
    (a_run / "notebooks" / "01_parse.ipynb").symlink_to(victim / "01_parse.ipynb")
    assert "01_parse.ipynb is a symbolic link" in refused(lambda: a_run.prepare("resume"))
    assert fingerprint(victim) == before


def test_the_executed_notebook_is_written_into_place_from_a_file_we_made(a_run):
    with runs._executed_notebook(a_run, "01_parse") as tmp:
        assert tmp.parent == a_run / "notebooks" and tmp.is_file() and not tmp.is_symlink()
        tmp.write_text('{"cells": [], "metadata": {"papermill": {"output_path": "x"}}}')
    written = a_run / "notebooks" / "01_parse.ipynb"
    assert '"output_path": "' + str(written) in written.read_text()
    assert [p.name for p in (a_run / "notebooks").iterdir()] == ["01_parse.ipynb"]


# --- the run's own files, and containment ------------------------------------------------------

@pytest.mark.parametrize("name", rundir.OUR_FILES)
def test_a_symlinked_file_of_ours_is_never_written_through(a_run, victim, name):
    before = fingerprint(victim)
    (a_run / name).unlink(missing_ok=True)
    (a_run / name).symlink_to(victim / "precious.bin")
    for call in (lambda: a_run.save_json(name, {"x": 1}),
                 lambda: a_run.save_pieces(name, [np.zeros(2)], ["a"]),
                 lambda: files.write_bytes_atomic(a_run / name, b"overwritten"),
                 lambda: a_run.prepare("resume")):
        assert f"{name} is a symbolic link" in refused(call)
    assert fingerprint(victim) == before


def test_a_symlinked_manifest_is_not_followed_by_set_status(a_run, victim):
    (a_run / "manifest.json").unlink()
    (a_run / "manifest.json").symlink_to(victim / "precious.bin")
    refused(lambda: a_run.set_status("running"))
    assert len((victim / "precious.bin").read_bytes()) == 3893


def test_every_write_is_checked_to_stay_inside_the_run(a_run, tmp_path):
    for call in (lambda: a_run.save_json("../outside.json", {}),
                 lambda: files.write_bytes_atomic(a_run / "generated" / ".." / ".." / "x", b"",
                                                  root=a_run.path),
                 lambda: files.remove_in(a_run.path, "../victim")):
        with pytest.raises(RunDirError, match="outside the run directory"):
            call()
    assert not (tmp_path / "outside.json").exists() and not (tmp_path / "x").exists()


def test_a_folder_on_the_way_that_is_a_link_is_refused_at_any_depth(a_run, victim):
    (a_run / "deep").mkdir()
    (a_run / "deep" / "er").symlink_to(victim, target_is_directory=True)
    text = refused(lambda: files.write_bytes_atomic(a_run / "deep" / "er" / "f.bin", b"x"))
    assert text.startswith(f"{a_run._label()}: deep/er is a symbolic link (to {victim})")
    assert not (victim / "f.bin").exists()


def test_the_run_directory_itself_may_be_a_link_the_user_made(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "named").symlink_to(tmp_path / "real", target_is_directory=True)
    run = RunDir(tmp_path / "named")
    run.save_json("metrics.json", {"a": 1})
    with run.lock():
        run.prepare("resume")
    assert (tmp_path / "real" / "metrics.json").is_file()


def test_stale_temporaries_are_cleaned_only_in_our_own_folders(a_run, victim):
    (victim / ".sample_0.mid.999999999.abcdef12.tmp").write_text("victim's")
    before = fingerprint(victim)
    (a_run / "generated").symlink_to(victim, target_is_directory=True)
    refused(lambda: a_run.prepare("resume"))
    refused(a_run._remove_temporaries)
    assert fingerprint(victim) == before


# --- sweeps and copies ---------------------------------------------------------------------------

def test_sweep_summary_and_error_files_are_not_written_through_links(tmp_path, victim, monkeypatch):
    before = fingerprint(victim)

    def fake(params, out, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr(sweeps, "run_series", fake)
    out = tmp_path / "s"
    (out / "run_000").mkdir(parents=True)
    (out / "run_000" / "error.txt").symlink_to(victim / "notes.txt")
    (out / "summary.csv").symlink_to(victim / "precious.bin")
    with pytest.raises(RunDirError, match="summary.csv is a symbolic link"):
        sweeps.sweep({"temperature": [0.5]}, out, mode="resume", log=lambda *_: None)
    (out / "summary.csv").unlink()
    (out / "summary.png").symlink_to(victim / "sample_1.wav")
    with pytest.raises(RunDirError, match="summary.png is a symbolic link"):
        sweeps.sweep({"temperature": [0.5]}, out, mode="resume", log=lambda *_: None)
    assert fingerprint(victim) == before


def test_copying_an_upstream_run_never_writes_through_a_link(tmp_path, victim):
    source = RunDir(tmp_path / "a")
    source.save_json("codec.json", {"x": 1})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "codec.json").symlink_to(victim / "precious.bin")
    with pytest.raises(RunDirError, match="codec.json is a symbolic link"):
        runs._copy_run(source.path, tmp_path / "b")
    assert len((victim / "precious.bin").read_bytes()) == 3893
