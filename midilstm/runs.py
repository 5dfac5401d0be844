"""Running the notebook series with papermill: one run, a sweep of runs, and their summary.

A *run* executes the numbered notebooks in order into one run directory, giving each notebook
only the parameters it declares (``params.PARAMETERS`` says which). Every value is checked
before anything runs: it must be plain data (a YAML scalar, list or map: never a tag, which
could build an object whose text papermill pastes into the notebook as code) and it must pass
``params.validate``. The run holds the directory's lock, records its status in the manifest
and shows each notebook's progress.

A *sweep* runs one series per point of a parameter grid (in parallel processes if asked).
Points that share every parameter of 01_parse..03_train share one parse, encoding and trained
model: it runs once, and its files are copied into the other points' directories before their
own 04_generate and 05_evaluate. A failing point is recorded and the others go on;
``summary.csv`` and ``summary.png`` collect every run's metrics.

    python -m midilstm run -p epochs 50 -p temperature 0.9 --out runs/try1
    python -m midilstm sweep -p temperature 0.8 1.0 -p n_time_bins 16 32 --jobs 2 --out runs/sweep1
    python -m midilstm sweep --grid examples/grid.yaml --out runs/sweep2
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import params as parameters
from .errors import MidilstmError, ParameterError, RunDirError
from .files import write_bytes_atomic
from .music import data_dir
from .rundir import RunDir

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


# --- parameters: plain data only ---------------------------------------------------------------

class _PlainLoader(yaml.SafeLoader):
    """YAML that can only be data: scalars, lists and maps. Tags (``!!omap``, ``!!python/..``,
    ``!x``), anchors and aliases are refused; dates stay strings."""

    depth, key = 0, None  # key: the top-level map key whose value is being read (a grid's name)

    def compose_node(self, parent, index):
        if self.depth == 1 and isinstance(index, yaml.ScalarNode):
            self.key = index.value
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _NotData(self.key, "YAML anchors and aliases (& and *) are not allowed")
        if getattr(event, "tag", None) is not None:
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise _NotData(self.key, f"YAML tags are not allowed (got {tag}): give a plain "
                                     f"number, string, list or map")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _NotData(Exception):
    def __init__(self, key, reason):
        super().__init__(reason)
        self.key, self.reason = key, reason


def _load_yaml(text: str, name: str, source: str = ""):
    """Plain YAML data from ``text``; ``ParameterError`` naming the parameter (for a grid file,
    the entry at fault) and ``source`` (the file) otherwise."""
    try:
        return yaml.load(text, Loader=_PlainLoader)
    except _NotData as err:
        raise ParameterError(err.key or name, source + err.reason) from None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err)
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParameterError(name, f"{source}not valid YAML: {problem}{where}") from None


def parse_value(text: str, name: str):
    """A ``-p NAME VALUE`` value, read as plain YAML: ``0.5``, ``[0, 1]``, ``null``, ``log``."""
    return plain(_load_yaml(text, name), name)


def plain(value, name: str):
    """``value`` if it is plain data (str, int, float, bool, None, and lists and string-keyed
    dicts of them), the only values papermill writes into a notebook as literals; else
    ``ParameterError``. Tuples, sets, dates and any other object are refused."""
    if value is None or isinstance(value, (str, bool, int, float)):
        if type(value) not in (type(None), str, bool, int, float):  # a subclass can override repr
            raise ParameterError(name, f"must be plain data, got a {type(value).__name__}")
        return value
    if type(value) is list:
        return [plain(v, name) for v in value]
    if type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise ParameterError(name, f"map keys must be strings, got {key!r}")
        return {k: plain(v, name) for k, v in value.items()}
    raise ParameterError(name, f"must be plain data (a number, string, list or map), "
                               f"got a {type(value).__name__}")


def check_parameters(params: dict) -> dict:
    """Every value plain data and valid (types, ranges, combinations) for the whole series;
    returns them normalised. Refused in one line that names the parameter, before anything runs."""
    if "run_dir" in params:
        raise ParameterError("run_dir", "is set by the command: give the run directory with --out")
    return parameters.validate({name: plain(value, name) for name, value in params.items()})


def declared_parameters(name: str) -> dict:
    """The knobs of a notebook's ``parameters`` cell: ``{name: {default, inferred_type_name, help}}``."""
    import papermill

    return papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))


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


