"""Permission denied and a full disk (issue 18, item 5): one line in every command, never a
traceback; exit status 2 when the output location is refused before any work, 1 when the disk
fills up midway. Both are simulated in the process (the tests may run as root, who may write
anywhere): a folder "we may not write" refuses every create, write and mkdir below it, and a
full disk raises ENOSPC from ``os.write`` for every file (not the terminal)."""
import errno
import os
from pathlib import Path

import pytest
from conftest import off, on, tempo, write_midi_file

from midilstm import batch, failures, runs, sweeps
from midilstm.cli import main
from midilstm.lock import LOCK_ENV
from midilstm.rundir import RunDir

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@pytest.fixture(autouse=True)
def no_lock_token(monkeypatch):
    monkeypatch.delenv(LOCK_ENV, raising=False)


def _where(path, dir_fd) -> str:
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.abspath(path)


def deny_writes(monkeypatch, folder):
    """Every file created or opened for writing, and every folder made, below ``folder``
    (``folder`` itself included) fails with EACCES, as in a folder of someone else's."""
    folder = os.path.abspath(folder)
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path, dir_fd):
        where = _where(path, dir_fd)
        return where == folder or where.startswith(folder + os.sep)

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & WRITES and inside(path, dir_fd):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if inside(path, dir_fd):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def disk_full(monkeypatch):
    """``os.write`` to any file (not stdin, stdout or stderr) fails: no space left on device."""
    real_write = os.write

    def fake_write(fd, data):
        if fd > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", fake_write)


def one_line(status, argv, capsys) -> str:
    """Run the command; its exit status is ``status`` and its error one line (progress bars and
    notes before it are the work that ran)."""
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == status, err
    assert "Traceback" not in err, err
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.rstrip("\n").endswith(errors[0]), err
    return errors[0]


def song(path, n_notes=40):
    messages = [tempo(120)]
    for k in range(n_notes):
        messages += [on(60 + k % 8, 80), off(60 + k % 8, t=240)]
    return write_midi_file(path, [messages])


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    song(folder / "a.mid")
    song(folder / "b.mid", 48)
    return folder


@pytest.fixture(scope="module")
def checkpoint(songs, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["train", "--data", str(songs), "--out", str(out), "--steps", "2",
                 "--eval-every", "2", "--batch-size", "2", "--seq-len", "8",
                 "--hidden-size", "8"]) == 0
    return out


# --- permission denied: refused before any work, status 2 --------------------------------------

