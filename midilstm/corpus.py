"""A collection of MIDI files as compact arrays: read in parallel, cached, memory-mappable.

``read_midi_files`` keeps one ``Parsed`` (Python objects, about 48 bytes per note) per file and
parses every file again on every run. For thousands of files this module instead

* reads files in parallel worker processes (chunks of files per task, a progress bar);
* caches each file's events on disk, keyed by the sha256 of its bytes, the ``Selection`` and
  the reader's version, so a second run parses nothing (a changed file or reader misses); the
  cache (``midilstm.cache``) believes an entry only when its HMAC under the cache's secret
  proves it was written for that key, and refuses a folder others could write;
* hashes a file again only when its status (inode, size, times) changed since it was hashed;
* reads files with identical contents once, and counts them;
* lists bad files with their reason (never fatal; the reason is cached too, except for an
  unexpected reader failure, which is listed but tried again next time);
* holds the result as one ``EVENT_DTYPE`` array of all pieces back to back, int64 piece
  offsets and a list of names: ``Corpus.save`` writes ``.npy`` files that ``load_corpus``
  opens memory-mapped, so a corpus larger than memory costs only the pages in use.

Usage::

    corpus = read_corpus("songs/", workers=2)           # folder, glob or list of files
    corpus.save("runs/songs_corpus")
    corpus = load_corpus("runs/songs_corpus")           # memory-mapped
    corpus.piece(0), corpus.names[0], corpus.bad        # events of one piece; bad files
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import stat
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import cluster, parse, smf
# CACHE_FORMAT, CacheError and default_cache_dir stay importable from here
from .cache import CACHE_FORMAT, Cache, CacheError, default_cache_dir, selection_key  # noqa: F401
from .errors import MidiInputError, ParameterError
from .events import EVENT_DTYPE
from .files import write_bytes_atomic, write_json_atomic

CORPUS_FORMAT = 1
CHUNK_FILES = 16  # files per worker task: few enough round trips, even enough load
SETTLED_NS = 2_000_000_000  # a file changed this close before its hashing is not remembered


@dataclass
class Corpus:
    """Pieces back to back: piece ``i`` is ``events[offsets[i]:offsets[i + 1]]``."""

    events: np.ndarray  # EVENT_DTYPE, possibly a read-only memory map
    offsets: np.ndarray  # int64, len(names) + 1, offsets[0] == 0
    names: list  # one path per piece (the first of identical files)
    bad: list = field(default_factory=list)  # [(path, reason)]
    duplicates: list = field(default_factory=list)  # [(path, same content as this path)]
    stats: dict = field(default_factory=dict)  # files, parsed, cached, duplicates, bad

    def __len__(self) -> int:
        return len(self.names)

    def piece(self, i: int) -> np.ndarray:
        return self.events[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices) -> "Corpus":
        """The pieces ``indices`` (in that order) as a new in-memory corpus."""
        indices = [int(i) for i in indices]
        pieces = [self.piece(i) for i in indices]
        return Corpus(events=_concatenate(pieces), offsets=_offsets(pieces),
                      names=[self.names[i] for i in indices])

    def save(self, directory) -> Path:
        """``events.npy``, ``offsets.npy`` and ``corpus.json``, each written atomically;
        ``corpus.json`` last, so a directory with it is complete."""
        directory = Path(directory)
        write_bytes_atomic(directory / "events.npy", _npy_bytes(np.ascontiguousarray(self.events)))
        write_bytes_atomic(directory / "offsets.npy", _npy_bytes(self.offsets.astype(np.int64)))
        write_json_atomic(directory / "corpus.json", {
            "format": CORPUS_FORMAT, "names": list(self.names), "bad": self.bad,
            "duplicates": self.duplicates, "stats": self.stats,
            "n_events": int(self.offsets[-1])})
        return directory


def load_corpus(directory, mmap: bool = True) -> Corpus:
    """A corpus written by ``Corpus.save``; its events memory-mapped unless ``mmap=False``."""
    directory = Path(directory)
    manifest_path = directory / "corpus.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise MidiInputError(directory, "not a corpus (no corpus.json; make one with "
                                        "python -m midilstm.batch corpus)") from None
    except (OSError, ValueError) as err:
        raise MidiInputError(manifest_path, f"unreadable corpus manifest ({err})") from None
    if manifest.get("format") != CORPUS_FORMAT:
        raise MidiInputError(manifest_path, f"unknown corpus format {manifest.get('format')!r}")
    events = np.load(directory / "events.npy", mmap_mode="r" if mmap else None)
    offsets = np.load(directory / "offsets.npy")
    if events.dtype != EVENT_DTYPE or len(offsets) != len(manifest["names"]) + 1 \
            or offsets[-1] != len(events):
        raise MidiInputError(directory, "events.npy, offsets.npy and corpus.json disagree")
    return Corpus(events=events, offsets=offsets, names=manifest["names"],
                  bad=[tuple(b) for b in manifest["bad"]],
                  duplicates=[tuple(d) for d in manifest["duplicates"]], stats=manifest["stats"])


def read_corpus(sources, selection: parse.Selection = parse.Selection(), *,
                cache_dir="default", workers: int | None = None,
                progress: bool = True, shared: bool | None = None,
                scheduler: str | None = None) -> Corpus:
    """Read files, folders (recursively) or glob patterns into a ``Corpus``.

    ``cache_dir``: where each file's result is kept (``"default"``: ``default_cache_dir()``,
    ``None``: no cache). A cache folder owned by someone else or writable by others is refused
    (``CacheError``) unless ``shared=True`` (``None``: ``$MIDILSTM_CACHE_SHARED``); see
    ``midilstm.cache``. ``workers``: parser processes (``None``: one per CPU; ``1``: parse
    in this process). Files whose bytes are identical are read once: the first (in sorted
    order) becomes the piece, the others are listed in ``duplicates``. No single file stops
    the read, whatever goes wrong with it: it is listed in ``bad`` with a one-line reason.
    ``scheduler``: a Dask scheduler's address (or scheduler file) whose workers parse the
    files instead of local processes (``midilstm.cluster``; ``workers`` is then unused): they
    read the files at the same paths, each checked against the bytes hashed here, and send
    the events back; only this process writes the cache. The corpus is the same, byte for
    byte, as a local read's.
    """
    paths = parse.expand_sources(sources)
    cache = None if cache_dir is None else Cache(
        default_cache_dir() if cache_dir == "default" else cache_dir, shared=shared)
    try:
        return _read(paths, selection, cache, workers, progress, scheduler)
    finally:
        if cache is not None:
            cache.close()


def _read(paths, selection, cache, workers, progress, scheduler=None) -> Corpus:
    version = _selection_key(selection)
    digests, bad = _content_digests(paths, cache)
    keys, first_of = {}, {}  # path -> cache key; key -> first path
    duplicates = []
    for path, digest in digests.items():
        key = f"{digest}-{version}"
        if key in first_of:
            duplicates.append((str(path), str(first_of[key])))
        else:
            first_of[key] = path
            keys[path] = key
    results = {key: cache.get(key) for key in first_of} if cache is not None else {}
    todo = [(str(path), key) for key, path in first_of.items() if results.get(key) is None]
    fresh = _parse_all(todo, selection, cache, workers, progress, scheduler)
    results.update(fresh)
    names, pieces = [], []
    for path, key in keys.items():
        result = results[key]
        if isinstance(result, str):
            bad.append((str(path), result))
        else:
            names.append(str(path))
            pieces.append(result)
    stats = {"files": len(paths), "parsed": len(fresh), "cached": len(first_of) - len(fresh),
             "duplicates": len(duplicates), "bad": len(bad), "pieces": len(pieces)}
    return Corpus(events=_concatenate(pieces), offsets=_offsets(pieces), names=names,
                  bad=sorted(bad), duplicates=duplicates, stats=stats)


# --- which files are the same: content hashes, remembered by file status ----------------------

def _content_digests(paths, cache) -> tuple[dict, list]:
    """``({path: sha256 of its bytes}, [(path, reason) for unreadable files])``.

    With a cache, a file is hashed again only when its status changed since it was last
    hashed: same device, inode, size, modification and change time (``st_ctime`` moves on
    every write or rename and no tool can set it back), as git's index does. A file changed
    within ``SETTLED_NS`` of its hashing is not remembered (a coarse clock could hide a second
    write), so it is hashed again next time. In a shared cache, whose other users can sign
    an index, a remembered digest that makes a file the duplicate of another is checked by
    hashing the file again: a duplicate drops a piece, so it is not taken on their word."""
    index_key = None if cache is None else hashlib.sha256(
        "\0".join(map(str, paths)).encode()).hexdigest()[:32]
    known = {} if cache is None else _read_index(cache, index_key)
    digests, bad, remembered, from_index = {}, [], {}, set()
    for path in paths:
        name = str(path)
        try:
            info = os.stat(path)
            status = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
        except (OSError, ValueError):
            info = status = None
        entry = known.get(name)
        if (entry and entry[0] == status and stat.S_ISREG(info.st_mode)
                and info.st_size <= smf.ReadLimits().max_bytes):
            digests[path] = entry[1]
            remembered[name] = entry
            from_index.add(path)
            continue
        _hash(path, status, digests, bad, remembered)
    seen = {}
    for path, digest in digests.items():
        seen.setdefault(digest, []).append(path)
    for same in seen.values() if cache is not None and cache.shared else ():
        for path in same if len(same) > 1 else ():
            if path in from_index:  # a duplicate by the index's word only: make sure
                remembered.pop(str(path), None)
                del digests[path]
                _hash(path, known[str(path)][0], digests, bad, remembered)
    digests = {path: digests[path] for path in paths if path in digests}  # sorted order again
    if cache is not None and remembered != known:  # a lost index only means hashing again
        cache.write_index(index_key, json.dumps(remembered).encode())
    return digests, bad


def _hash(path, status, digests, bad, remembered):
    name = str(path)
    started = time.time_ns()
    try:  # the reader's own checks: regular files only, at most its size limit
        digests[path] = hashlib.sha256(smf.read_file_bytes(path)).hexdigest()
    except MidiInputError as err:
        bad.append((name, err.reason))
        return
    except Exception as err:  # noqa: BLE001  one file's trouble never ends the read
        bad.append((name, _failure(err)))
        return
    if status and max(status[3], status[4]) < started - SETTLED_NS:
        remembered[name] = [status, digests[path]]


_DIGEST = re.compile(r"[0-9a-f]{64}")


def _read_index(cache, key) -> dict:
    """``{path: [status, sha256]}`` as last written, keeping only well-formed entries (a
    status of five ints, a digest of 64 hex digits), or ``{}`` (none yet, damaged, forged)."""
    data = cache.read_index(key)
    if data is None:
        return {}
    try:
        index = json.loads(data)
    except (TypeError, ValueError, RecursionError):
        return {}
    if not isinstance(index, dict):
        return {}
    return {name: entry for name, entry in index.items() if _index_entry_ok(entry)}


def _index_entry_ok(entry) -> bool:
    return (type(entry) is list and len(entry) == 2 and type(entry[0]) is list
            and len(entry[0]) == 5 and all(type(n) is int for n in entry[0])
            and type(entry[1]) is str and _DIGEST.fullmatch(entry[1]) is not None)


# --- parsing in worker processes --------------------------------------------------------------

def _parse_all(todo, selection, cache, workers, progress, scheduler=None) -> dict:
    """``{key: events or reason}`` for every ``(path, key)`` of ``todo``. A chunk whose worker
    died (out of memory, killed) is read again one file per fresh worker, so the file that
    killed it is the only one listed as failed. With ``scheduler``, the cluster's workers
    parse (``midilstm.cluster``) and this process stores their results in the cache."""
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ParameterError("workers", f"must be >= 1, not {workers}")
    remote = scheduler is not None and bool(todo)
    if remote:  # a worker's folder is not this one: it gets each file's absolute path
        todo = [(os.path.abspath(path), key) for path, key in todo]
    chunks = [todo[i:i + CHUNK_FILES] for i in range(0, len(todo), CHUNK_FILES)]
    results, failed = {}, []
    with contextlib.ExitStack() as pool_open:
        pool = None
        if remote or (workers > 1 and len(chunks) > 1):  # checked before the bar shows
            pool = pool_open.enter_context(cluster.executor(
                scheduler, 1 if remote else min(workers, len(chunks)),
                same_files=[(todo[0][0], todo[0][1].split("-")[0])] if remote else ()))
        with tqdm(total=len(todo), desc="reading", unit="file", disable=not progress) as bar:
            if pool is None:
                for chunk in chunks:
                    results.update(_parse_chunk(chunk, selection, cache))
                    bar.update(len(chunk))
                return results
            if remote:
                futures = {pool.submit(_parse_remote, chunk, selection): chunk
                           for chunk in chunks}
            else:
                futures = {pool.submit(_parse_chunk, chunk, selection, cache): chunk
                           for chunk in chunks}
            for future in as_completed(futures):
                try:
                    done = future.result()
                except Exception:  # noqa: BLE001  its worker died: each file again, alone
                    failed.extend(futures[future])
                    continue
                results.update(_kept(done, cache) if remote else done)
                bar.update(len(futures[future]))
            if remote:  # on the cluster: each file of a lost chunk alone, all at once
                futures = {pool.submit(_parse_remote, [item], selection): item for item in failed}
                for future in as_completed(futures):
                    try:
                        results.update(_kept(future.result(), cache))
                    except Exception as err:  # noqa: BLE001  lost again: this file's fault
                        results[futures[future][1]] = _died(err)
                    bar.update(1)
                failed = []
            pool_open.close()  # locally: the pool's processes end before the fresh ones start
            for item in failed:
                results.update(_parse_alone(item, selection, cache))
                bar.update(1)
    return results


def _parse_alone(item, selection, cache) -> dict:
    key = item[1]
    try:
        with ProcessPoolExecutor(1) as pool:
            return pool.submit(_parse_chunk, [item], selection, cache).result()
    except Exception as err:  # noqa: BLE001
        return {key: _died(err)}


def _died(err) -> str:
    return f"reader failed (its worker process ended: {_failure(err)}); please report it"


def _parse_chunk(chunk, selection, cache) -> dict:
    """Parse files and store each result (events or the reason it failed) in the cache."""
    results = {}
    for path, key in chunk:
        result, keep, _ = _parse_one(path, selection)
        if keep and cache is not None:
            try:
                cache.put(key, result)  # a failed write only means reading it again next time
            except Exception:  # noqa: BLE001
                pass
        results[key] = result
    return results


def _parse_one(path, selection) -> tuple:
    """``(events or reason, whether a cache may keep it, sha256 of the bytes read or None)``."""
    try:
        parsed = parse.read_midi(path, selection)
        return parsed.events, True, getattr(getattr(parsed, "report", None), "sha256", None)
    except MidiInputError as err:
        return err.reason, True, None
    except Exception as err:  # noqa: BLE001  a reader bug must not end a run of 100,000 files
        return f"reader failed ({_failure(err)}); please report it", False, None  # a fixed
        # reader will try again: not cached


def _parse_remote(chunk, selection) -> dict:
    """On a cluster worker: ``{key: (events or reason, keep)}``, for the caller to cache. A
    file whose bytes here are not those the caller hashed (the key's sha256) is not read:
    its reason says so, and it is not kept."""
    results = {}
    for path, key in chunk:
        digest = key.split("-")[0]
        result, keep, seen = _parse_one(path, selection)
        if keep and seen is None:  # refused by the reader: were these the caller's bytes?
            try:
                seen = hashlib.sha256(smf.read_file_bytes(path)).hexdigest()
            except Exception as err:  # noqa: BLE001
                seen = f"it cannot read it here ({_failure(err)})"
        if keep and seen != digest:
            result, keep = (f"not read: a cluster worker ({platform.node()}) does not see the "
                            "bytes hashed here; the files must be on a file system every "
                            "worker sees at the same path"), False
        results[key] = (result, keep)
    return results


def _kept(results, cache) -> dict:
    """A worker's ``{key: (result, keep)}`` as ``{key: result}``, storing what may be kept."""
    out = {}
    for key, (result, keep) in results.items():
        if keep and cache is not None:
            try:
                cache.put(key, result)
            except Exception:  # noqa: BLE001
                pass
        out[key] = result
    return out


def _failure(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` in one line of at most ``limit`` characters."""
    try:
        text = f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001  a message that cannot even be made (int-to-str limit)
        text = type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _selection_key(selection) -> str:
    """Short hash of everything besides the bytes that decides a file's result."""
    return selection_key(selection, parse.READER_VERSION)


# --- arrays -----------------------------------------------------------------------------------

def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _concatenate(pieces) -> np.ndarray:
    if not pieces:
        return np.zeros(0, EVENT_DTYPE)
    # as bytes: concatenating structured arrays compares their fields once per piece
    return np.concatenate([np.ascontiguousarray(p, EVENT_DTYPE).view(np.uint8)
                           for p in pieces]).view(EVENT_DTYPE)


def _offsets(pieces) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(p) for p in pieces], dtype=np.int64)]).astype(
        np.int64)
