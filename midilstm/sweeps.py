"""Sweeps: one run of the series per point of a parameter grid, and their summary.

The points can run in parallel processes (``jobs``). Points that share every parameter of
01_parse..03_train share one parse, encoding and trained model: it runs once, and its files are
copied into the other points' directories before their own 04_generate and 05_evaluate. A
failing point is recorded and the others go on; ``summary.csv`` collects every run's metrics
and ``summary.png`` plots each swept parameter against the measures it can move
(``sweep_plot``). Each event (a point starts, is done, failed or was interrupted; the summary)
is one line written in one piece (``say``), so parallel points' lines never run together.
The sweep folder is checked writable before any point runs, and nothing in it is written
through a link (``files``). A point that succeeds loses the ``error.txt`` of
an earlier failure; a Ctrl-C never records a point as failed, whatever the signal broke.

    python -m midilstm sweep -p temperature 0.8 1.0 -p n_time_bins 16 32 --jobs 2 --out runs/sweep1
    python -m midilstm sweep --grid examples/grid.yaml --out runs/sweep2
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import signal
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path

from . import cluster
from . import params as parameters
from .errors import MidilstmError, ParameterError, RunDirError
from .failures import check_writable, one_line
from .files import register_root, remove_in, write_bytes_atomic
from .runs import SERIES, UPSTREAM, run_series, shown
from .sweep_plot import write_summary_png
from .values import check_parameters, load_yaml, plain


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
    grid = load_yaml(text, "--grid", f"{path}: ")
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
          log=None, scheduler: str | None = None) -> SweepResult:
    """One run per point of ``grid`` ({name: [values]}) into ``out/run_XXX``, then summary.csv.

    Points that agree on every parameter of 01..03 share one run of them. A failing point is
    recorded in the summary, not raised; Ctrl-C writes the summary of what finished, then raises.
    """
    log = log or say
    points = grid_points(grid, base)
    out = Path(out).resolve()
    check_writable(out, "the sweep folder")
    register_root(out)
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

        _map([(points[i], paths[i], UPSTREAM, mode, None) for i in heads], jobs, upstream_done,
             scheduler, out)
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
             lambda k, error: results.update({downstream[k][0]: error}), scheduler, out)
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


def _map(jobs: list, n_jobs: int, on_done, scheduler=None, out=None) -> None:
    """``_run_point`` over ``jobs``, calling ``on_done(index, error)`` as each ends: in this
    process, in ``n_jobs`` worker processes, or on the Dask cluster at ``scheduler`` (each
    point in its own process on a worker; ``out`` shared with the workers), which Ctrl-C
    stops cleanly (each marks its run interrupted; see ``midilstm.cluster``)."""
    if scheduler is None and (n_jobs <= 1 or len(jobs) <= 1):
        for k, job in enumerate(jobs):
            on_done(k, _run_point(job))
        return
    with cluster.executor(scheduler, min(n_jobs, len(jobs)), shared=[out] if out else (),
                          isolate=True, initializer=_worker_start) as pool:
        futures = {pool.submit(_run_point, job): k for k, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    error = future.result()
                except Exception as err:  # noqa: BLE001  its worker lost each time, or its process
                    error = one_line(err)
                on_done(futures[future], error)


_RUNNING = False  # in a worker process: a point is running (SIGTERM interrupts it)
_STOPPED = False  # the point was told to stop: whatever it raises next is no failure of its own


def _worker_start() -> None:
    """Workers leave Ctrl-C to the parent, which stops them with SIGTERM; they import papermill
    (seconds) before taking a point, so a stop while it loads ends the worker quietly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    import papermill  # noqa: F401


def _stop_worker(signum, frame):
    global _STOPPED
    if _RUNNING:
        _STOPPED = True
        raise KeyboardInterrupt
    raise SystemExit(0)


def _run_point(job) -> str | None:
    """Run one sweep point's notebooks; returns None, or its error in one line (and error.txt)."""
    global _RUNNING, _STOPPED
    params, path, series, mode, copy_from = job
    if mode == "new" and path.exists():  # only this sweep made it (a "new" sweep refuses
        mode = "resume"                  # existing directories): a lost worker's attempt
    label = f"[{path.name}]"
    _RUNNING, _STOPPED = True, False
    try:
        say(f"{label} {series[0]}..{series[-1]} starts: {shown(params)}")
        run_series(params, path, series=series, mode=mode, copy_from=copy_from,
                   log=lambda *_: None, warn=lambda text: say(f"{label} {text}", sys.stderr))
        remove_in(path.parent, f"{path.name}/error.txt")  # an earlier failure's, now resolved
        say(f"{label} {series[0]}..{series[-1]} done")
        return None
    except KeyboardInterrupt:
        say(f"{label} interrupted")
        raise
    except Exception as err:  # noqa: BLE001 - a failing point must not lose the others
        if _STOPPED:  # the stop broke something (an import half done): interrupted, not failed
            say(f"{label} interrupted")
            raise KeyboardInterrupt from None
        try:
            write_bytes_atomic(path / "error.txt", "".join(traceback.format_exception(err))
                               .encode(), root=path.parent)
        except (OSError, MidilstmError) as why:  # a full disk, a link: the summary still says it
            say(f"{label} error.txt not written: {one_line(why)}", sys.stderr)
        say(f"{label} failed: {one_line(err)}")
        return one_line(err)
    finally:
        _RUNNING = False


def say(text: str, stream=None) -> None:
    """``text`` as one line in one write (a line break in it shown as \\n): ``print`` writes
    the text and its newline apart, and where the stream is unbuffered (PYTHONUNBUFFERED, -u)
    another process's line lands between them, so two points' lines run together."""
    stream = stream or sys.stdout
    stream.write(str(text).replace("\r", "\\r").replace("\n", "\\n") + "\n")
    stream.flush()


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
    write_summary_png(rows, out, grid_names)
    return path