# --- one run -------------------------------------------------------------------------------------

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
            (run / "notebooks").mkdir(exist_ok=True)
            with _library_logs_to(run / "notebooks" / KERNEL_LOG):
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
        log(f"[{run.path.name}] {name} starts" + (f" {_shown(mine)}" if mine else ""))
        start = time.perf_counter()
        with open(run / "notebooks" / KERNEL_LOG, "a") as kernel_log:
            kernel_log.write(f"--- {name}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            kernel_log.flush()
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{name}.ipynb"),
                str(run / "notebooks" / f"{name}.ipynb"),
                parameters=plain({**mine, "run_dir": str(run.path)}, name),
                cwd=None,  # the kernel works where the command was typed: paths as typed
                kernel_name="python3", progress_bar=False,
                kernel_manager_class=_kernel_manager(kernel_log),
                stdout_file=_ProgressLines(f"[{run.path.name}] {name}", log))
        timings[name] = round(time.perf_counter() - start, 2)
        log(f"[{run.path.name}] {name} done in {timings[name]:.1f} s")
        if name == "01_parse":
            _report_skipped(run, warn)


@contextlib.contextmanager
def _library_logs_to(path):
    """While notebooks run, the log records of papermill, nbclient and asyncio go to the kernel
    log, not the terminal: after a Ctrl-C they would add "Kernel died ..." and a traceback to
    the one line the command prints."""
    handler = logging.FileHandler(path)
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
    """A finished upstream run's files into ``dest`` (not its lock, temporaries or error)."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts) or relative.name == "error.txt":
            continue
        if path.is_dir():
            (dest / relative).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, dest / relative)


def _kernel_manager(log):
    """A kernel manager whose kernels write their own stdout and stderr to ``log``."""
    from jupyter_client.manager import AsyncKernelManager

    class RunKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return RunKernelManager


class _ProgressLines:
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


def _shown(params: dict) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def one_line(err: BaseException) -> str:
    """The error in one line; for a failed notebook cell, the error raised inside it."""
    name = getattr(err, "ename", None) or type(err).__name__  # papermill's execution error
    text = str(getattr(err, "evalue", None) or err).strip()
    return f"{name}: {(text.splitlines() or [''])[0]}"


# --- sweeps --------------------------------------------------------------------------------------

def grid_values(name: str, value, source: str = "-p") -> list:
    """The values of one grid entry: a list is its values, anything else one value (a string is
    one value, never its letters)."""
    if isinstance(value, list):
        if not value:
            raise ParameterError(name, f"has no values in {source}")
        return value
    return [value]


def load_grid(path) -> dict:
    """A grid file: a YAML map ``{name: [values], ...}`` (a single value counts as one)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ParameterError("--grid", f"{path}: cannot read it ({err.strerror or err})") from None
    grid = _load_yaml(text, "--grid", f"{path}: ")
    if not isinstance(grid, dict):
        got = "an empty file" if grid is None else f"a {type(grid).__name__}"
        raise ParameterError("--grid", f"{path}: must be a map of parameter names to lists of "
                                       f"values, like 'temperature: [0.8, 1.0]', not {got}")
    out = {}
    for name, value in grid.items():
        if not isinstance(name, str):
            raise ParameterError("--grid", f"{path}: parameter names are strings, got {name!r}")
        out[name] = grid_values(name, plain(value, name), str(path))
    if not out:
        raise ParameterError("--grid", f"{path}: no parameters in it")
    return out


def grid_points(grid: dict, base: dict | None = None) -> list[dict]:
    """Every combination of the grid's values over ``base``, each checked in full before any runs."""
    names = list(grid)
    points = [{**(base or {}), **dict(zip(names, values))}
              for values in itertools.product(*(grid[n] for n in names))]
    for point in points:
        check_parameters(point)
    return points


@dataclass
class SweepResult:
    summary: Path
    rows: list

    @property
    def failed(self) -> int:
        return sum(row["status"] != "ok" for row in self.rows)


