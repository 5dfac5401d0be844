"""The lock on a run directory: one run at a time, and its own notebook kernels let in.

A run holds ``.midilstm.lock`` with a non-blocking ``flock`` for as long as it runs; the file
says who holds it (pid, since when) and a random token. The notebook kernels the run starts
inherit the token in ``MIDILSTM_RUN_LOCK``, so their ``RunDir.begin`` knows it runs under the
lock; any other process is refused with one line naming the holder. The kernel drops a flock
when its process dies, so a killed run leaves no lock behind.

The lock file is opened from the directory's descriptor with ``O_NOFOLLOW``: a lock file that
is a symbolic link (or not a regular file, or a hard link to another) is refused in one line,
and its target is never opened, truncated or written. ``held()`` says whether a live process
holds the lock: a manifest that says "running" while nobody does was left by a killed run.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import RunDirError

LOCK_FILE = ".midilstm.lock"
LOCK_ENV = "MIDILSTM_RUN_LOCK"  # set while a run holds the lock; its notebook kernels inherit it
BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock: another process holds it


class DirLock:
    """The lock of the directory ``path``; ``label()`` names the directory in messages."""

    def __init__(self, path, label: Callable[[], str]):
        self.file = Path(path) / LOCK_FILE
        self.label = label
        self._fd: int | None = None

    @contextlib.contextmanager
    def hold(self):
        """Hold the lock for one run, or refuse (``RunDirError``) naming the run that holds it."""
        fd = self._open(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in BUSY:
                raise RunDirError(self.label(), self._in_use_text()) from None
            raise
        token = secrets.token_hex(16)
        _rewrite(fd, json.dumps({"pid": os.getpid(), "since": now(), "token": token}).encode())
        previous = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = token
        self._fd = fd
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous
            self._fd = None
            _rewrite(fd, b"")
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def refuse_if_held_by_other(self) -> None:
        """Pass when nobody holds the lock, or when we run under it (this process holds it, or
        a notebook kernel started by the run that holds it: the token matches)."""
        if self._fd is not None:
            return
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return  # free
            except OSError as err:
                if err.errno not in BUSY:
                    raise
            holder = _holder(fd)
        finally:
            os.close(fd)
        token = os.environ.get(LOCK_ENV)
        if not (token and secrets.compare_digest(token, str(holder.get("token", "")))):
            raise RunDirError(self.label(), self._in_use_text(holder))

    def holder_gone(self, pid) -> bool:
        """The process ``pid`` that said it runs here is gone: nobody holds the lock, or that
        pid no longer runs. Our own process is never gone."""
        if pid == os.getpid():
            return False
        if self.held() is False:
            return True
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except (OSError, OverflowError):
                return False
        return False

    def held(self) -> bool | None:
        """Whether a process holds the lock now (this one included); None when the lock file
        cannot be looked at (a link, unreadable)."""
        if self._fd is not None:
            return True
        try:
            fd = self._open(os.O_RDONLY)
        except FileNotFoundError:
            return False
        except (OSError, RunDirError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError as err:
            return True if err.errno in BUSY else None
        finally:
            os.close(fd)  # closing drops our shared flock, if we took it

    def _open(self, flags: int) -> int:
        """The lock file, opened from its directory's descriptor without following a link;
        ``FileNotFoundError`` when it is missing and not created, else one line."""
        try:
            folder = os.open(self.file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            if isinstance(err, FileNotFoundError) and not flags & os.O_CREAT:
                raise
            raise RunDirError(self.label(), f"cannot open the run directory ({err.strerror})") \
                from None
        try:
            fd = os.open(LOCK_FILE, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666,
                         dir_fd=folder)
        except FileNotFoundError:
            raise
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise RunDirError(self.label(), f"{LOCK_FILE} is a symbolic link (to "
                                  f"{_readlink(folder)}): refusing to write through it") from None
            raise RunDirError(self.label(), f"cannot create {LOCK_FILE} ({err.strerror})") \
                from None
        finally:
            os.close(folder)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            os.close(fd)
            kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else \
                "not a regular file"
            raise RunDirError(self.label(), f"{LOCK_FILE} is {kind}: refusing to write to it; "
                                            f"remove it")
        return fd

    def _in_use_text(self, holder: dict | None = None) -> str:
        if holder is None:
            fd = self._open(os.O_RDONLY)
            try:
                holder = _holder(fd)
            finally:
                os.close(fd)
        since = str(holder.get("since", "?"))
        clock = since[11:19] if len(since) >= 19 else since
        return f"another run is using this directory (pid {holder.get('pid', '?')}, since {clock})"


def now() -> str:
    """The time in UTC to the second, ISO 8601, as the lock and the manifest record it."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _readlink(folder: int) -> str:
    try:
        return os.readlink(LOCK_FILE, dir_fd=folder)
    except OSError:
        return "?"


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
