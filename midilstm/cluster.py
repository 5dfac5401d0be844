"""Where parallel work runs: the local process pool, or a Dask distributed cluster.

``executor(scheduler, workers)`` is a context manager that gives a ``concurrent.futures``
executor. Without a scheduler it is a local ``ProcessPoolExecutor`` of ``workers``
processes, as before. With one (``tcp://host:8786``, or the path of a scheduler file) it is
the cluster's executor (``distributed.Client(address).get_executor()``): the sweep's points
or the corpus's files run on the cluster's workers (see docs/cluster.md).

Before anything is submitted, every refusal is one line (``ParameterError("--scheduler",
...)``): dask not installed (``pip install midilstm[cluster]``), the scheduler unreachable,
no workers, workers that cannot import midilstm or run another midilstm (other code,
notebooks or bundled music: a digest of them is compared), and a folder that must be shared
(``shared=``: a sweep's directory) that a worker does not see: each worker reads a probe
file written here and writes one back, which is read here.
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

This module is the executor and the local pool; the rest lives beside it, each importing only
those after it: ``cluster_checks`` (connecting, and the checks above), ``cluster_dask`` (the
cluster's executor), ``cluster_task`` (a task in its own process on a worker: ``python -m
midilstm.cluster FD PARENT`` runs its ``_child_main``) and ``cluster_errors`` (``WorkerLost``,
``Interrupted``). Every name is importable from here, as before.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import signal
import sys

from .cluster_checks import (
    CONNECT_TIMEOUT_S,
    INSTALL,
    OPTION,
    PROBE,
    WORKERS_TIMEOUT_S,
    check_same_file,
    check_shared,
    check_workers,
    connect,
)
from .cluster_dask import DaskExecutor
from .cluster_errors import Interrupted, WorkerLost
from .cluster_task import STOP_TIMEOUT_S, _child_main
from .errors import ParameterError

__all__ = ["CONNECT_TIMEOUT_S", "INSTALL", "OPTION", "PROBE", "STOP_TIMEOUT_S",
           "WORKERS_TIMEOUT_S", "DaskExecutor", "Interrupted", "LocalPool", "WorkerLost",
           "check_same_file", "check_shared", "check_workers", "connect", "executor"]


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


if __name__ == "__main__":  # the process of an isolated task (midilstm.cluster_task)
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