def sweep(grid: dict, out, *, base: dict | None = None, jobs: int = 1, mode: str = "new",
          log=print) -> SweepResult:
    """One run per point of ``grid`` ({name: [values]}) into ``out/run_XXX``, then summary.csv.

    Points that agree on every parameter of 01..03 share one run of them. A failing point is
    recorded in the summary, not raised; Ctrl-C writes the summary of what finished, then raises.
    """
    points = grid_points(grid, base)
    out = Path(out).resolve()
    paths = [out / f"run_{i:03d}" for i in range(len(points))]
    if mode == "new" and ((out / "summary.csv").exists() or any(p.exists() for p in paths)):
        raise RunDirError(out, "already holds a sweep: use --force to start clean or --resume "
                               "to keep it and re-run")
    leaders = {}  # upstream parameters -> index of the point that runs 01..03 for its group
    for i, point in enumerate(points):
        leaders.setdefault(_upstream_key(point), i)
    results = {}  # point index -> None (ok) or its error, as each point ends
    try:
        heads = list(leaders.values())
        failed_upstream = {}  # leader index -> its error in 01..03

        def upstream_done(k, error):
            if error:
                failed_upstream[heads[k]] = error

        _map([(points[i], paths[i], UPSTREAM, mode, None) for i in heads], jobs, upstream_done)
        downstream = []
        for i, point in enumerate(points):
            lead = leaders[_upstream_key(point)]
            if lead in failed_upstream:  # its 01..03 failed: nothing more to run
                results[i] = failed_upstream[lead] if i == lead else \
                    f"not run: {paths[lead].name} failed in 01..03 ({failed_upstream[lead]})"
                continue
            copy = None if i == lead else paths[lead]
            downstream.append((i, (point, paths[i], SERIES[3:], mode if copy else "resume", copy)))
        _map([job for _, job in downstream], jobs,
             lambda k, error: results.update({downstream[k][0]: error}))
    except KeyboardInterrupt:
        _write_sweep_summary(points, paths, results, grid, out, interrupted=True)
        raise
    result = _write_sweep_summary(points, paths, results, grid, out)
    log(f"{len(points) - result.failed} of {len(points)} points ok" +
        (f", {result.failed} failed" if result.failed else ""))
    return result


def _upstream_key(point: dict) -> str:
    return json.dumps({k: v for k, v in sorted(point.items())
                       if set(parameters.PARAMETERS[k].notebooks) & set(UPSTREAM)})


def _write_sweep_summary(points, paths, results, grid, out, interrupted=False) -> SweepResult:
    rows = []
    for i, (point, path) in enumerate(zip(points, paths)):
        if i in results:
            rows.append(_summary_row(point, path, results[i]))
        elif interrupted:
            rows.append(_summary_row(point, path, "interrupted"))
    return SweepResult(write_summary(rows, out, list(grid)), rows)


def _map(jobs: list, n_jobs: int, on_done) -> None:
    """``_run_point`` over ``jobs``, calling ``on_done(index, error)`` as each ends: in this
    process, or in ``n_jobs`` worker processes that Ctrl-C stops cleanly (each marks its run
    interrupted)."""
    if n_jobs <= 1 or len(jobs) <= 1:
        for k, job in enumerate(jobs):
            on_done(k, _run_point(job))
        return
    pool = ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), initializer=_worker_signals)
    futures = {pool.submit(_run_point, job): k for k, job in enumerate(jobs)}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(futures[future], future.result())
    except KeyboardInterrupt:
        workers = multiprocessing.active_children()
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()  # SIGTERM: the worker marks its run interrupted, then stops
        for worker in workers:
            worker.join(timeout=60)
        raise
    pool.shutdown()


_RUNNING = False  # in a worker process: a point is running (SIGTERM interrupts it)


def _worker_signals() -> None:
    """Workers leave Ctrl-C to the parent, which stops them with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)


def _stop_worker(signum, frame):
    if _RUNNING:
        raise KeyboardInterrupt
    raise SystemExit(0)


def _run_point(job) -> str | None:
    """Run one sweep point's notebooks; returns None, or its error in one line (and error.txt)."""
    global _RUNNING
    params, path, series, mode, copy_from = job
    label = f"[{path.name}]"
    _RUNNING = True
    try:
        print(f"{label} {series[0]}..{series[-1]} starts: {_shown(params)}", flush=True)
        run_series(params, path, series=series, mode=mode, copy_from=copy_from,
                   log=lambda *_: None, warn=lambda text: print(f"{label} {text}", file=sys.stderr))
        print(f"{label} {series[0]}..{series[-1]} done", flush=True)
        return None
    except KeyboardInterrupt:
        print(f"{label} interrupted", flush=True)
        raise
    except Exception as err:  # a failing point must not lose the others
        path.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path / "error.txt", "".join(traceback.format_exception(err)).encode())
        print(f"{label} failed: {one_line(err)}", flush=True)
        return one_line(err)
    finally:
        _RUNNING = False


