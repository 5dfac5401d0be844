"""Running the notebook series with papermill: one run, a sweep of runs, and their summary.

A *run* executes the numbered notebooks in order into one run directory, giving each notebook
only the parameters it declares in its ``parameters`` cell. A *sweep* runs one series per point
of a parameter grid (in parallel processes if asked); a failing point is recorded and the others
go on; ``summary.csv`` and ``summary.png`` collect every run's metrics.

    python -m midilstm run -p epochs 50 -p temperature 0.9 --out runs/try1
    python -m midilstm sweep -p temperature 0.8 1.0 -p n_time_bins 16 32 --jobs 2 --out runs/sweep1
    python -m midilstm sweep --grid grid.yaml --out runs/sweep2
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from .files import write_bytes_atomic
from .rundir import RunDir

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SERIES = ("01_parse", "02_encode", "03_train", "04_generate", "05_evaluate")


def declared_parameters(name: str) -> dict:
    """The knobs of a notebook's ``parameters`` cell: ``{name: {default, inferred_type_name, help}}``."""
    import papermill

    return papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))


def run_series(params: dict, out, *, series=SERIES, log=print) -> Path:
    """Execute the notebooks into ``out``; raises if one fails (its partial notebook is kept)."""
    import papermill

    declared = {name: declared_parameters(name) for name in series}
    check_parameters(params, declared)
    params = _with_absolute_piece(params)
    run = RunDir(Path(out).resolve())
    (run / "notebooks").mkdir(exist_ok=True)
    timings = {}
    for name in series:
        mine = {k: v for k, v in params.items() if k in declared[name]}
        start = time.perf_counter()
        log(f"[{run.path.name}] {name} {mine or ''}")
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / f"{name}.ipynb"), str(run / "notebooks" / f"{name}.ipynb"),
            parameters={**mine, "run_dir": str(run.path)}, cwd=str(NOTEBOOK_DIR),
            kernel_name="python3", progress_bar=False)
        timings[name] = round(time.perf_counter() - start, 2)
    run.finish({"parameters": params, "wall_seconds": timings})
    return run.path


def check_parameters(params: dict, declared: dict | None = None) -> None:
    """Refuse, before anything runs, a name no notebook declares (or ``run_dir``: use --out)."""
    declared = declared or {name: declared_parameters(name) for name in SERIES}
    known = set().union(*declared.values()) - {"run_dir"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; the notebooks declare "
                         f"{sorted(known)} (the run directory is given with --out)")


def _with_absolute_piece(params: dict) -> dict:
    """The notebooks run in notebooks/: a ``piece`` path is made absolute (globs survive), so it
    means what it meant where the command was typed. Bundled names stay as they are."""
    from .music import is_bundled

    piece = params.get("piece")
    if not isinstance(piece, str) or is_bundled(piece):
        return params
    return {**params, "piece": os.path.abspath(piece)}


def sweep(grid: dict, out, *, base: dict | None = None, jobs: int = 1, log=print) -> Path:
    """One run per point of ``grid`` ({name: [values]}), into ``out/run_XXX``; returns the
    summary CSV path. Failures are recorded in the summary, not raised."""
    check_parameters({**(base or {}), **grid})
    out = Path(out).resolve()
    names = sorted(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    jobs_args = [({**(base or {}), **point}, out / f"run_{i:03d}") for i, point in enumerate(points)]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_safe_run, jobs_args))
    else:
        results = [_safe_run(args) for args in jobs_args]
    rows = [_summary_row(point, path, error) for point, (path, error) in zip(points, results)]
    for row in rows:
        log(f"{row['run']}: {row['status']}")
    return write_summary(rows, out, names)


def _safe_run(args):
    params, path = args
    try:
        run_series(params, path, log=lambda *_: None)
        return path, None
    except Exception as err:  # a failing point must not lose the others
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "error.txt").write_text("".join(traceback.format_exception(err)))
        return path, _one_line(err)


def _one_line(err: Exception) -> str:
    """The error in one line; for a failed notebook cell, the error raised inside it."""
    name = getattr(err, "ename", None) or type(err).__name__  # papermill's execution error
    text = str(getattr(err, "evalue", None) or err).strip()
    return f"{name}: {(text.splitlines() or [''])[0]}"


def _summary_row(point: dict, path: Path, error: str | None) -> dict:
    row = {"run": path.name, "status": "ok" if error is None else "failed", "error": error or ""}
    row.update(point)
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

    ok = [r for r in rows if r["status"] == "ok" and "train.val_nll" in r]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.5))
    labels = [", ".join(f"{n}={r.get(n)}" for n in grid_names) for r in ok]
    ax.bar(range(len(ok)), [r["train.val_nll"] for r in ok], color="tab:blue")
    ax.set_xticks(range(len(ok)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("validation NLL (nats/event)")
    failed = len(rows) - len(ok)
    ax.set_title(f"{len(ok)} runs" + (f", {failed} failed" if failed else ""))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(out / "summary.png", buffer.getvalue())


def refresh_notebooks(series=SERIES, log=print) -> None:
    """Re-execute the committed notebooks in place with their own defaults (after an intended
    change), so their stored outputs match what nbval will see."""
    import papermill

    for name in series:
        path = str(NOTEBOOK_DIR / f"{name}.ipynb")
        log(f"executing {path}")
        papermill.execute_notebook(path, path, cwd=str(NOTEBOOK_DIR), kernel_name="python3",
                                   progress_bar=False)


# --- command line -----------------------------------------------------------------------------

def add_run_commands(commands) -> None:
    run = commands.add_parser("run", help="run the notebook series into a run directory")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (value parsed as YAML: 0.5, [0, 1], null)")
    run.add_argument("--out", default=None, help="run directory (default runs/<timestamp>)")
    run.set_defaults(handler=_cli_run)

    sw = commands.add_parser("sweep", help="one run per point of a parameter grid")
    sw.add_argument("-p", "--param", nargs="+", action="append", default=[],
                    metavar="NAME VALUES", help="a parameter and the values to try")
    sw.add_argument("--grid", help="YAML file: {name: [values], ...}")
    sw.add_argument("--jobs", type=int, default=1, help="parallel processes")
    sw.add_argument("--out", required=True, help="sweep directory")
    sw.set_defaults(handler=_cli_sweep)

    refresh = commands.add_parser("refresh-notebooks",
                                  help="re-execute notebooks/ in place (regenerates committed outputs)")
    refresh.set_defaults(handler=lambda args: refresh_notebooks() or 0)


def _value(text: str):
    return yaml.safe_load(text)


def _cli_run(args) -> int:
    params = {name: _value(value) for name, value in args.param}
    out = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_parameters(params)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        path = run_series(params, out)
    except Exception as err:  # papermill reports which cell failed; keep it to one line here
        print(f"error: the run failed: {_one_line(err)} "
              f"(see the executed notebooks in {out}/notebooks)", file=sys.stderr)
        return 1
    print(f"run directory: {path}")
    for name in ("manifest.json", "metrics.json", "generated", "notebooks"):
        print(f"  {path / name}")
    return 0


def _cli_sweep(args) -> int:
    grid = {}
    if args.grid:
        grid.update(yaml.safe_load(Path(args.grid).read_text()) or {})
    for name, *values in args.param:
        if not values:
            print(f"error: -p {name} needs at least one value", file=sys.stderr)
            return 2
        grid[name] = [_value(v) for v in values]
    if not grid:
        print("error: give a grid with -p NAME VALUE... or --grid FILE", file=sys.stderr)
        return 2
    try:
        summary = sweep(grid, args.out, jobs=args.jobs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"summary: {summary} (and summary.png)")
    return 0
