"""A task in its own process on a cluster worker: ``python -m midilstm.cluster FD PARENT``.

``_isolated`` runs on a worker (``DaskExecutor(isolate=True)`` submits it): it starts a fresh
Python process (a subprocess, not multiprocessing: a nanny's worker is daemonic), sends it
the task on its stdin and reads its outcome from a pipe. The process dies with its worker
(``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread), so a lost attempt never writes beside
the retry. ``_interrupt`` (run on every worker by ``client.run``) sends this session's task
processes SIGTERM for Ctrl-C and waits for them to end. ``_child_main`` is the process's
side; ``midilstm.cluster`` calls it when run as ``python -m midilstm.cluster``.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

from .cluster_errors import Interrupted, WorkerLost, error_line as _line

STOP_TIMEOUT_S = 60  # how long an interrupted task's process may take to mark its run

_CHILDREN: dict = {}  # session -> {Popen}: the task processes of this worker, for _interrupt
_CHILDREN_LOCK = threading.Lock()


def _isolated(session, initializer, fn, args, kwargs, cwd=None):
    """On a worker: run ``fn(*args, **kwargs)`` in a fresh ``python -m midilstm.cluster``
    (a subprocess, not multiprocessing: a nanny's worker is daemonic and may not fork
    multiprocessing children), which dies with this worker. It runs in ``cwd`` (the
    caller's folder) where the worker sees it, so relative paths mean what they mean there."""
    import cloudpickle

    label = "the task"
    payload = cloudpickle.dumps((initializer, fn, args, kwargs))
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-m", "midilstm.cluster", str(write_end),
                                    str(os.getpid())], stdin=subprocess.PIPE,
                                   pass_fds=(write_end,),
                                   cwd=cwd if cwd and os.path.isdir(cwd) else None)
    finally:
        os.close(write_end)
    with _CHILDREN_LOCK:
        _CHILDREN.setdefault(session, set()).add(process)
    try:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(payload)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        code = process.wait()
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.get(session, set()).discard(process)
    if not data:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise WorkerLost(label, f"its process on the worker ended ({how}) before it finished")
    ok, value = pickle.loads(data)
    if ok:
        return value
    if isinstance(value, KeyboardInterrupt):
        raise Interrupted(label, "interrupted")
    if isinstance(value, BaseException) and not isinstance(value, Exception):
        raise WorkerLost(label, f"its process ended: {_line(value)}")
    raise value


async def _interrupt(session, timeout=STOP_TIMEOUT_S) -> int:
    """On a worker (``client.run``): SIGTERM to the session's task processes, then wait for
    them to end (each marks its run interrupted first). Returns how many there were."""
    with _CHILDREN_LOCK:
        processes = list(_CHILDREN.get(session, ()))
    for process in processes:
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _CHILDREN_LOCK:
            if not set(processes) & _CHILDREN.get(session, set()):
                break
        await asyncio.sleep(0.1)
    with _CHILDREN_LOCK:
        if not _CHILDREN.get(session):
            _CHILDREN.pop(session, None)
    return len(processes)


def _die_with(parent: int) -> None:
    """This process gets SIGTERM when ``parent`` (its worker) dies, however it dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="midilstm-parent-watch").start()


def _child_main(fd: int, parent: int) -> None:
    """``python -m midilstm.cluster FD PARENT``: one task from stdin, its outcome to ``FD``."""
    _die_with(parent)
    import cloudpickle

    initializer, fn, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    if initializer is not None:
        initializer()
    try:
        outcome = (True, fn(*args, **kwargs))
    except BaseException as err:  # noqa: BLE001  sent back: the worker raises it
        outcome = (False, err)
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as err:  # noqa: BLE001  a result or error that does not pickle
        data = cloudpickle.dumps((False, RuntimeError(f"its outcome cannot be sent back: "
                                                      f"{_line(err)}")))
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(data)
