"""Atomic file writes: a reader never sees half a file, and a crash never loses the old one.

Data goes to a temporary file beside the target, ``.NAME.<pid>.<random>.tmp``, which is then
renamed over the target. The file is created as ``open()`` creates files (mode 0o666 less the
umask), so a run directory on a shared machine is as readable as any other file there.
Temporary files left behind by a killed writer (its pid is gone, or the file is older than
``STALE_AFTER_S``) are removed by the next write into the same directory.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

STALE_AFTER_S = 15 * 60  # no write of ours takes this long: an older temporary file is dead
# ours: .NAME.<pid>.<8 hex>.tmp; older versions wrote tempfile's .NAME.<8 of [a-z0-9_]>.tmp
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")


def write_bytes_atomic(path, data: bytes, *, durable: bool = True, clean: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    ``durable`` flushes the data to the disk before the rename, so a power cut cannot leave a
    torn file under the name. ``clean`` first removes temporaries that killed writers left in
    the folder (``remove_stale_temporaries``). A cache writing thousands of small entries that
    carry their own checksum skips both: the flush and the folder listing cost more than the
    write, and a writer's pid means nothing on another machine sharing the cache."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temporaries(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(directory, now: float | None = None) -> list[Path]:
    """Remove our temporary files in ``directory`` whose writer is dead: its pid no longer runs,
    or the file is older than ``STALE_AFTER_S``. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = match["pid"]
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if old or (pid is not None and not _alive(int(pid))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # another writer removed or renamed it first: nothing to clean
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


def write_json_atomic(path, obj) -> Path:
    """Pretty, key-sorted JSON (stable diffs), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    return write_bytes_atomic(path, text.encode())


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
