"""Where parallel work runs: the local process pool, or a Dask distributed cluster.

``executor(scheduler, workers)`` is a context manager that gives a ``concurrent.futures``
executor. Without a scheduler it is a local ``ProcessPoolExecutor`` of ``workers``
processes, as before. With one (``tcp://host:8786``, or the path of a scheduler file) it is
the cluster's executor (``distributed.Client(address).get_executor()``): the sweep's points
or the corpus's files run on the cluster's workers (see docs/cluster.md).

Before anything is submitted, every refusal is one line (``ParameterError("--scheduler",
...)``): dask not installed (``pip install midilstm[cluster]``), the scheduler unreachable,
no workers, workers that cannot import midilstm or run another midilstm (other code,
notebooks or bundled music: a digest of them is compared), and a folder that must be shared (``shared=``: a sweep's directory) that a worker does not
see: each worker reads a probe file written here and writes one back, which is read here.
``same_files=`` ((path, sha256) pairs) are files every worker must read with the same bytes.

What happens when things go wrong:

* **Ctrl-C** (any exception leaving the ``with`` block): futures not started are cancelled;
  locally the pool's processes get SIGTERM (as ``sweeps`` did); on the cluster, tasks run
  with ``isolate=True`` have their process sent SIGTERM on whichever worker runs them, and
  their end is awaited (up to a minute), so a sweep point marks its run interrupted as it
  does locally. Tasks run in a worker's threads (``isolate=False``: the corpus's chunks of
  files, a few seconds each) finish and their results are dropped.
* **A worker lost mid-task** (killed, out of memory, its machine gone): the scheduler runs the
  task again on another worker, up to ``distributed.scheduler.allowed-failures`` times (3 by
  default); then its future raises ``WorkerLost`` (one line) and the caller reports that
  point or file failed. ``retries=`` re-runs tasks that *raise* (Dask's own ``retries``).
  With ``isolate=True`` the task's process dies with its worker (``PR_SET_PDEATHSIG`` on
  Linux, and a watchdog thread), so a lost attempt never writes beside the retry.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .errors import MidilstmError, ParameterError

OPTION = "--scheduler"
INSTALL = "pip install midilstm[cluster]"
CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 10  # a cluster with no worker after this long is refused
STOP_TIMEOUT_S = 60  # how long an interrupted task's process may take to mark its run
PROBE = ".midilstm-probe-"


class WorkerLost(MidilstmError, RuntimeError):
    """A task whose worker (or the task's own process) died, each time it was tried."""

    def __init__(self, what, reason: str):
        super().__init__(what, reason)


class Interrupted(MidilstmError, RuntimeError):
    """A task stopped by Ctrl-C (a ``KeyboardInterrupt`` on a worker would end the worker)."""


@contextlib.contextmanager
def executor(scheduler: str | None, workers: int, *, shared=(), same_files=(),
             isolate: bool = False, initializer=None, retries: int = 0):
    """A ``concurrent.futures`` executor: the local pool (``scheduler=None``) or the cluster's.

    ``workers``: local processes (the cluster's own workers decide its parallelism).
    ``shared``: folders every worker must see and write (checked with a probe file).
    ``same_files``: ``(path, sha256)`` pairs every worker must read with those bytes.
    ``isolate``: on the cluster, run each task in a fresh Python process on its worker (its
    own environment, signals and main thread, as a local pool process has), which Ctrl-C
    stops with SIGTERM. ``initializer``: run in each such process (locally: in each pool
    process) before its task. ``retries``: Dask re-runs a task that raised, this many times.
    """
    workers = int(workers)
    if workers < 1:
        raise ParameterError("workers", f"must be >= 1, not {workers}")
    if scheduler is None:
        pool = LocalPool(workers, initializer)
        try:
            yield pool
        except BaseException:
            _stop_local(pool)
            raise
        pool.shutdown()
        return
    client = connect(scheduler)
    try:
        check_workers(client, scheduler)
        for folder in shared:
            check_shared(client, folder)
        for path, digest in same_files:
            check_same_file(client, path, digest)
        pool = DaskExecutor(client, isolate=isolate, initializer=initializer, retries=retries)
        try:
            yield pool
        except BaseException:
            pool.stop()
            raise
        pool.shutdown(wait=True)
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=10)


