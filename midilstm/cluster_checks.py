"""What is checked before anything runs on a Dask cluster, each refusal in one line.

``connect(scheduler)`` gives a ``distributed.Client`` (an address, or a scheduler file), or
``ParameterError("--scheduler", ...)``: dask not installed (``pip install midilstm[cluster]``),
the scheduler unreachable. ``check_workers`` refuses a cluster without workers, or whose
workers cannot import midilstm or run another midilstm (a digest of its code, notebooks and
bundled music is compared). ``check_shared`` refuses a folder that a worker does not see
(each worker reads a probe file written here and writes one back, which is read here), and
``check_same_file`` a file that a worker reads with other bytes. ``midilstm.cluster.executor``
runs them all before it gives its executor.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from pathlib import Path

from .cluster_errors import error_line as _line
from .errors import ParameterError

OPTION = "--scheduler"
INSTALL = "pip install midilstm[cluster]"
CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 10  # a cluster with no worker after this long is refused
PROBE = ".midilstm-probe-"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ParameterError(OPTION, f"needs dask and distributed, which are not installed: "
                                     f"{INSTALL}") from None
    return distributed


def connect(scheduler: str):
    """A ``distributed.Client`` of the scheduler at ``scheduler`` (an address, or the path of
    a scheduler file), or one line saying why not."""
    distributed = _distributed()
    scheduler = str(scheduler).strip()
    if not scheduler:
        raise ParameterError(OPTION, "is empty: give the scheduler's address "
                                     "(tcp://HOST:8786) or its scheduler file")
    as_file = os.path.isfile(scheduler)
    try:
        if as_file:
            return distributed.Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT_S,
                                      set_as_default=False)
        return distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except Exception as err:  # noqa: BLE001  OSError, TimeoutError, a malformed address, ...
        reason = _line(err)
        if "timed out" in reason.lower():
            reason = f"no answer within {CONNECT_TIMEOUT_S} s"
        raise ParameterError(OPTION, f"cannot reach the Dask scheduler at {scheduler}: {reason}"
                                     "; start one with 'dask scheduler' and give its address "
                                     "(see docs/cluster.md)") from None


def check_workers(client, scheduler: str = "the scheduler") -> dict:
    """``{worker address: its facts}``; refuses a cluster without workers, or whose workers
    cannot import midilstm or run other code than this process."""
    deadline = time.monotonic() + WORKERS_TIMEOUT_S
    while not client.scheduler_info().get("workers"):
        if time.monotonic() > deadline:
            raise ParameterError(OPTION, f"{scheduler} has no workers (none joined within "
                                         f"{WORKERS_TIMEOUT_S} s); start some with "
                                         f"'dask worker {scheduler}'")
        time.sleep(0.2)
    facts = _run_everywhere(client, _worker_facts)
    mine = _worker_facts()
    for address, theirs in sorted(facts.items()):
        if isinstance(theirs, BaseException):
            if isinstance(theirs, ImportError):
                raise ParameterError(OPTION, f"worker {address} cannot import midilstm "
                                             f"({_line(theirs)}): install it on every worker "
                                             f"({INSTALL})")
            raise ParameterError(OPTION, f"worker {address} fails a simple task: "
                                         f"{_line(theirs)}")
        if theirs["code"] != mine["code"]:
            raise ParameterError(OPTION, f"worker {address} runs another midilstm than this "
                                         f"process (its code, notebooks or music differ: "
                                         f"{theirs['where']} there, {mine['where']} here): "
                                         "install the same version on every worker")
    return facts


def check_shared(client, folder) -> None:
    """Every worker sees ``folder`` at the same path, and can write in it: each reads a probe
    file written here, and writes one back that is read here. One line if not."""
    folder = Path(folder).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = folder / f"{PROBE}{token}"
        probe.write_text(token)
    except OSError as err:
        raise ParameterError(OPTION, f"{folder}: cannot write the probe file here "
                                     f"({err.strerror or err})") from None
    try:
        answers = _run_everywhere(client, _probe, str(probe), token)
        for address, answer in sorted(answers.items()):
            why = _probe_answer(address, answer, token)
            if why:
                raise ParameterError(OPTION, f"worker {address} does not share {folder}: {why};"
                                             " it must be on a file system every worker sees "
                                             "at the same path (see docs/cluster.md)")
    finally:
        for leftover in folder.glob(f"{PROBE}{token}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _probe_answer(address, answer, token) -> str | None:
    """Why a worker's answer to the probe shows it does not share the folder, or None."""
    if isinstance(answer, BaseException):
        return _line(answer)
    if not answer.startswith("wrote "):
        return answer
    back = Path(answer[len("wrote "):])
    try:
        seen = back.read_text()
    except OSError as err:
        return f"the probe file it wrote is not here ({err.strerror or err})"
    return None if seen == f"{token} {address}" else "the probe file it wrote reads otherwise here"


def check_same_file(client, path, digest: str) -> None:
    """Every worker reads ``path`` with the sha256 ``digest`` (the bytes hashed here)."""
    answers = _run_everywhere(client, _file_digest, str(path))
    for address, answer in sorted(answers.items()):
        if answer == digest:
            continue
        why = _line(answer) if isinstance(answer, BaseException) else \
            "its bytes differ from this machine's" if isinstance(answer, str) and \
            len(answer) == 64 else str(answer)
        raise ParameterError(OPTION, f"worker {address} does not read {path} as this machine "
                                     f"does ({why}); the MIDI files must be on a file system "
                                     "every worker sees at the same path (see docs/cluster.md)")


def _run_everywhere(client, function, *args) -> dict:
    """``client.run`` on every worker: ``{address: result or the exception it raised}``."""
    try:
        return client.run(function, *args, on_error="return")
    except Exception as err:  # noqa: BLE001  the scheduler went away, ...
        raise ParameterError(OPTION, f"the cluster did not answer: {_line(err)}") from None


def _worker_facts() -> dict:
    """Which midilstm this process runs: a digest of its modules, its notebooks (a sweep's
    point runs them) and the checksums of its bundled music."""
    from .music import MUSIC_DIR, data_dir

    package = Path(__file__).resolve().parent
    files = [*sorted(package.glob("*.py")),
             *sorted(data_dir("notebooks", "01_parse.ipynb").glob("*.ipynb")),
             MUSIC_DIR / "SHA256SUMS"]
    digest = hashlib.sha256()
    for path in files:
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"code": digest.hexdigest(), "where": str(package), "pid": os.getpid()}


def _probe(path: str, token: str, dask_worker=None) -> str:
    """On a worker: read the probe file, write one beside it; ``"wrote PATH"`` or why not."""
    try:
        seen = Path(path).read_text()
    except OSError as err:
        return f"it cannot read the probe file {path} ({err.strerror or err})"
    if seen != token:
        return f"it reads other contents in the probe file {path}"
    address = dask_worker.address
    back = Path(f"{path}-{hashlib.sha256(address.encode()).hexdigest()[:16]}")
    try:
        back.write_text(f"{token} {address}")
    except OSError as err:
        return f"it cannot write in {back.parent} ({err.strerror or err})"
    return f"wrote {back}"


def _file_digest(path: str):
    from . import smf

    try:
        return hashlib.sha256(smf.read_file_bytes(path)).hexdigest()
    except Exception as err:  # noqa: BLE001
        return f"it cannot read it: {_line(err)}"