def _summary_row(point: dict, path: Path, error: str | None) -> dict:
    status = "ok" if error is None else "interrupted" if error == "interrupted" else "failed"
    row = {"run": path.name, "status": status, "error": error or ""}
    row.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in point.items()})
    metrics_path = path / "metrics.json"
    if metrics_path.exists():
        row.update(_flatten(json.loads(metrics_path.read_text())))
    return row


def _flatten(obj, prefix="") -> dict:
    """Nested metrics -> {"section.key": number}; lists and strings are left out of the table."""
    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def write_summary(rows: list[dict], out: Path, grid_names: list[str]) -> Path:
    columns = ["run", "status", "error", *grid_names]
    columns += sorted({k for row in rows for k in row} - set(columns))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = write_bytes_atomic(out / "summary.csv", buffer.getvalue().encode())
    _plot_summary(rows, out, grid_names)
    return path


def _plot_summary(rows, out: Path, grid_names):
    """Validation NLL of every run (and the best baseline, when known), one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_png
    ok = [r for r in rows if r["status"] == "ok" and "train.val_nll" in r]
    varied = [n for n in grid_names if len({str(r.get(n)) for r in rows}) > 1] or grid_names
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5))
    labels = ["\n".join(f"{n}={r.get(n)}" for n in varied) for r in ok]
    ax.bar(range(len(ok)), [r["train.val_nll"] for r in ok], color="tab:blue")
    ax.set_xticks(range(len(ok)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("validation NLL (nats/event)")
    failed = len(rows) - len(ok)
    ax.set_title(f"{len(ok)} runs" + (f", {failed} failed" if failed else ""))
    save_png(fig, out / "summary.png", bbox_inches="tight")


# --- the committed notebooks ---------------------------------------------------------------------

def refresh_notebooks(series=SERIES, log=print, force: bool = False) -> None:
    """Re-execute the committed notebooks with their own defaults (after an intended change), so
    their stored outputs match what nbval will see. What changes from one execution to the next
    (times, durations, absolute paths) is dropped, and a notebook whose sources and checked
    outputs (those nbval compares) did not change is left as it was, so nothing changed gives
    no diff: only cells tagged ``nbval-ignore-output`` (timings, progress bars) would differ.
    ``force`` writes every notebook anyway: after a source edit made in the file itself, whose
    ignored outputs would otherwise stay those of the old source."""
    import tempfile

    import papermill

    for name in series:
        path = NOTEBOOK_DIR / f"{name}.ipynb"
        log(f"executing {path.name}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            executed = Path(scratch) / path.name
            papermill.execute_notebook(str(path), str(executed), cwd=str(NOTEBOOK_DIR),
                                       kernel_name="python3", progress_bar=False,
                                       extra_arguments=KERNEL_ARGS,
                                       stdout_file=_ProgressLines(name, log))
            new = stable_notebook(executed.read_text())
        if not force and _checked_view(new) == _checked_view(path.read_text()):
            log(f"{name}: no checked output changed; left as it was")
        else:
            write_bytes_atomic(path, new.encode())
        log(f"{name} done in {time.perf_counter() - start:.1f} s")


def _checked_view(text: str) -> list:
    """What a re-execution must keep for the notebook to count as unchanged: every cell's type,
    tags and source, every figure, and the text outputs nbval checks (those of cells not tagged
    ``nbval-ignore-output``; the others hold timings and progress bars)."""
    view = []
    for cell in json.loads(text)["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        outputs = [str(bool(cell.get("outputs")))]  # a cell that lost its outputs has changed
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            outputs.append("".join(data.get("image/png", "")))
            if "nbval-ignore-output" not in tags:
                outputs.append("".join(out.get("text", "")) + "".join(data.get("text/plain", "")))
        view.append((cell["cell_type"], tags, "".join(cell["source"]), "".join(outputs)))
    return view


def stable_notebook(text: str) -> str:
    """An executed notebook's JSON without papermill's and Jupyter's timing and path metadata."""
    import nbformat

    nb = nbformat.reads(_with_cell_ids(text), as_version=4)
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    text = nbformat.writes(nb)
    for i, model_id in enumerate(_widget_ids(nb)):
        text = text.replace(model_id, f"{i + 1:032x}")
    return nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"  # keys sorted again


