"""One run of the notebook series with papermill, into one run directory.

A *run* executes the numbered notebooks in order into one run directory, giving each notebook
only the parameters it declares (``params.PARAMETERS`` says which). Every value is checked
before anything runs (``values.check_parameters``: plain data, and valid for the whole series).
The run holds the directory's lock, records its status in the manifest and shows each
notebook's progress. ``sweeps`` runs many; ``refresh`` re-executes the committed notebooks.
Nothing is written through a link in the run directory: the kernel log is appended to from its
folder's descriptor (``O_NOFOLLOW``), and papermill writes each executed notebook to a temporary
file this module created there, which is then written into place (``files``).

    python -m midilstm run -p epochs 50 -p temperature 0.9 --out runs/try1
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import sys
import time
from pathlib import Path

from . import params as parameters
from .errors import MidilstmError, ParameterError
from .failures import one_line
from .files import make_folder, open_append, remove_in, write_bytes_atomic
from .music import data_dir
from .rundir import RunDir
from .values import check_parameters, plain

NOTEBOOK_DIR = data_dir("notebooks", "01_parse.ipynb")
SERIES = parameters.SERIES
UPSTREAM = SERIES[:3]  # parse, encode, train: what sweep points can share
# The kernel's own log (not the notebook's output, which travels over ZMQ) is ipykernel's app
# log on the kernel's stderr: "Kernel is running over TCP" at every start, "KeyboardInterrupt
# caught in kernel" when jupyter_client interrupts it on shutdown. A run sends the kernel's
# stderr to notebooks/kernel.log (crash messages of native code land there too); the
# maintainer's refresh, with no run directory, raises the log level instead.
KERNEL_LOG = "kernel.log"
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
PROGRESS = re.compile(r"^\s*epoch \d+/\d+")  # lines of a notebook's output shown while it runs


def _for_notebook(params: dict, name: str) -> dict:
    return {k: v for k, v in params.items() if name in parameters.PARAMETERS[k].notebooks}


def steps(start: str | None = None, stop: str | None = None) -> tuple:
    """The notebooks from ``start`` to ``stop`` (both included), in series order."""
    for step in (start, stop):
        if step is not None and step not in SERIES:
            raise ParameterError("notebook", f"must be one of {', '.join(SERIES)}, got {step!r}")
    first = SERIES.index(start) if start else 0
    last = SERIES.index(stop) if stop else len(SERIES) - 1
    if first > last:
        raise ParameterError("notebook", f"{start} comes after {stop}")
    return SERIES[first:last + 1]


def run_series(params: dict, out, *, series=SERIES, mode: str = "new", copy_from=None,
               log=print, warn=None) -> Path:
    """Execute the notebooks ``series`` into ``out``, holding its lock, and return its path.

    ``mode`` is what to do with a directory that already holds a run (``RunDir.prepare``):
    "new" refuses it, "force" starts clean, "resume" keeps its files (re-running ``series``).
    ``copy_from``: a run directory whose files (a finished 01..03) are copied in first.
    Raises if a notebook fails (its partial notebook is kept, and the status says "failed").
    """
    import papermill

    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    params = check_parameters(params)
    for name in series:
        if not (NOTEBOOK_DIR / f"{name}.ipynb").is_file():
            raise MidilstmError(NOTEBOOK_DIR / f"{name}.ipynb", "the notebook is missing: "
                                "reinstall midilstm, or run from a checkout that has notebooks/")
    run = RunDir(Path(out).resolve())
    with run.lock():
        run.prepare(mode)
        if copy_from is not None:
            _copy_run(Path(copy_from), run.path)
        run.set_status("running")
        timings = dict(run.manifest().get("wall_seconds") or {})
        try:
            make_folder(run / "notebooks", run.path)
            with _library_logs_to(run / "notebooks" / KERNEL_LOG, run.path):
                _run_notebooks(run, params, series, timings, log, warn, papermill)
        except KeyboardInterrupt:
            run.set_status("interrupted")
            raise
        except BaseException as err:
            run.set_status("failed", one_line(err))
            raise
        extra = {"parameters": params, "wall_seconds": timings}
        if copy_from is not None:
            extra["copied_from"] = {"run": os.path.relpath(copy_from, run.path),
                                    "steps": list(UPSTREAM)}
        run.finish(extra)
        run.set_status("complete")
    return run.path


def _run_notebooks(run, params, series, timings, log, warn, papermill) -> None:
    """Execute ``series`` into ``run``, one notebook after the other, noting their wall times."""
    for name in series:
        mine = _for_notebook(params, name)
        log(f"[{run.path.name}] {name} starts" + (f" {shown(mine)}" if mine else ""))
        start = time.perf_counter()
        with open_append(run / "notebooks" / KERNEL_LOG, run.path) as kernel_log, \
                _executed_notebook(run, name) as executed:
            kernel_log.write(f"--- {name}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            kernel_log.flush()
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{name}.ipynb"), str(executed),
                parameters=plain({**mine, "run_dir": str(run.path)}, name),
                cwd=None,  # the kernel works where the command was typed: paths as typed
                kernel_name="python3", progress_bar=False,
                kernel_manager_class=_kernel_manager(kernel_log),
                stdout_file=ProgressLines(f"[{run.path.name}] {name}", log))
        timings[name] = round(time.perf_counter() - start, 2)
        log(f"[{run.path.name}] {name} done in {timings[name]:.1f} s")
        if name == "01_parse":
            _report_skipped(run, warn)


@contextlib.contextmanager
def _executed_notebook(run: RunDir, name: str):
    """A temporary file this process created in ``notebooks/`` (``O_EXCL``, no link followed),
    for papermill to write the executed notebook ``name`` into as it runs; when it ends, even
    by failing, what papermill wrote is written to ``notebooks/<name>.ipynb`` (its output
    path recorded as that) and the temporary removed."""
    folder = run / "notebooks"
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp.ipynb"  # papermill: .ipynb
    write_bytes_atomic(tmp, b"", durable=False, clean=False, root=run.path)  # made by us, a file
    try:
        yield tmp
    finally:
        try:
            text = tmp.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        if text:
            write_bytes_atomic(folder / f"{name}.ipynb", _with_output_path(
                text, folder / f"{name}.ipynb").encode(), root=run.path)
        remove_in(run.path, os.path.relpath(tmp, run.path))


def _with_output_path(text: str, path) -> str:
    """The executed notebook's JSON with papermill's output_path saying where it lies."""
    try:
        nb = json.loads(text)
        nb["metadata"]["papermill"]["output_path"] = str(path)
    except (ValueError, KeyError, TypeError):
        return text
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def _library_logs_to(path, root):
    """While notebooks run, the log records of papermill, nbclient and asyncio go to the kernel
    log, not the terminal: after a Ctrl-C they would add "Kernel died ..." and a traceback to
    the one line the command prints. The log is opened without following a link."""
    with open_append(path, root) as stream:
        handler = logging.StreamHandler(stream)
        with _handler(handler):
            yield


@contextlib.contextmanager
def _handler(handler):
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("papermill", "nbclient", "asyncio")]
    saved = [(logger.propagate, logger.handlers[:]) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
    try:
        yield
    finally:
        for logger, (propagate, handlers) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate
        handler.close()


def _copy_run(source: Path, dest: Path) -> None:
    """A finished upstream run's files into ``dest`` (not its lock, temporaries, error or
    links), each written there without following a link."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts) or relative.name == "error.txt" \
                or path.is_symlink():
            continue
        if path.is_dir():
            make_folder(dest / relative, dest)
        elif path.is_file():
            write_bytes_atomic(dest / relative, path.read_bytes(), root=dest)


def _kernel_manager(log):
    """A kernel manager whose kernels write their own stdout and stderr to ``log``."""
    from jupyter_client.manager import AsyncKernelManager

    class RunKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return RunKernelManager


class ProgressLines:
    """A papermill ``stdout_file``: passes on the notebook's progress lines (``epoch 3/200 ...``)
    as they are printed, and nothing else of its output."""

    def __init__(self, prefix: str, log):
        self.prefix, self.log, self.pending = prefix, log, ""

    def write(self, text: str) -> None:
        *lines, self.pending = re.split(r"[\r\n]", self.pending + text)
        for line in lines:
            if PROGRESS.match(line):
                self.log(f"{self.prefix}: {line.strip()}")

    def flush(self) -> None:
        pass


def _report_skipped(run: RunDir, warn) -> None:
    """Every file 01_parse skipped, with its reason, one line each on stderr."""
    try:
        skipped = run.parse_report()["skipped"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no report to read: 01_parse itself says why
    for item in skipped:
        warn(f"skipped {item.get('path')}: {item.get('reason')}")


def shown(params: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


