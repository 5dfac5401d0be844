"""Atomic writes: normal permissions (the umask, as open() applies it), the old file intact after
a crash or a SIGKILL, and temporary files of dead writers cleaned up."""
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from midilstm import files
from midilstm.files import remove_stale_temporaries, write_bytes_atomic, write_json_atomic


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    write_json_atomic(tmp_path / "b.json", {"k": 1})
    with open(tmp_path / "reference", "wb"):
        pass
    for name in ("a.bin", "b.json", "reference"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_bytes_atomic(tmp_path / "f", b"old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, b"new" * 1000)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f"]


KILLED_WRITER = """
import os, sys, time
from midilstm import files
def hang(fd):
    print("writing", flush=True)
    time.sleep(60)
files.os.fsync = hang
files.write_bytes_atomic(sys.argv[1], b"new" * 100000)
"""


def test_sigkill_during_a_write_keeps_the_old_file_and_the_next_write_cleans_up(tmp_path):
    path = write_bytes_atomic(tmp_path / "model.pt", b"old")
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"  # inside the write, data not yet renamed
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    writer.stdout.close()
    leftover = [p for p in tmp_path.iterdir() if p.name != "model.pt"]
    assert len(leftover) == 1 and leftover[0].name.startswith(".model.pt.")
    assert path.read_bytes() == b"old"
    write_bytes_atomic(tmp_path / "other.json", b"{}")  # any write into the directory cleans up
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "other.json"]


def test_only_dead_or_old_temporaries_of_ours_are_removed(tmp_path):
    def make(name, age_s=0.0):
        p = tmp_path / name
        p.write_bytes(b"x")
        t = time.time() - age_s
        os.utime(p, (t, t))
        return p

    live = make(f".a.mid.{os.getppid()}.0123abcd.tmp")  # a running writer (our parent process)
    mine = make(f".b.mid.{os.getpid()}.0123abcd.tmp")
    dead = make(".c.mid.999999999.0123abcd.tmp")  # no such pid
    legacy_old = make(".model.pt.k3j_x9aa.tmp", age_s=files.STALE_AFTER_S + 60)  # tempfile's name
    legacy_new = make(".model.pt.k3j_x9ab.tmp")
    old_live = make(f".d.mid.{os.getppid()}.0123abcd.tmp", age_s=files.STALE_AFTER_S + 60)
    users = [make(".notes.tmp", age_s=10 ** 6), make(".my.backup.tmp", age_s=10 ** 6),
             make("plain.0123abcd.tmp", age_s=10 ** 6)]
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, legacy_old, old_live])
    assert all(p.exists() for p in [live, mine, legacy_new, *users])


def test_cleaning_a_missing_directory_is_harmless(tmp_path):
    assert remove_stale_temporaries(tmp_path / "nope") == []
    assert write_bytes_atomic(tmp_path / "new" / "dir" / "f", b"1").read_bytes() == b"1"


def test_a_durable_write_is_flushed_to_disk_and_a_cache_write_is_not(tmp_path, monkeypatch):
    import os

    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(fd) or real_fsync(fd))
    write_bytes_atomic(tmp_path / "model.pt", b"weights")
    assert len(flushed) == 1
    write_bytes_atomic(tmp_path / "entry", b"cache", durable=False)
    assert len(flushed) == 1 and (tmp_path / "entry").read_bytes() == b"cache"