def _with_cell_ids(text: str) -> str:
    """Give cells without an id one made from their content (nbformat would draw a random one)."""
    nb = json.loads(text)
    if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) < (4, 5):
        return text
    taken = {c["id"] for c in nb["cells"] if "id" in c}
    for index, cell in enumerate(nb["cells"]):
        if "id" not in cell:
            cell_id = hashlib.sha1("".join(cell.get("source", "")).encode()).hexdigest()[:8]
            cell["id"] = cell_id if cell_id not in taken else f"{cell_id}-{index}"
            taken.add(cell["id"])
    return json.dumps(nb)


def _widget_ids(nb) -> list[str]:
    """The random ids of the notebook's widget models (progress bars), in an order that does not
    depend on them: those shown in outputs, then the models they refer to, then any others."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    state = state.get("state", {})
    queue = re.findall(r'"model_id": "([0-9a-f]{32})"', json.dumps(nb.cells, sort_keys=True))
    queue += sorted(state, key=lambda k: re.sub("[0-9a-f]{32}", "", json.dumps(state[k], sort_keys=True)))
    seen = {}
    while queue:
        model_id = queue.pop(0)
        if model_id not in seen:
            seen[model_id] = None
            queue[:0] = re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state.get(model_id, {}),
                                                                          sort_keys=True))
    return list(seen)


# --- command line --------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  python -m midilstm run --out runs/cooler -p temperature 0.8 -p top_k 20
  python -m midilstm run --out runs/josquin -p piece josquin -p epochs 100
  python -m midilstm run --out runs/mine -p piece songs/ -p channels "[0]"
  python -m midilstm run --out runs/mine --resume --from 03_train -p hidden_size 256
"""

SWEEP_EXAMPLES = """\
examples:
  python -m midilstm sweep --out runs/sweep1 -p temperature 0.8 1.0 -p n_time_bins 16 32
  python -m midilstm sweep --out runs/sweep2 --grid examples/grid.yaml --jobs 2

Points that differ only in 04_generate/05_evaluate parameters share one trained model.
"""


def parameter_help() -> str:
    """The parameter list of ``--help``: name, notebooks, what it is and what values it takes."""
    import textwrap

    lines = ["parameters (-p NAME VALUE; values are plain YAML: 0.5, [0, 1], null, text),",
             "[the notebooks that take them]:"]
    for name, spec in parameters.PARAMETERS.items():
        if name != "run_dir":
            owners = ",".join(n[:2] for n in spec.notebooks)
            lines += textwrap.wrap(f"{name:<19} [{owners}] {spec.help}: {spec.describe()}", 96,
                                   initial_indent="  ", subsequent_indent=" " * 22)
    lines.append("Defaults: the first cell of each notebook, or papermill --help-notebook "
                 "notebooks/03_train.ipynb")
    return "\n".join(lines)


