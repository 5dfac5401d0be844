"""What a command says when something fails, in one line: an exception's text with long numbers
cut short, the operating system's refusals (permission denied, a full disk, a read-only file
system) named plainly, and the check that an output location can be written before any work
starts there (``check_writable``: ``train --out`` is checked before it trains, not at its first
save).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

from .errors import MidilstmError

LONG_DIGITS = re.compile(r"\d{21,}")  # a run of more than 20 digits is cut in one-line errors
HINTS = {
    errno.ENOSPC: "the disk is full: free some space, or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space, or write elsewhere",
    errno.EACCES: "permission denied: choose a folder you may write to",
    errno.EPERM: "operation not permitted: choose a folder you may write to",
    errno.EROFS: "the file system is read-only: choose another folder",
}


class OutputError(MidilstmError):
    """An output location that cannot be written (permission denied, a read-only file system,
    a file where a folder should be): refused before the work starts, exit status 2."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.path = self.what


def shorten_numbers(text: str) -> str:
    """``text`` with every run of more than 20 digits shown as its first 6 and its length:
    ``123456...(4200 digits)``."""
    return LONG_DIGITS.sub(lambda m: f"{m[0][:6]}...({len(m[0])} digits)", str(text))


def os_error_text(err: OSError) -> str:
    """``"<file>: <what went wrong, plainly>"`` for an ``OSError`` (no errno numbers)."""
    reason = HINTS.get(err.errno) or (err.strerror or str(err) or type(err).__name__).lower()
    where = err.filename if err.filename is not None else "error"
    return shorten_numbers(" ".join(f"{where}: {reason}".split()))


def one_line(err: BaseException) -> str:
    """The error in one line, long numbers cut; for a failed notebook cell (papermill's
    execution error) the error raised inside it."""
    name = getattr(err, "ename", None) or type(err).__name__
    if isinstance(err, OSError) and err.errno in HINTS:
        return f"{name}: {os_error_text(err)}"
    text = str(getattr(err, "evalue", None) or err).strip()
    return shorten_numbers(f"{name}: {(text.splitlines() or [''])[0]}")


def check_writable(folder, what: str = "the output folder") -> Path:
    """Make ``folder`` (and its parents) when missing, and write and remove a small file in it;
    refused with ``OutputError`` naming it when that cannot be done, before any work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(folder, f"cannot be used as {what}: it is a file, not a folder") from None
    except OSError as err:
        raise OutputError(folder, f"cannot create {what} ({_reason(err)})") from None
    probe = folder / f".midilstm-probe.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except OSError as err:
        raise OutputError(folder, f"cannot write {what} ({_reason(err)})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return folder


def check_writable_file(path, what: str = "the output file") -> Path:
    """``check_writable`` for the folder of the file ``path``, and ``path`` is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, f"cannot be used as {what}: it is a folder")
    check_writable(path.parent, f"the folder of {what}")  # the file is renamed into place
    return path


def _reason(err: OSError) -> str:
    return HINTS.get(err.errno) or (err.strerror or str(err)).lower()