def test_run_into_the_default_runs_folder_we_may_not_write(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    deny_writes(monkeypatch, tmp_path)
    err = one_line(2, ["run", "--to", "01_parse"], capsys)
    assert "runs: cannot create a run directory in it (permission denied" in err.lower()


def test_run_into_a_folder_we_may_not_write(tmp_path, monkeypatch, capsys):
    (tmp_path / "r").mkdir()
    deny_writes(monkeypatch, tmp_path / "r")
    err = one_line(2, ["run", "--out", tmp_path / "r", "--to", "01_parse"], capsys)
    assert "cannot create .midilstm.lock (Permission denied)" in err


def test_sweep_into_a_folder_we_may_not_write(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweeps, "run_series", lambda *a, **k: pytest.fail("ran a point"))
    deny_writes(monkeypatch, tmp_path / "s")
    err = one_line(2, ["sweep", "--out", tmp_path / "s", "-p", "temperature", "0.5"], capsys)
    assert f"{tmp_path / 's'}: cannot create the sweep folder (permission denied" in err


def test_corpus_out_we_may_not_write(tmp_path, monkeypatch, capsys, songs):
    deny_writes(monkeypatch, tmp_path / "c")
    err = one_line(2, ["corpus", songs, "--out", tmp_path / "c", "--no-cache", "--workers", "1"],
                   capsys)
    assert "cannot create the corpus folder (permission denied" in err


def test_a_cache_we_may_not_create_is_one_line(tmp_path, monkeypatch, capsys, songs):
    deny_writes(monkeypatch, tmp_path / "cache")
    err = one_line(2, ["corpus", songs, "--out", tmp_path / "c", "--cache", tmp_path / "cache",
                       "--workers", "1"], capsys)
    assert str(tmp_path / "cache") in err and "cache" in err


def test_a_read_only_cache_still_reads_without_a_traceback(tmp_path, monkeypatch, capsys, songs):
    assert main(["corpus", str(songs), "--out", str(tmp_path / "c0"), "--cache",
                 str(tmp_path / "cache"), "--workers", "1"]) == 0
    capsys.readouterr()
    song(songs.parent / "new.mid", 30)  # not in the cache: its entry cannot be written
    deny_writes(monkeypatch, tmp_path / "cache")
    got = main(["corpus", str(songs), str(songs.parent / "new.mid"), "--out",
                str(tmp_path / "c1"), "--cache", str(tmp_path / "cache"), "--workers", "1"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and got == 0, err  # read on, uncached
    assert (tmp_path / "c1" / "corpus.json").is_file()


def test_generate_out_we_may_not_write(tmp_path, monkeypatch, capsys, checkpoint):
    deny_writes(monkeypatch, tmp_path / "g")
    err = one_line(2, ["generate", "--checkpoint", checkpoint, "--out", tmp_path / "g", "--n",
                       "1", "--events", "10"], capsys)
    assert "cannot create the output folder (permission denied" in err


def test_train_checks_its_out_before_it_trains(tmp_path, monkeypatch, capsys, songs):
    monkeypatch.setattr(batch, "train_corpus", lambda *a, **k: pytest.fail("trained first"))
    (tmp_path / "models").mkdir()
    deny_writes(monkeypatch, tmp_path / "models")
    err = one_line(2, ["train", "--data", songs, "--out", tmp_path / "models" / "m.pt"], capsys)
    assert "cannot write the folder of the checkpoint (permission denied" in err
    (tmp_path / "adir").mkdir()
    err = one_line(2, ["train", "--data", songs, "--out", tmp_path / "adir"], capsys)
    assert "cannot be used as the checkpoint: it is a folder" in err


# --- a full disk: midway, status 1 -------------------------------------------------------------

def test_corpus_output_on_a_full_disk(tmp_path, monkeypatch, capsys, songs):
    disk_full(monkeypatch)
    err = one_line(1, ["corpus", songs, "--out", tmp_path / "c", "--no-cache", "--workers", "1"],
                   capsys)
    assert "the disk is full" in err and str(tmp_path / "c") in err


def test_corpus_with_its_cache_on_a_full_disk(tmp_path, monkeypatch, capsys, songs):
    """A cache made on a full disk cannot be used: refused before reading. One that was made
    before the disk filled up reads on (its entries unwritten); the output then fails."""
    argv = ["corpus", songs, "--out", tmp_path / "c", "--cache", tmp_path / "cache",
            "--workers", "1"]
    with monkeypatch.context() as patch:
        disk_full(patch)
        assert "cache" in one_line(2, argv, capsys)
    assert main(["corpus", str(songs / "a.mid"), "--out",
                 str(tmp_path / "c0"), "--cache", str(tmp_path / "cache"), "--workers", "1"]) == 0
    capsys.readouterr()
    disk_full(monkeypatch)
    assert "the disk is full" in one_line(1, argv, capsys)


def test_train_on_a_full_disk(tmp_path, monkeypatch, capsys, songs):
    disk_full(monkeypatch)
    err = one_line(1, ["train", "--data", songs, "--out", tmp_path / "m.pt", "--steps", "2",
                       "--eval-every", "2", "--batch-size", "2", "--seq-len", "8",
                       "--hidden-size", "8"], capsys)
    assert "m.pt" in err and "the disk is full" in err
    assert not (tmp_path / "m.pt").exists()


def test_generate_on_a_full_disk(tmp_path, monkeypatch, capsys, checkpoint):
    disk_full(monkeypatch)
    err = one_line(1, ["generate", "--checkpoint", checkpoint, "--out", tmp_path / "g", "--n",
                       "1", "--events", "10"], capsys)
    assert "sample_0.mid: the disk is full" in err


def test_run_on_a_full_disk(tmp_path, monkeypatch, capsys):
    disk_full(monkeypatch)
    err = one_line(1, ["run", "--out", tmp_path / "r", "--to", "01_parse"], capsys)
    assert "the run failed" in err and "manifest.json: the disk is full" in err


def test_sweep_on_a_full_disk(tmp_path, monkeypatch, capsys):
    def fake(params, out, **_):
        RunDir(out).save_json("metrics.json", {})
        return Path(out)

    monkeypatch.setattr(sweeps, "run_series", fake)
    disk_full(monkeypatch)
    got = main(["sweep", "--out", str(tmp_path / "s"), "-p", "temperature", "0.5"])
    err = capsys.readouterr().err
    assert got == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: ") and "disk is full" in err


# --- the one-line formatter ----------------------------------------------------------------------

def test_long_numbers_are_cut_in_one_line_errors(capsys):
    huge = "9" * 4200
    text = failures.one_line(ValueError(f"delta {huge} is too long"))
    assert text == "ValueError: delta 999999...(4200 digits) is too long"
    assert runs.one_line(ValueError(huge)) == "ValueError: 999999...(4200 digits)"
    assert failures.shorten_numbers("12345678901234567890 and 123456789012345678901") == \
        "12345678901234567890 and 123456...(21 digits)"  # 20 digits stay
    from midilstm import cli

    cli._error(f"x.mid: a value of {huge}")
    assert capsys.readouterr().err == "error: x.mid: a value of 999999...(4200 digits)\n"


def test_os_errors_read_plainly():
    assert failures.os_error_text(OSError(errno.ENOSPC, "No space left on device", "/d/f")) == \
        "/d/f: the disk is full: free some space, or write elsewhere"
    assert failures.one_line(PermissionError(errno.EACCES, "Permission denied", "/x")) == \
        "PermissionError: /x: permission denied: choose a folder you may write to"


def test_student_edition_out_we_may_not_write(tmp_path, monkeypatch, capsys):
    deny_writes(monkeypatch, tmp_path / "ed")
    err = one_line(2, ["student-edition", "--out", tmp_path / "ed"], capsys)
    assert "cannot create the folder for the notebooks (permission denied" in err