def add_run_commands(commands) -> None:
    import argparse

    formatter = argparse.RawDescriptionHelpFormatter
    run = commands.add_parser(
        "run", help="run the notebook series into a run directory", formatter_class=formatter,
        description="Execute the notebooks 01_parse..05_evaluate into a run directory.",
        epilog=EXAMPLES + "\n" + parameter_help())
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (see the list below)")
    run.add_argument("--out", default=None, help="run directory (default: a new runs/<date>-<time>-<4 hex>)")
    _add_mode(run)
    run.add_argument("--from", dest="start", choices=SERIES, metavar="NOTEBOOK",
                     help="start at this notebook (with --resume: keep the earlier ones' files)")
    run.add_argument("--to", dest="stop", choices=SERIES, metavar="NOTEBOOK",
                     help="stop after this notebook")
    run.set_defaults(handler=_cli_run)

    sw = commands.add_parser(
        "sweep", help="one run per point of a parameter grid", formatter_class=formatter,
        description="One series per point of a grid, into OUT/run_000, run_001, ...; "
                    "summary.csv and summary.png compare them.",
        epilog=SWEEP_EXAMPLES + "\n" + parameter_help())
    sw.add_argument("-p", "--param", nargs="+", action="append", default=[],
                    metavar="NAME VALUES", help="a parameter and the values to try")
    sw.add_argument("--grid", help="YAML file: {name: [values], ...} (see examples/grid.yaml)")
    sw.add_argument("--jobs", type=int, default=1, help="points run in parallel (default 1)")
    sw.add_argument("--out", required=True, help="sweep directory")
    _add_mode(sw)
    sw.set_defaults(handler=_cli_sweep)

    refresh = commands.add_parser(  # the maintainer's (make notebooks): hidden from --help
        "refresh-notebooks", description="Re-execute notebooks/ in place after an intended "
        "change, without times, durations or absolute paths in their metadata.")
    refresh.add_argument("--force", action="store_true",
                         help="rewrite every notebook, even one whose checked outputs did not "
                              "change (after editing a cell's source in the file itself)")
    refresh.add_argument("notebooks", nargs="*", choices=[[], *SERIES], metavar="NOTEBOOK",
                         help="which notebooks (default: the whole series)")
    refresh.set_defaults(handler=lambda args: refresh_notebooks(
        tuple(args.notebooks) or SERIES, force=args.force) or 0)


def _add_mode(parser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true",
                      help="the directory holds a run: delete its results and start clean")
    mode.add_argument("--resume", action="store_true",
                      help="the directory holds a run: keep its files and re-run the notebooks")


def _mode(args) -> str:
    return "force" if args.force else "resume" if args.resume else "new"


def _error(text) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


def _interrupted(kept: str) -> int:
    """Ctrl-C: one line saying what was kept, exit status 130. The process is ending, so the
    notebook client's unfinished tasks (their kernel died with the signal) are not reported."""
    logging.getLogger("asyncio").disabled = True  # "Task exception was never retrieved" at exit
    print(f"interrupted: {kept}", file=sys.stderr, flush=True)
    return 130


def _cli_run(args) -> int:
    from .rundir import unique_run_name

    try:
        params = check_parameters({name: parse_value(value, name) for name, value in args.param})
        series = steps(args.start, args.stop)
    except ParameterError as err:
        _error(err)
        return 2
    out = args.out or unique_run_name("runs")
    try:
        path = run_series(params, out, series=series, mode=_mode(args))
    except KeyboardInterrupt:
        return _interrupted(f"{out} keeps the notebooks that finished and the partial one "
                            f"(status 'interrupted' in its manifest.json)")
    except MidilstmError as err:
        _error(err)
        return 1
    except Exception as err:  # papermill reports which cell failed; keep it to one line here
        _error(f"the run failed: {one_line(err)} (see the executed notebooks in "
               f"{os.path.join(out, 'notebooks')})")
        return 1
    print(f"run directory: {out}")  # as the user typed it
    for name in ("manifest.json", "metrics.json", "generated", "notebooks"):
        if (path / name).exists():
            print(f"  {os.path.join(out, name)}")
    return 0


def _cli_sweep(args) -> int:
    try:
        grid = load_grid(args.grid) if args.grid else {}
        for name, *values in args.param:
            if not values:
                raise ParameterError(name, "-p needs the parameter's name and at least one value")
            grid[name] = [parse_value(v, name) for v in values]
        if not grid:
            raise ParameterError("grid", "give one with -p NAME VALUE... or --grid FILE")
        n_points = len(grid_points(grid))  # every point checked before the first runs
    except ParameterError as err:
        _error(err)
        return 2
    print(f"sweep: {n_points} points into {args.out}", flush=True)
    try:
        result = sweep(grid, args.out, jobs=args.jobs, mode=_mode(args))
    except KeyboardInterrupt:
        return _interrupted(f"{args.out} keeps the points that finished; summary.csv lists "
                            f"them and the interrupted ones")
    except MidilstmError as err:
        _error(err)
        return 1
    print(f"summary: {os.path.join(args.out, result.summary.name)} (and summary.png)")
    if result.failed:
        _error(f"{result.failed} of {len(result.rows)} points failed (see the error column of "
               f"summary.csv and error.txt in their directories)")
        return 1
    return 0
