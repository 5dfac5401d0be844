"""The corpus reader's cache: one entry per key, believed only when it proves it is ours.

A cache folder is a place where a stranger's file could stand in for a piece, so nothing in
it is taken on trust:

* **The folder.** It is created mode 0o700. An existing folder owned by someone else, or
  writable by its group or by others, is refused in one line that names it and says how to
  fix it (as ssh and pip refuse such folders), unless the user says it is shared on purpose
  (``shared=True``, or ``MIDILSTM_CACHE_SHARED=1``).
* **The secret.** On first use the cache gets ``secret``, 32 random bytes (mode 0o600; 0o640
  in a shared cache, so its group can read it), opened without following links. Every entry
  ends with an HMAC-SHA256, under that secret, of everything before it: a format tag, the
  entry's kind, its key and its payload. An entry forged without the secret, copied or
  linked from another key, torn or flipped is a miss, and the file is read again.
* **The entries.** Each key is checked as lowercase hex of the right length before any name
  is made from it; every file is opened relative to the folder's own descriptor, one name at
  a time, without following links (``O_NOFOLLOW``), so no path made from cache data can leave
  the cache, and a linked entry or subfolder is a miss (and is replaced when written).
  Entries are written to a temporary name and renamed into place, never written in place.

What the secret does not protect: whoever can read it can make valid entries. In a private
cache that is only you (and root). In a shared cache it is everyone who shares it: they can
make you read wrong music, so share a cache only with people you would take MIDI files from.
The secret still ties every entry to its key (no entry stands in for another through a link
or a copy) and catches damage.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

import numpy as np

from .errors import CacheError  # noqa: F401  (raised here; importable from here)
from .events import EVENT_DTYPE

CACHE_FORMAT = 4  # bump when the layout of a cache entry changes: old entries are then misses
SHARED_ENV = "MIDILSTM_CACHE_SHARED"
SECRET_NAME = "secret"
SECRET_BYTES = 32
TAG_BYTES = 32  # HMAC-SHA256
MAGIC = b"MLC" + bytes([CACHE_FORMAT])
KINDS = {"events": b"E", "bad": b"B", "index": b"I"}
_KIND_OF = {code[0]: kind for kind, code in KINDS.items()}
SUFFIXES = {"events": ".entry", "bad": ".entry", "index": ".stat"}  # a key's result is one file
MAX_ENTRY_BYTES = 2**31  # far above any piece the reader accepts (5 M notes: 120 MB of events)
# a piece's key: sha256 of the file's bytes, then the reader and selection's hash; an index's
# key: 32 hex digits (a hash of the list of paths). Nothing else ever becomes a file name.
_KEYS = {"events": re.compile(r"[0-9a-f]{64}-[0-9a-f]{16}"), "index": re.compile(r"[0-9a-f]{32}")}
_KEYS["bad"] = _KEYS["events"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted as an entry must not block its open
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_FULL = {errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK
_DIR = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC


def default_cache_dir() -> Path:
    """``$MIDILSTM_CACHE``, else ``$XDG_CACHE_HOME/midilstm``, else ``~/.cache/midilstm``."""
    if os.environ.get("MIDILSTM_CACHE"):
        return Path(os.environ["MIDILSTM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midilstm"


def shared_from_environment() -> bool:
    """``MIDILSTM_CACHE_SHARED`` set to 1/true/yes/on (any case)."""
    return os.environ.get(SHARED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _fix_hint(path) -> str:
    return (f"point MIDILSTM_CACHE at a folder of your own, or, if {path} is shared on "
            f"purpose, set {SHARED_ENV}=1 (or pass shared=True)")


class Cache:
    """An open cache folder (see the module's docstring). ``get``/``put`` a key's result (an
    ``EVENT_DTYPE`` array or a failure reason), ``read_index``/``write_index`` a JSON-able
    index; every miss, forgery or damage is ``None``, every failed write is ``False``: a cache
    only ever saves work. Picklable: a worker process opens the folder again (and checks it
    again) on first use."""

    def __init__(self, directory, shared: bool | None = None):
        self.path = Path(directory)
        self.shared = shared_from_environment() if shared is None else bool(shared)
        self._root = None  # the folder's descriptor: every name is opened relative to it
        self._subdirs = {}  # two hex digits -> descriptor
        self.secret = None
        self.write_failed = None  # a full disk or a read-only file system: no more writes
        self._open()

    # --- opening: the folder and its secret, checked ---------------------------------------

    def _open(self):
        path = self.path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)  # parents as mkdir -p makes them
        except FileExistsError:
            raise CacheError(path, "cannot be the cache: it is not a folder; point "
                                   "MIDILSTM_CACHE at a folder") from None
        except OSError as err:
            raise CacheError(path, f"cannot create the cache folder ({err.strerror or err}); "
                                   "point MIDILSTM_CACHE at a folder you can write, or read "
                                   "without a cache (--no-cache, cache_dir=None)") from None
        try:
            root = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)  # a link you made is yours
        except OSError as err:
            raise CacheError(path, f"cannot open the cache folder ({err.strerror or err}); "
                                   "point MIDILSTM_CACHE at a folder of your own") from None
        try:
            info = os.fstat(root)  # the folder we hold, not whatever the name means later
            if not self.shared:
                _check_private(path, info)
            self.secret = self._read_secret(root)
        except BaseException:
            os.close(root)
            raise
        self._root = root

    def _read_secret(self, root) -> bytes:
        where = self.path / SECRET_NAME
        for _ in range(2):
            try:
                fd = os.open(SECRET_NAME, _READ, dir_fd=root)
            except FileNotFoundError:
                self._make_secret(root)
                continue
            except OSError as err:
                if err.errno == errno.ELOOP:
                    raise CacheError(where, "the cache's secret is a symbolic link, which a "
                                            "cache never follows; remove it (the cache then "
                                            "starts afresh)") from None
                raise CacheError(where, f"cannot read the cache's secret ({err.strerror or err})"
                                        "; " + _fix_hint(self.path)) from None
            try:
                info = os.fstat(fd)
                data = os.read(fd, SECRET_BYTES + 1) if stat.S_ISREG(info.st_mode) else b""
            finally:
                os.close(fd)
            if len(data) != SECRET_BYTES:
                raise CacheError(where, f"not a cache secret (not a file of {SECRET_BYTES} "
                                        "bytes); remove it (the cache then starts afresh)")
            return data
        raise CacheError(where, "the cache's secret vanished while it was made; try again")

    def _make_secret(self, root):
        """Written under a temporary name, then linked into place: a second process making one
        at the same moment either wins or reads the winner's, never half a secret."""
        tmp = f".{SECRET_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        mode = 0o640 if self.shared else 0o600
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode,
                         dir_fd=root)
            try:
                _write_all(fd, secrets.token_bytes(SECRET_BYTES))
                os.fsync(fd)  # the one file of the cache a power cut must not tear
            finally:
                os.close(fd)
            try:
                os.link(tmp, SECRET_NAME, src_dir_fd=root, dst_dir_fd=root,
                        follow_symlinks=False)
            except FileExistsError:
                pass  # another process made it first: its secret is the cache's
            finally:
                os.unlink(tmp, dir_fd=root)
        except OSError as err:
            raise CacheError(self.path / SECRET_NAME, f"cannot create the cache's secret "
                                                     f"({err.strerror or err}); point "
                                                     "MIDILSTM_CACHE at a folder you can write, "
                                                     "or read without a cache") from None

    # --- pickling into worker processes, closing --------------------------------------------

    def __getstate__(self):
        return {"path": self.path, "shared": self.shared}

    def __setstate__(self, state):
        self.path, self.shared = state["path"], state["shared"]
        self._root, self._subdirs, self.secret, self.write_failed = None, {}, None, None
        self._open()

    def close(self):
        for fd in self._subdirs.values():
            os.close(fd)
        self._subdirs = {}
        if self._root is not None:
            os.close(self._root)
            self._root = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001  at interpreter exit os may be gone
            pass

    # --- entries --------------------------------------------------------------------------

    def get(self, key: str):
        """The events (read-only array) or failure reason stored under ``key``, or ``None``."""
        found = self._read("events", key)
        if found is None:
            return None
        kind, payload = found
        if kind == "bad":
            return bytes(payload).decode("utf-8", errors="replace")
        if len(payload) % EVENT_DTYPE.itemsize:
            return None
        return np.frombuffer(payload, EVENT_DTYPE)  # the corpus concatenates a copy

    def put(self, key: str, result) -> bool:
        """Store events (an array) or a failure reason (a string) under ``key``."""
        if isinstance(result, str):
            return self._write("bad", key, result.encode())
        return self._write("events", key, np.ascontiguousarray(result, EVENT_DTYPE).tobytes())

    def read_index(self, key: str):
        """The bytes stored by ``write_index(key, ...)``, or ``None``."""
        found = self._read("index", key)
        return None if found is None else bytes(found[1])

    def write_index(self, key: str, data: bytes) -> bool:
        return self._write("index", key, data)

    def _seal(self, kind: str, key: str, payload: bytes) -> bytes:
        head = MAGIC + KINDS[kind] + bytes([len(key)]) + key.encode()
        body = head + payload
        return body + hmac.digest(self.secret, body, "sha256")

    def _unseal(self, blob: bytes, key: str, kinds) -> tuple | None:
        """``(kind, payload)`` of an entry that is ours, for ``key``, of one of ``kinds``."""
        name = key.encode()
        start = len(MAGIC) + 2 + len(name)
        if len(blob) < start + TAG_BYTES or blob[:len(MAGIC)] != MAGIC:
            return None
        if blob[len(MAGIC) + 1] != len(name) or blob[len(MAGIC) + 2:start] != name:
            return None  # the entry of another key: a copy or a link
        kind = _KIND_OF.get(blob[len(MAGIC)])
        if kind not in kinds:
            return None
        view = memoryview(blob)  # no copies of a piece's events: a warm read checks thousands
        if not hmac.compare_digest(hmac.digest(self.secret, view[:-TAG_BYTES], "sha256"),
                                   view[-TAG_BYTES:]):
            return None  # forged, torn or flipped
        return kind, view[start:-TAG_BYTES]

    def _read(self, kind: str, key: str):
        if not valid_key(kind, key):
            return None
        sub = self._subdir(key[:2], create=False)
        if sub is None:
            return None
        try:
            fd = os.open(key + SUFFIXES[kind], _READ, dir_fd=sub)
        except OSError:  # missing, a link (ELOOP), unreadable: a miss
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
                return None
            blob = _read_all(fd, info.st_size)
        except OSError:
            return None
        finally:
            os.close(fd)
        kinds = ("events", "bad") if kind != "index" else ("index",)
        return self._unseal(blob, key, kinds)

    def _write(self, kind: str, key: str, payload: bytes) -> bool:
        """Written to a temporary name in the key's subfolder, then renamed over the entry
        (a link there is replaced, never followed). Not flushed to disk: a torn entry after a
        power cut fails its HMAC and is simply read again, and parallel workers scale."""
        if self.write_failed is not None or not valid_key(kind, key):
            return False
        data = self._seal(kind, key, payload)
        try:
            sub = self._subdir(key[:2], create=True)
            name = key + SUFFIXES[kind]
            tmp = f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC,
                         0o666 if self.shared else 0o600, dir_fd=sub)
            try:
                try:
                    _write_all(fd, data)
                finally:
                    os.close(fd)
                os.replace(tmp, name, src_dir_fd=sub, dst_dir_fd=sub)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=sub)
                except OSError:
                    pass
                raise
        except OSError as err:  # reading goes on, uncached
            if err.errno in _FULL:  # the same for every entry: stop trying
                self.write_failed = err
            return False
        return True

    def _subdir(self, prefix: str, create: bool):
        """The descriptor of subfolder ``prefix`` (two hex digits, checked by the caller), or
        ``None``. A link or a file in its place is a miss, and is removed when writing."""
        fd = self._subdirs.get(prefix)
        if fd is not None:
            return fd
        if self._root is None:
            self._open()
        try:
            fd = os.open(prefix, _DIR, dir_fd=self._root)
        except FileNotFoundError:
            if not create:
                return None
            _mkdir(prefix, self._root, 0o777 if self.shared else 0o700)
            fd = os.open(prefix, _DIR, dir_fd=self._root)
        except OSError as err:
            if not create or err.errno not in (errno.ELOOP, errno.ENOTDIR):
                if create:
                    raise
                return None
            # a link or a file where the subfolder should be: unlink removes the link itself,
            # never its target
            os.unlink(prefix, dir_fd=self._root)
            _mkdir(prefix, self._root, 0o777 if self.shared else 0o700)
            fd = os.open(prefix, _DIR, dir_fd=self._root)
        self._subdirs[prefix] = fd
        return fd


