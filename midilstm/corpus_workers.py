"""Reading a corpus's files in parallel: local worker processes, or a Dask cluster's workers.

``parse_files(todo, ...)`` parses every ``(path, cache key)`` of ``todo`` in chunks of files
per task, with a progress bar, and gives ``{key: events or the reason it failed}``. Locally
each worker stores its results in the cache; a chunk whose worker died (out of memory,
killed) is read again one file per fresh worker, so the file that killed it is the only one
listed as failed. With a scheduler, the cluster's workers parse (``midilstm.cluster``): they
get absolute paths, check each file's bytes against the sha256 hashed here (the key's first
part), and send the results back; only this process writes the cache.

With ``fast=True`` each file is tried with ``fast_reader.read_midi_fast`` first (the same
events as ``parse.read_midi``, or ``None``: then ``read_midi`` reads it). No single file stops
the read, whatever goes wrong with it: its result is a one-line reason.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm

from . import cluster, parse, smf
from .errors import MidiInputError, ParameterError


def parse_files(todo, selection, cache, workers, progress, scheduler=None, *,
                chunk_files: int, fast: bool = False) -> tuple[dict, set]:
    """``({key: events or reason} for every (path, key) of todo, {keys the fast reader read})``.

    ``workers``: local processes (``None``: one per CPU; ``1``: parse in this process).
    ``chunk_files``: files per task. ``fast``: try ``read_midi_fast`` first (the caller has
    checked that it can run)."""
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ParameterError("workers", f"must be >= 1, not {workers}")
    remote = scheduler is not None and bool(todo)
    if remote:  # a worker's folder is not this one: it gets each file's absolute path
        todo = [(os.path.abspath(path), key) for path, key in todo]
    chunks = [todo[i:i + chunk_files] for i in range(0, len(todo), chunk_files)]
    results, failed, read_fast = {}, [], set()

    def take(done) -> None:  # a task's (results, keys read fast)
        found, quick = done
        results.update(_kept(found, cache) if remote else found)
        read_fast.update(quick)

    with contextlib.ExitStack() as pool_open:
        pool = None
        if remote or (workers > 1 and len(chunks) > 1):  # checked before the bar shows
            if fast and not remote:  # compiled once here: the pool's processes inherit it
                _warm_up(todo[:chunk_files], selection)
            pool = pool_open.enter_context(cluster.executor(
                scheduler, 1 if remote else min(workers, len(chunks)),
                same_files=[(todo[0][0], todo[0][1].split("-")[0])] if remote else ()))
        with tqdm(total=len(todo), desc="reading", unit="file", disable=not progress) as bar:
            if pool is None:
                for chunk in chunks:
                    take(_parse_chunk(chunk, selection, cache, fast))
                    bar.update(len(chunk))
                return results, read_fast
            if remote:
                futures = {pool.submit(_parse_remote, chunk, selection, fast): chunk
                           for chunk in chunks}
            else:
                futures = {pool.submit(_parse_chunk, chunk, selection, cache, fast): chunk
                           for chunk in chunks}
            for future in as_completed(futures):
                try:
                    done = future.result()
                except Exception:  # noqa: BLE001  its worker died: each file again, alone
                    failed.extend(futures[future])
                    continue
                take(done)
                bar.update(len(futures[future]))
            if remote:  # on the cluster: each file of a lost chunk alone, all at once
                futures = {pool.submit(_parse_remote, [item], selection, fast): item
                           for item in failed}
                for future in as_completed(futures):
                    try:
                        take(future.result())
                    except Exception as err:  # noqa: BLE001  lost again: this file's fault
                        results[futures[future][1]] = _died(err)
                    bar.update(1)
                failed = []
            pool_open.close()  # locally: the pool's processes end before the fresh ones start
            for item in failed:
                take(_parse_alone(item, selection, cache, fast))
                bar.update(1)
    return results, read_fast


def _warm_up(todo, selection) -> None:
    """The fast reader's numba kernels compiled (or loaded from numba's cache) in this process
    before the pool's processes start, so that they inherit them instead of each compiling:
    the first files read until one is read fast (their results are read again by a worker)."""
    from . import fast_reader

    for path, _ in todo:
        with contextlib.suppress(Exception):
            if fast_reader.read_midi_fast(path, selection) is not None:
                return


def _parse_alone(item, selection, cache, fast=False) -> tuple:
    key = item[1]
    try:
        with ProcessPoolExecutor(1) as pool:
            return pool.submit(_parse_chunk, [item], selection, cache, fast).result()
    except Exception as err:  # noqa: BLE001
        return {key: _died(err)}, ()


def _died(err) -> str:
    return f"reader failed (its worker process ended: {failure_line(err)}); please report it"


def _parse_chunk(chunk, selection, cache, fast=False) -> tuple:
    """Parse files and store each result (events or the reason it failed) in the cache:
    ``({key: result}, [keys the fast reader read])``."""
    results, read_fast = {}, []
    for path, key in chunk:
        result, keep, _, quick = _parse_one(path, selection, fast)
        if keep and cache is not None:
            try:
                cache.put(key, result)  # a failed write only means reading it again next time
            except Exception:  # noqa: BLE001
                pass
        results[key] = result
        if quick:
            read_fast.append(key)
    return results, read_fast


def _parse_one(path, selection, fast=False) -> tuple:
    """``(events or reason, whether a cache may keep it, sha256 of the bytes read or None,
    whether the fast reader read it)``."""
    if fast:
        try:  # it never raises; if it did, read_midi reads the file
            quick = _read_midi_fast(path, selection)
        except Exception:  # noqa: BLE001
            quick = None
        if quick is not None:
            return quick.events, True, None, True
    try:
        parsed = parse.read_midi(path, selection)
        return (parsed.events, True, getattr(getattr(parsed, "report", None), "sha256", None),
                False)
    except MidiInputError as err:
        return err.reason, True, None, False
    except Exception as err:  # noqa: BLE001  a reader bug must not end a run of 100,000 files
        return f"reader failed ({failure_line(err)}); please report it", False, None, False
        # a fixed reader will try again: not cached


def _read_midi_fast(path, selection):
    from .fast_reader import read_midi_fast  # imported only where asked for: numba, symusic

    return read_midi_fast(path, selection)


def _parse_remote(chunk, selection, fast=False) -> tuple:
    """On a cluster worker: ``({key: (events or reason, keep)}, [keys read fast])``, for the
    caller to cache. A file whose bytes here are not those the caller hashed (the key's
    sha256) is not read: its reason says so, and it is not kept."""
    results, read_fast = {}, []
    for path, key in chunk:
        digest = key.split("-")[0]
        result, keep, seen, quick = _parse_one(path, selection, fast)
        if keep and seen is None:  # refused by the reader, or read fast: the caller's bytes?
            try:
                seen = hashlib.sha256(smf.read_file_bytes(path)).hexdigest()
            except Exception as err:  # noqa: BLE001
                seen = f"it cannot read it here ({failure_line(err)})"
        if keep and seen != digest:
            result, keep, quick = (f"not read: a cluster worker ({platform.node()}) does not "
                                   "see the bytes hashed here; the files must be on a file "
                                   "system every worker sees at the same path"), False, False
        results[key] = (result, keep)
        if quick:
            read_fast.append(key)
    return results, read_fast


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


def failure_line(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` in one line of at most ``limit`` characters."""
    try:
        text = f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001  a message that cannot even be made (int-to-str limit)
        text = type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
