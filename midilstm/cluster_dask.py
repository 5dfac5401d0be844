"""The cluster's executor: ``DaskExecutor``, a Dask client's executor with a local pool's ways.

``client.get_executor()`` gives ``concurrent.futures`` futures; this one's futures raise
``WorkerLost`` (one line) for a task whose worker was lost each time it ran it, it takes
``shutdown(cancel_futures=)``, and ``stop()`` (Ctrl-C) cancels every task and sends SIGTERM to
this session's task processes (``isolate=True``: each task in its own process on its worker,
``midilstm.cluster_task``), awaiting their end. Tasks run in a worker's threads
(``isolate=False``) finish, and their results are dropped.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import uuid

from .cluster_errors import Interrupted, WorkerLost, error_line as _line
from .cluster_task import STOP_TIMEOUT_S, _interrupt, _isolated
from .errors import MidilstmError


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
