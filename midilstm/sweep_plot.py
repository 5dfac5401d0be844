"""A sweep's ``summary.png``: each swept parameter against the measures it can move.

A measure can be moved by the parameters of the notebooks its value comes from (``MEASURES``:
held-out NLL from 01..03, the sample measures from 01..04); which notebooks take a parameter
is the parameter table's (``params.PARAMETERS``), so a sampling parameter (04_generate) gets
the sample measures and a training or data parameter (01..03) the held-out NLL and the sample
measures too (another model makes other music). One row of facets per swept parameter, one
facet per measure; the other swept parameters' values are the lines. ``facets`` is the data,
``summary_figure`` draws it, ``write_summary_png`` writes it atomically.
"""
from __future__ import annotations

import json
import numbers
import textwrap
from dataclasses import dataclass, field

from . import params as parameters


@dataclass(frozen=True)
class Measure:
    key: str  # its column in summary.csv: the flattened key of metrics.json
    label: str
    made_by: tuple  # the notebooks whose output it is computed from


SAMPLED = parameters.SERIES[:4]  # 04_generate's samples, of the model 01..03 made
MEASURES = (
    Measure("train.val_nll", "held-out NLL (nats/event)", parameters.SERIES[:3]),
    Measure("evaluate.samples_mean.polyphony", "polyphony of the samples", SAMPLED),
    Measure("evaluate.samples_mean.ngram_repetition", "n-gram repetition of the samples", SAMPLED),
    Measure("evaluate.samples_mean.scale_consistency", "scale consistency of the samples", SAMPLED),
    Measure("evaluate.max_copied_fraction", "copied fraction (largest sample)", SAMPLED),
)
MAX_LISTED = 3  # failed points named in the title
MAX_TICKS = 8  # a numeric axis with more values than this keeps matplotlib's ticks


@dataclass
class Facet:
    """One subplot: ``measure`` (None: the parameter moves none) against ``parameter``.
    ``xs``: its values in order; ``lines``: legend label ("" alone) -> [(x, y)], x in order."""

    parameter: str
    measure: Measure | None
    xs: list
    numeric: bool
    lines: dict = field(default_factory=dict)


def moved_by(name: str) -> list[Measure]:
    """The measures parameter ``name`` can move: those made by a notebook that takes it."""
    takes = set(parameters.PARAMETERS[name].notebooks)
    return [m for m in MEASURES if takes & set(m.made_by)]


def swept(rows: list[dict], grid_names: list[str]) -> list[str]:
    """The grid's parameters that take more than one value (a one-point sweep: its first)."""
    varied = [n for n in grid_names if len({_text(r.get(n)) for r in rows}) > 1]
    return varied or list(grid_names[:1])


def facets(rows: list[dict], grid_names: list[str]) -> list[list[Facet]]:
    """One list of facets per swept parameter, from the rows of summary.csv."""
    names = swept(rows, grid_names)
    ok = [r for r in rows if r.get("status") == "ok"]
    return [[_facet(name, m, rows, ok, [n for n in names if n != name])
             for m in moved_by(name) or [None]] for name in names]


