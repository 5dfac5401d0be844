"""How a task on the cluster fails: ``WorkerLost``, ``Interrupted``, and errors in one line.

The base of ``midilstm.cluster``'s modules (``cluster_task``, ``cluster_dask``,
``cluster_checks``, ``cluster``): it imports none of them.
"""
from __future__ import annotations

from .errors import MidilstmError


class WorkerLost(MidilstmError, RuntimeError):
    """A task whose worker (or the task's own process) died, each time it was tried."""

    def __init__(self, what, reason: str):
        super().__init__(what, reason)


class Interrupted(MidilstmError, RuntimeError):
    """A task stopped by Ctrl-C (a ``KeyboardInterrupt`` on a worker would end the worker)."""


def error_line(err, limit: int = 300) -> str:
    """``Type: message`` (or ``str(err)`` for what is not an exception) in one line of at most
    ``limit`` characters."""
    try:
        text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
    except Exception:  # noqa: BLE001
        text = type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
