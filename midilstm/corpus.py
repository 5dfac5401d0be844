"""A collection of MIDI files as compact arrays: read in parallel, cached, memory-mappable.

``read_midi_files`` keeps one ``Parsed`` (Python objects, about 48 bytes per note) per file and
parses every file again on every run. For thousands of files this module instead

* reads files in parallel worker processes (chunks of files per task, a progress bar;
  ``midilstm.corpus_workers``), or on a Dask cluster's workers (``scheduler=``);
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
  opens memory-mapped, so a corpus larger than memory costs only the pages in use
  (``midilstm.corpus_format``; ``Corpus`` and ``load_corpus`` are importable from here);
* with ``fast=True``, tries each file with the fast reader first (``midilstm.fast_reader``:
  symusic and numba, the same events, else ``read_midi``); ``stats["read_fast"]`` counts them.

Usage::

    corpus = read_corpus("songs/", workers=2)           # folder, glob or list of files
    corpus.save("runs/songs_corpus")
    corpus = load_corpus("runs/songs_corpus")           # memory-mapped
    corpus.piece(0), corpus.names[0], corpus.bad        # events of one piece; bad files
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
import warnings

from . import parse, smf
# CACHE_FORMAT, CacheError and default_cache_dir stay importable from here
from .cache import CACHE_FORMAT, Cache, CacheError, default_cache_dir, selection_key
from .corpus_format import CORPUS_FORMAT, Corpus, concatenate_pieces, load_corpus, piece_offsets
from .corpus_workers import failure_line, parse_files
from .errors import MidiInputError

__all__ = ["CACHE_FORMAT", "CHUNK_FILES", "CORPUS_FORMAT", "SETTLED_NS", "CacheError", "Corpus",
           "default_cache_dir", "load_corpus", "read_corpus"]

CHUNK_FILES = 16  # files per worker task: few enough round trips, even enough load
SETTLED_NS = 2_000_000_000  # a file changed this close before its hashing is not remembered
FAST_UNAVAILABLE = ("fast=True: the fast reader cannot run here (it needs symusic and numba: "
                    "pip install symusic); every file is read with mido (parse.read_midi)")


def read_corpus(sources, selection: parse.Selection = parse.Selection(), *,
                cache_dir="default", workers: int | None = None,
                progress: bool = True, shared: bool | None = None,
                scheduler: str | None = None, fast: bool = False) -> Corpus:
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
    ``fast``: try each file with ``fast_reader.read_midi_fast`` first (symusic's parser and
    numba: the same events, so the same cache entries and the same corpus, byte for byte),
    and read with ``parse.read_midi`` where it gives ``None``; ``stats["read_fast"]`` counts
    the files it read. Off by default: its numba kernels compile on first use (about a minute
    on a cold machine, then numba's cache). Without symusic or numba it warns once and reads
    every file with mido.
    """
    paths = parse.expand_sources(sources)
    use_fast = False
    if fast:  # loads symusic and numba here, once, before any worker starts
        from .fast_reader import symusic_available

        use_fast = symusic_available()
        if not use_fast:
            warnings.warn(FAST_UNAVAILABLE, RuntimeWarning, stacklevel=2)
    cache = None if cache_dir is None else Cache(
        default_cache_dir() if cache_dir == "default" else cache_dir, shared=shared)
    try:
        return _read(paths, selection, cache, workers, progress, scheduler, fast=use_fast,
                     count_fast=bool(fast))
    finally:
        if cache is not None:
            cache.close()


def _read(paths, selection, cache, workers, progress, scheduler=None, *, fast=False,
          count_fast=False) -> Corpus:
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
    fresh, read_fast = parse_files(todo, selection, cache, workers, progress, scheduler,
                                   chunk_files=CHUNK_FILES, fast=fast)
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
    if count_fast:  # fast=True: how many of the files parsed now the fast reader read
        stats["read_fast"] = len(read_fast)
    return Corpus(events=concatenate_pieces(pieces), offsets=piece_offsets(pieces), names=names,
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
        bad.append((name, failure_line(err)))
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



def _selection_key(selection) -> str:
    """Short hash of everything besides the bytes that decides a file's result."""
    return selection_key(selection, parse.READER_VERSION)