class LocalPool(cf.ProcessPoolExecutor):
    """The local ``ProcessPoolExecutor``, whose processes start no task once they got SIGTERM
    (the pool hands a process its next task before the running one ends: without this, a
    task queued there would start after Ctrl-C, and run to its end)."""

    def __init__(self, workers: int, initializer=None):
        super().__init__(max_workers=workers, initializer=_local_init, initargs=(initializer,))

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_local_call, fn, args, kwargs)


_STOPPING = False  # in a local pool's process: SIGTERM came, start nothing more


def _local_init(initializer) -> None:
    if initializer is not None:
        initializer()
    previous = signal.getsignal(signal.SIGTERM)
    if callable(previous):  # the initializer's handler (a sweep's marks its run interrupted)

        def on_sigterm(signum, frame):
            global _STOPPING
            _STOPPING = True
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)


def _local_call(fn, args, kwargs):
    if _STOPPING:
        raise Interrupted("the task", "not started: the pool was stopped")
    return fn(*args, **kwargs)


def _stop_local(pool: cf.ProcessPoolExecutor) -> None:
    """Ctrl-C locally: no new tasks; SIGTERM to the pool's processes (a sweep's worker marks
    its run interrupted, then stops), each waited for up to a minute."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=STOP_TIMEOUT_S)


# --- connecting, and what is checked before anything runs ---------------------------------------

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


# --- the cluster's executor ----------------------------------------------------------------------

class DaskExecutor(cf.Executor):
    """``client.get_executor()`` with what a local pool gives: futures whose lost worker is
    ``WorkerLost`` (one line), ``shutdown(cancel_futures=)``, and ``stop()`` for Ctrl-C."""

    def __init__(self, client, *, isolate=False, initializer=None, retries=0):
        self.client = client
        self.session = uuid.uuid4().hex
        self.isolate = isolate
        self.initializer = initializer
        self._inner = client.get_executor(pure=False, retries=int(retries))
        self._futures = []
        self._stopping = False  # cancelling on purpose: a cancelled task is no failure

    def submit(self, fn, /, *args, **kwargs):
        if self.isolate:
            inner = self._inner.submit(_isolated, self.session, self.initializer, fn, args,
                                       kwargs, os.getcwd())
        else:
            inner = self._inner.submit(_in_thread, fn, args, kwargs)
        outer = cf.Future()
        label = "the task"

        def settle(done):
            if done.cancelled() and (self._stopping or outer.cancelled()):
                if outer.cancel():
                    with contextlib.suppress(RuntimeError):  # wakes wait() and as_completed()
                        outer.set_running_or_notify_cancel()
                return
            if done.cancelled():  # not by us: the scheduler went away, or forgot it
                if not outer.done():
                    outer.set_exception(WorkerLost(label, "the cluster cancelled it (did its "
                                                          "scheduler stop?)"))
                return
            error = done.exception()
            if outer.done():
                return
            if error is None:
                outer.set_result(done.result())
            else:
                outer.set_exception(_translated(error, label))

        outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
        inner.add_done_callback(settle)
        self._futures.append(inner)
        return outer

    def shutdown(self, wait=True, *, cancel_futures=False):
        if cancel_futures:
            self._stopping = True
            for future in self._futures:
                future.cancel()
        self._inner.shutdown(wait=wait)

    def stop(self) -> None:
        """Ctrl-C: cancel every task; SIGTERM to this session's task processes on every
        worker, and wait for them to end."""
        with contextlib.suppress(Exception):
            self.shutdown(wait=False, cancel_futures=True)
        if self.isolate:
            with contextlib.suppress(Exception):
                self.client.run(_interrupt, self.session, STOP_TIMEOUT_S, on_error="return")


def _translated(error: BaseException, label: str) -> BaseException:
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        KilledWorker = ()
    if isinstance(error, KilledWorker):
        return WorkerLost(label, "its worker was lost each time it ran it (killed, out of "
                                 "memory or gone: see the workers' logs)")
    if isinstance(error, MidilstmError):
        return error
    if isinstance(error, Exception) and type(error).__module__.startswith(("distributed",
                                                                           "tornado")):
        return WorkerLost(label, f"the cluster failed it: {_line(error)}")
    return error


def _in_thread(fn, args, kwargs):
    """On a worker, in one of its threads (a ``KeyboardInterrupt`` would end the worker)."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise Interrupted("the task", "interrupted") from None


# --- a task in its own process on the worker ------------------------------------------------------

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


def _line(err, limit: int = 300) -> str:
    try:
        text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
    except Exception:  # noqa: BLE001
        text = type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
