"""A collection of MIDI files as compact arrays: read in parallel, cached, memory-mappable.

``read_midi_files`` keeps one ``Parsed`` (Python objects, about 48 bytes per note) per file and
parses every file again on every run. For thousands of files this module instead

* reads files in parallel worker processes (chunks of files per task, a progress bar);
* caches each file's events on disk, keyed by the sha256 of its bytes, the ``Selection`` and
  the reader's version, so a second run parses nothing (a changed file or reader misses);
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

import hashlib
import io
import json
import os
import stat
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import parse, smf
from .errors import MidiInputError, ParameterError
from .events import EVENT_DTYPE
from .files import write_bytes_atomic, write_json_atomic

CACHE_FORMAT = 3  # bump when the layout of a cache entry changes
CHECKSUM_BYTES = 16  # each cache entry ends with a blake2b digest of its content
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


def default_cache_dir() -> Path:
    """``$MIDILSTM_CACHE``, else ``$XDG_CACHE_HOME/midilstm``, else ``~/.cache/midilstm``."""
    if os.environ.get("MIDILSTM_CACHE"):
        return Path(os.environ["MIDILSTM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midilstm"


def read_corpus(sources, selection: parse.Selection = parse.Selection(), *,
                cache_dir="default", workers: int | None = None,
                progress: bool = True) -> Corpus:
    """Read files, folders (recursively) or glob patterns into a ``Corpus``.

    ``cache_dir``: where each file's result is kept (``"default"``: ``default_cache_dir()``,
    ``None``: no cache). ``workers``: parser processes (``None``: one per CPU; ``1``: parse
    in this process). Files whose bytes are identical are read once: the first (in sorted
    order) becomes the piece, the others are listed in ``duplicates``.
    """
    cache = None if cache_dir is None else Path(
        default_cache_dir() if cache_dir == "default" else cache_dir)
    paths = parse.expand_sources(sources)
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
    results = {key: _load_cached(cache, key) for key in first_of} if cache else {}
    todo = [(str(path), key) for key, path in first_of.items() if results.get(key) is None]
    fresh = _parse_all(todo, selection, cache, workers, progress)
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
    write), so it is hashed again next time."""
    index = None if cache is None else _cache_path(cache, hashlib.sha256(
        "\0".join(map(str, paths)).encode()).hexdigest()[:32], ".stat.json")
    known = _read_index(index)
    digests, bad, remembered = {}, [], {}
    for path in paths:
        name = str(path)
        try:
            info = os.stat(path)
            status = [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
        except OSError:
            info = status = None
        entry = known.get(name)
        if (entry and entry[0] == status and stat.S_ISREG(info.st_mode)
                and info.st_size <= smf.ReadLimits().max_bytes):
            digests[path] = entry[1]
            remembered[name] = entry
            continue
        started = time.time_ns()
        try:  # the reader's own checks: regular files only, at most its size limit
            digests[path] = hashlib.sha256(smf.read_file_bytes(path)).hexdigest()
        except MidiInputError as err:
            bad.append((name, err.reason))
            continue
        if status and max(status[3], status[4]) < started - SETTLED_NS:
            remembered[name] = [status, digests[path]]
    if index and remembered != known:  # a lost or torn index only means hashing again
        write_bytes_atomic(index, json.dumps(remembered).encode(), durable=False, clean=False)
    return digests, bad


def _read_index(path) -> dict:
    """``{path: [status, sha256]}`` as last written, or ``{}`` (none yet, or damaged)."""
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read())
    except (OSError, TypeError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


# --- parsing in worker processes --------------------------------------------------------------

def _parse_all(todo, selection, cache, workers, progress) -> dict:
    """``{key: events or reason}`` for every ``(path, key)`` of ``todo``."""
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ParameterError("workers", f"must be >= 1, not {workers}")
    chunks = [todo[i:i + CHUNK_FILES] for i in range(0, len(todo), CHUNK_FILES)]
    results = {}
    with tqdm(total=len(todo), desc="reading", unit="file", disable=not progress) as bar:
        if workers == 1 or len(chunks) <= 1:
            for chunk in chunks:
                results.update(_parse_chunk(chunk, selection, cache))
                bar.update(len(chunk))
            return results
        with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
            futures = {pool.submit(_parse_chunk, chunk, selection, cache): len(chunk)
                       for chunk in chunks}
            for future in as_completed(futures):
                results.update(future.result())
                bar.update(futures[future])
    return results


def _parse_chunk(chunk, selection, cache) -> dict:
    """Parse files and store each result (events or the reason it failed) in the cache."""
    results = {}
    for path, key in chunk:
        keep = cache is not None
        try:
            result = parse.read_midi(path, selection).events
        except MidiInputError as err:
            result = err.reason
        except Exception as err:  # noqa: BLE001  a reader bug must not end a run of 100,000 files
            result = f"reader failed ({type(err).__name__}: {err}); please report it"
            keep = False  # not cached: a fixed reader will try again
        if keep:
            _store_cached(cache, key, result)
        results[key] = result
    return results


# --- the cache: one file per (content, selection, reader version) -----------------------------

def _selection_key(selection) -> str:
    """Short hash of everything besides the bytes that decides a file's result."""
    reader = parse.READER_VERSION
    text = f"{CACHE_FORMAT}|{reader}|{selection!r}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_path(cache, key: str, suffix: str) -> str:
    # plain strings, not Path objects: a warm read looks up thousands of these
    return os.path.join(cache, key[:2], key + suffix)


def _store_cached(cache: Path, key: str, result):
    """Raw EVENT_DTYPE bytes (no .npy header: a warm run loads thousands of these, and parsing a
    header costs more than reading a small piece) or the failure reason, then a checksum. The
    entry is not flushed to disk (``durable=False``, which lets parallel workers scale): a
    torn entry after a power cut fails its checksum and is simply parsed again."""
    if isinstance(result, str):
        path, data = _cache_path(cache, key, ".bad"), result.encode()
    else:
        path = _cache_path(cache, key, ".events")
        data = np.ascontiguousarray(result, EVENT_DTYPE).tobytes()
    write_bytes_atomic(path, data + _checksum(data), durable=False, clean=False)


def _load_cached(cache: Path, key: str):
    """The cached events or failure reason, or ``None`` on a miss (or a damaged entry)."""
    for suffix in (".events", ".bad"):
        try:
            with open(_cache_path(cache, key, suffix), "rb") as f:
                entry = f.read()
        except OSError:
            continue
        data, checksum = entry[:-CHECKSUM_BYTES], entry[-CHECKSUM_BYTES:]
        if len(entry) <= CHECKSUM_BYTES or _checksum(data) != checksum:
            return None  # damaged: parse again
        if suffix == ".bad":
            return data.decode("utf-8", errors="replace")
        if len(data) % EVENT_DTYPE.itemsize:
            return None
        return np.frombuffer(data, EVENT_DTYPE)  # read-only; the corpus concatenates a copy
    return None


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=CHECKSUM_BYTES).digest()


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
