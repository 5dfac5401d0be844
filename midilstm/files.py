"""Atomic file writes: a reader never sees half a file, and a crash never loses the old one;
and inside a run directory, nothing is ever written, appended to or deleted through a link.

Data goes to a temporary file beside the target, ``.NAME.<pid>.<random>.tmp``, which is then
renamed over the target. The file is created as ``open()`` creates files (mode 0o666 less the
umask), so a run directory on a shared machine is as readable as any other file there.
Temporary files left behind by a killed writer (its pid is gone, or the file is older than
``STALE_AFTER_S``) are removed by the next write into the same directory.

A *root* (a run directory: ``RunDir`` registers its own with ``register_root``, and a sweep its
folder) is where links are refused. Below it every folder is opened with ``O_NOFOLLOW`` from the
folder above (``os.open(name, O_DIRECTORY | O_NOFOLLOW, dir_fd=...)``), files are created, renamed,
appended to and removed relative to that descriptor, and a target, folder or lock that is a
symbolic link is refused with one line naming it (``RunDirError``). Names must stay inside the
root: ``..`` is refused. The root itself is followed: it is the folder the user named.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
import time
from pathlib import Path

from .errors import RunDirError

STALE_AFTER_S = 15 * 60  # no write of ours takes this long: an older temporary file is dead
# ours: .NAME.<pid>.<8 hex>.tmp; older versions wrote tempfile's .NAME.<8 of [a-z0-9_]>.tmp
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ROOTS: dict[str, str] = {}  # absolute path of each registered root -> its label in messages


def register_root(path, label: str | None = None) -> None:
    """Writes below ``path`` from now on, in this process, refuse links (``write_bytes_atomic``
    finds the root itself; ``RunDir`` registers its directory when it is made)."""
    _ROOTS[os.path.abspath(path)] = label or str(path)


def root_of(path) -> str | None:
    """The innermost registered root that holds ``path`` (compared as written, made absolute)."""
    path = os.path.abspath(path)
    best = None
    for root in _ROOTS:
        if (path == root or path.startswith(root.rstrip(os.sep) + os.sep)) and \
                (best is None or len(root) > len(best)):
            best = root
    return best


def _label(root) -> str:
    return _ROOTS.get(os.path.abspath(root), str(root))


def link_text(root, relative: str) -> str:
    """``"generated is a symbolic link (to /x): refusing to write through it"``."""
    try:
        target = os.readlink(os.path.join(root, relative))
    except OSError:
        target = "?"
    return f"{relative} is a symbolic link (to {target}): refusing to write through it"


def relative_parts(root, path) -> list[str]:
    """``path``'s names below ``root`` (both made absolute as written, from the current folder,
    ``..`` resolved by name); refused (``RunDirError``) when it is not inside the root."""
    root, full = os.path.abspath(root), os.path.abspath(path)
    if full != root and not full.startswith(root.rstrip(os.sep) + os.sep):
        raise RunDirError(_label(root), f"{path} points outside the run directory: refusing to "
                                        f"write there")
    relative = os.path.relpath(full, root)
    return [] if relative == "." else relative.split(os.sep)


@contextlib.contextmanager
def open_folder(root, parts, *, create: bool = False):
    """A descriptor of the folder ``root/parts...``, every name below ``root`` opened with
    ``O_NOFOLLOW`` (a link is refused naming it); missing folders are made when ``create``,
    else ``FileNotFoundError``. Closed on leaving."""
    if create:
        Path(root).mkdir(parents=True, exist_ok=True)  # the root is the folder the user named
    fd = os.open(root, _DIR_FLAGS)
    try:
        for i, name in enumerate(parts):
            try:
                child = _open_below(fd, name, create)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR) and \
                        _is_link(fd, name):
                    raise RunDirError(_label(root), link_text(root, os.path.join(*parts[:i + 1])))\
                        from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_below(fd: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=fd)
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def refuse_link(root, relative: str) -> None:
    """Refuse (``RunDirError``) when ``root/relative`` or a folder on its way is a link."""
    parts = relative_parts(root, os.path.join(root, relative))
    if not parts:
        return
    try:
        with open_folder(root, parts[:-1]) as fd:
            if _is_link(fd, parts[-1]):
                raise RunDirError(_label(root), link_text(root, os.path.join(*parts)))
    except FileNotFoundError:
        return


def make_folder(path, root=None) -> Path:
    """``mkdir -p path``; below a root, with no link followed."""
    root = root or root_of(path)
    if root is None:
        Path(path).mkdir(parents=True, exist_ok=True)
    else:
        with open_folder(root, relative_parts(root, path), create=True):
            pass
    return Path(path)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def write_bytes_atomic(path, data: bytes, *, durable: bool = True, clean: bool = True,
                       root=None) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    ``durable`` flushes the data to the disk before the rename, so a power cut cannot leave a
    torn file under the name. ``clean`` first removes temporaries that killed writers left in
    the folder (``remove_stale_temporaries``). A cache writing thousands of small entries that
    carry their own checksum skips both: the flush and the folder listing cost more than the
    write, and a writer's pid means nothing on another machine sharing the cache.

    Below ``root`` (by default the registered root that holds ``path``, if any) no link is
    followed: the target or a folder on its way that is a link is refused (``RunDirError``).
    A full disk or a folder we may not write raises the ``OSError`` (naming the file)."""
    path = Path(path)
    root = root if root is not None else root_of(path)
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        base, parts = str(path.parent), []
    else:
        base, parts = root, relative_parts(root, path)[:-1]
        if not relative_parts(root, path):
            raise RunDirError(_label(root), "cannot write over the run directory itself")
    with open_folder(base, parts, create=True) as fd:
        if root is not None and _is_link(fd, path.name):
            raise RunDirError(_label(root), link_text(root, os.path.relpath(path, root)))
        if clean:
            remove_stale_temporaries(fd)
        tmp = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:  # the umask applies, as open()
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o666, dir_fd=fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from None
        try:
            try:
                _write_all(out, data)
                if durable:
                    os.fsync(out)
            finally:
                os.close(out)
            os.replace(tmp, path.name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            if isinstance(err, OSError) and err.errno and err.filename is None:
                raise OSError(err.errno, err.strerror, str(path)) from None
            raise
    return path


@contextlib.contextmanager
def open_append(path, root=None):
    """``path`` opened to append text (made when missing); below a root, refused when it or a
    folder on its way is a link (``O_NOFOLLOW`` from the folder's descriptor)."""
    path = Path(path)
    root = root if root is not None else root_of(path)
    base, parts = (str(path.parent), []) if root is None else \
        (root, relative_parts(root, path)[:-1])
    with open_folder(base, parts, create=True) as fd:
        try:
            out = os.open(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o666, dir_fd=fd)
        except OSError as err:
            if err.errno == errno.ELOOP and root is not None:
                raise RunDirError(_label(root), link_text(root, os.path.relpath(path, root))) \
                    from None
            raise OSError(err.errno, err.strerror, str(path)) from None
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise RunDirError(_label(root or path.parent), f"{path.name} is not a regular file: "
                                                       f"refusing to write to it")
    with os.fdopen(out, "a") as f:
        yield f


def remove_in(root, relative, patterns=None, *, keep_folder: bool = False) -> list[str]:
    """Remove the file ``root/relative`` (``patterns`` None), or the regular files in the folder
    ``root/relative`` whose names match one of ``patterns`` (fnmatch) and then the folder when it
    is left empty (unless ``keep_folder``). No link is followed: a link named is itself removed (never its target); a
    folder on the way that is a link is refused. Returns the names removed."""
    import fnmatch

    parts = relative_parts(root, os.path.join(root, relative))
    removed = []
    try:
        if patterns is None:
            if not parts:
                raise RunDirError(_label(root), "will not remove the run directory itself")
            with open_folder(root, parts[:-1]) as fd, contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=fd)
                removed.append(relative)
            return removed
        with open_folder(root, parts) as fd:
            for name in sorted(os.listdir(fd)):
                if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                    mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                        os.unlink(name, dir_fd=fd)
                        removed.append(os.path.join(relative, name))
        if parts and not keep_folder:
            with open_folder(root, parts[:-1]) as fd, contextlib.suppress(OSError):
                os.rmdir(parts[-1], dir_fd=fd)  # only when nothing else is in it
    except (FileNotFoundError, NotADirectoryError):
        pass
    return removed


def remove_stale_temporaries(directory, now: float | None = None) -> list[Path]:
    """Remove our temporary files in ``directory`` whose writer is dead: its pid no longer runs,
    or the file is older than ``STALE_AFTER_S``. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:  # a folder's descriptor (an int) or its path
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    by_fd = isinstance(directory, int)
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = match["pid"]
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S
            if old or (pid is not None and not _alive(int(pid))):
                if by_fd:
                    os.unlink(entry.name, dir_fd=directory)
                else:
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


def write_json_atomic(path, obj, root=None) -> Path:
    """Pretty, key-sorted JSON (stable diffs), written atomically (no link followed below
    ``root``, as ``write_bytes_atomic``)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    return write_bytes_atomic(path, text.encode(), root=root)


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