def _facet(name, measure, rows, ok, others) -> Facet:
    xs = list(dict.fromkeys(r.get(name) for r in rows))  # the grid's order
    numeric = all(_is_number(x) for x in xs)
    if numeric:
        xs = sorted(xs)
    facet = Facet(name, measure, xs, numeric)
    if measure is None:
        return facet
    for row in ok:
        if _is_number(row.get(measure.key)):
            label = ", ".join(f"{o}={_text(row.get(o))}" for o in others)
            facet.lines.setdefault(label, []).append((row.get(name), row[measure.key]))
    for points in facet.lines.values():
        points.sort(key=lambda p: xs.index(p[0]))
    return facet


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _text(value) -> str:
    """A parameter's value as typed: strings as they are, the rest as YAML/JSON (null, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def summary_figure(rows: list[dict], grid_names: list[str]):
    """The figure of ``facets``: a row per swept parameter, a facet per measure it can move;
    the title says how many points failed, and which."""
    from matplotlib.figure import Figure

    grid = facets(rows, grid_names) or [[]]
    n_cols = max(1, *(len(row) for row in grid))
    fig = Figure(figsize=(3.4 * n_cols, 2.9 * len(grid) + 0.8), layout="constrained")
    axes = fig.subplots(len(grid), n_cols, squeeze=False)
    for row_axes, row in zip(axes, grid):
        for ax, facet in zip(row_axes, row):
            _draw(ax, facet)
        for ax in row_axes[len(row):]:
            ax.set_axis_off()
        legend = next((ax for ax, f in zip(row_axes, row) if len(f.lines) > 1), None)
        if legend is not None:
            legend.legend(fontsize=7)
    fig.suptitle(_title(rows, grid_names), fontsize=10)
    return fig


def _draw(ax, facet: Facet) -> None:
    ax.set_xlabel(facet.parameter)
    if facet.measure is None:
        _draw_nothing_moved(ax, facet.parameter)
        return
    ax.set_title(facet.measure.label, fontsize=9)
    ax.set_gid(f"{facet.parameter}|{facet.measure.key}")
    position = (lambda x: x) if facet.numeric else facet.xs.index
    for label, points in facet.lines.items():
        ax.plot([position(x) for x, _ in points], [y for _, y in points], marker="o",
                label=label or None)
    _x_axis(ax, facet)
    if not facet.lines:
        ax.text(0.5, 0.5, "no finished run recorded it", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)


def _x_axis(ax, facet: Facet) -> None:
    """Categories at 0, 1, ... named by their values; numbers at their values."""
    xs = facet.xs
    if not facet.numeric:
        ax.set_xticks(range(len(xs)), [_text(x) for x in xs], fontsize=8,
                      rotation=30 if len(xs) > 4 else 0)
        ax.set_xlim(-0.5, len(xs) - 0.5)
        return
    if len(xs) <= MAX_TICKS:  # a tick at each swept value
        ax.set_xticks(xs, [f"{x:g}" for x in xs], fontsize=8)
    if xs and not facet.lines:  # no points to place the axis: the swept values do
        pad = 0.1 * ((xs[-1] - xs[0]) or 1)
        ax.set_xlim(xs[0] - pad, xs[-1] + pad)


def _draw_nothing_moved(ax, name: str) -> None:
    takes = ", ".join(parameters.PARAMETERS[name].notebooks)
    ax.set_title(f"{name}: none of the measures", fontsize=9)
    ax.text(0.5, 0.5, f"{name} ({takes})\nmoves neither the held-out NLL\nnor the samples "
                      "of 04_generate", ha="center", va="center", transform=ax.transAxes,
            fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _title(rows, grid_names) -> str:
    """How many points are ok, which failed or were interrupted; the values all points share."""
    varied = swept(rows, grid_names)
    parts = [f"{sum(r.get('status') == 'ok' for r in rows)} of {len(rows)} points ok"]
    for status in ("failed", "interrupted"):
        bad = [r for r in rows if r.get("status") == status]
        if bad:
            named = [f"{r['run']} ({' '.join(f'{n}={_text(r.get(n))}' for n in varied)})"
                     for r in bad[:MAX_LISTED]]
            more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
            parts.append(f"{len(bad)} {status}: " + ", ".join(named) + more)
    lines = textwrap.wrap("; ".join(parts), 140)
    fixed = [n for n in grid_names if n not in varied]
    if fixed and rows:
        lines.append(textwrap.shorten("with " + " ".join(
            f"{n}={_text(rows[0].get(n))}" for n in fixed), 140, placeholder=" ..."))
    return "\n".join(lines)


def write_summary_png(rows: list[dict], out, grid_names: list[str]):
    """``out/summary.png``, written atomically (``plots.save_png``)."""
    from .plots import save_png

    return save_png(summary_figure(rows, grid_names), out / "summary.png")