def valid_key(kind: str, key) -> bool:
    """``key`` is hex of the right length for an entry of ``kind``: the only names ever made."""
    pattern = _KEYS.get(kind)
    return pattern is not None and isinstance(key, str) and pattern.fullmatch(key) is not None


def _check_private(path, info):
    """Refuse a folder that is not ours alone (the ssh/pip rule)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and info.st_uid != uid:
        raise CacheError(path, f"refused as a cache: it belongs to uid {info.st_uid}, not to you "
                               f"(uid {uid}), so its owner could make you read wrong music; "
                               f"use a folder of your own (chown it to yourself), or "
                               + _fix_hint(path))
    loose = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if loose:
        who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "others"}.get(loose, "group and others")
        raise CacheError(path, f"refused as a cache: it is writable by {who} (mode "
                               f"{stat.S_IMODE(info.st_mode):04o}), who could put wrong music "
                               f"in it; fix it with chmod go-w '{path}', or "
                               + _fix_hint(path))


def _mkdir(name, root, mode):
    try:
        os.mkdir(name, mode, dir_fd=root)
    except FileExistsError:  # a parallel worker made it
        pass


def _read_all(fd, size: int) -> bytes:
    first = os.read(fd, size + 1)
    if len(first) <= size:  # a short read of a regular file: its end (one read, not two)
        return first
    chunks, total = [first], len(first)  # it grew since fstat: read on to its end
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_ENTRY_BYTES:
            raise OSError(errno.EFBIG, "cache entry too large")


def _write_all(fd, data: bytes):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def selection_key(selection, reader_version) -> str:
    """Short hash of everything besides the bytes that decides a file's result."""
    text = f"{CACHE_FORMAT}|{reader_version}|{selection!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
