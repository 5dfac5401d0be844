"""The pictures the notebooks and the corpus commands show: histograms, time bins, learning
curves, piano rolls.

Each function draws on matplotlib axes it is given (or makes a figure) and returns the figure,
so notebooks stay short and every picture looks the same across notebooks.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .codec import HEADS
from .constants import PITCH_HIGH, PITCH_LOW
from .events import events_to_notes
from .files import write_bytes_atomic
from . import metrics

MAX_ROLL_NOTES = 20_000  # one patch per note: beyond this a roll takes minutes and GBs to draw


def event_histograms(events: np.ndarray, title: str = ""):
    """The lesson's three histograms: pitch, velocity (of note-ons) and delta time."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    on = events["velocity"] > 0
    axes[0].hist(events["pitch"][on], bins=np.arange(PITCH_LOW - 0.5, PITCH_HIGH + 1.5, 1), color="tab:blue")
    axes[0].set(title="pitch (note-ons)", xlabel="MIDI pitch")
    axes[1].hist(events["velocity"][on], bins=np.arange(0.5, 128.5, 1), color="tab:orange")
    axes[1].set(title="velocity (note-ons)", xlabel="velocity")
    delta = events["delta_s"]
    positive = delta[delta > 0]
    if len(positive):
        bins = np.geomspace(positive.min(), positive.max() * 1.001, 40)
        axes[2].hist(positive, bins=bins, color="tab:green")
    axes[2].set(xscale="log", xlabel="seconds (log scale)",
                title=f"delta time > 0  ({np.mean(delta == 0):.0%} are exactly 0)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def time_bins(events: np.ndarray, codecs: dict):
    """Positive deltas with each codec's bin edges drawn over them (one row per codec)."""
    delta = events["delta_s"]
    positive = delta[delta > 0]
    fig, axes = plt.subplots(len(codecs), 1, figsize=(10, 1.8 * len(codecs)), sharex=True)
    axes = np.atleast_1d(axes)
    bins = np.geomspace(positive.min(), positive.max() * 1.001, 60)
    for ax, (name, codec) in zip(axes, codecs.items()):
        ax.hist(positive, bins=bins, color="lightgray")
        for edge in codec.time_edges_s:
            ax.axvline(edge, color="tab:red", lw=0.8)
        ax.set_ylabel(name, rotation=0, ha="right")
        ax.set_xscale("log")
    axes[-1].set_xlabel("delta time, seconds (log scale); red lines: bin edges")
    fig.tight_layout()
    return fig


def learning_curves(history: list, baselines: dict | None = None):
    """Per-head NLL (train and validation) and per-head validation accuracy over epochs.
    Epochs without validation (a piece too short to hold music out) leave a gap."""
    epochs = [h["epoch"] for h in history]

    def val(key):
        return [h["val"][key] if h.get("val") else np.nan for h in history]

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, head in zip(axes[:3], HEADS):
        ax.plot(epochs, [h["train"][f"nll_{head}"] for h in history], label="train")
        ax.plot(epochs, val(f"nll_{head}"), label="validation")
        for name, values in (baselines or {}).items():
            ax.axhline(values[f"nll_{head}"], ls="--", lw=1, color="gray")
            ax.annotate(name, (epochs[-1], values[f"nll_{head}"]), fontsize=7, color="gray",
                        ha="right", va="bottom")
        ax.set(title=f"{head} NLL (nats/event)", xlabel="epoch")
    axes[0].legend()
    for head in HEADS:
        axes[3].plot(epochs, val(f"acc_{head}"), label=head)
    axes[3].set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    axes[3].legend()
    fig.tight_layout()
    return fig


def step_learning_curve(history: list, baselines: dict | None = None):
    """A corpus run's history (``python -m midilstm train``): train and held-out NLL (nats per
    event, all heads) over optimiser steps, with baselines as dashed lines. A point's train
    value is the mean over the steps since the previous point (with dropout and
    transposition, so it can sit above the held-out one)."""
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(steps, [h["train"]["nll"] for h in history], "o-", ms=3, label="train")
    ax.plot(steps, [h["val"]["nll"] for h in history], "o-", ms=3, label="held-out pieces")
    for name, values in (baselines or {}).items():
        ax.axhline(values["nll"], ls="--", lw=1, color="gray")
        ax.annotate(f"{name} {values['nll']:.2f}", (steps[-1], values["nll"]), fontsize=8,
                    color="gray", ha="right", va="bottom")
    ax.set(xlabel="optimiser step", ylabel="NLL (nats per event)",
           title="corpus training: NLL per event, all three heads")
    ax.legend()
    fig.tight_layout()
    return fig


def save_png(fig, path, dpi: int = 100, **options) -> Path:
    """``fig`` as a PNG written atomically (rendered to memory first, so a crash or Ctrl-C
    never leaves half a picture), then closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **options)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def piano_roll(ax, events: np.ndarray, title: str = "", max_seconds: float | None = None,
               color="tab:blue"):
    """Notes as horizontal bars: time on x, pitch on y, opacity by velocity. At most
    ``MAX_ROLL_NOTES`` notes are drawn: a longer piece is cut there, and the title says so."""
    notes, _ = events_to_notes(events)
    if max_seconds is not None:
        notes = notes[notes["start_s"] < max_seconds]
    if len(notes) > MAX_ROLL_NOTES:
        max_seconds = float(notes["start_s"][MAX_ROLL_NOTES])
        notes = notes[notes["start_s"] < max_seconds]
        title = f"{title} (first {max_seconds:.0f} s: {len(notes)} notes)".strip()
    for start, end, pitch, velocity in notes.tolist():
        ax.add_patch(plt.Rectangle((start, pitch - 0.4), max(end - start, 0.01), 0.8,
                                   color=color, alpha=0.35 + 0.65 * velocity / 127, lw=0))
    if len(notes):
        ax.set_xlim(0, max(notes["end_s"].max(), 1e-3) if max_seconds is None else max_seconds)
        ax.set_ylim(notes["pitch"].min() - 2, notes["pitch"].max() + 2)
    ax.set(title=title, xlabel="seconds", ylabel="MIDI pitch")
    return ax


def piano_rolls(rolls: dict, max_seconds: float | None = None, share_pitch: bool = True):
    """Several piano rolls stacked on the same axes scales: ``{title: events}``."""
    fig, axes = plt.subplots(len(rolls), 1, figsize=(12, 2.4 * len(rolls)), sharex=True,
                             sharey=share_pitch, squeeze=False)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red"]
    for i, (ax, (title, events)) in enumerate(zip(axes[:, 0], rolls.items())):
        piano_roll(ax, events, title, max_seconds, colors[i % len(colors)])
    if share_pitch:  # one pitch range for all: the union of every roll's notes
        pitches = np.concatenate([e["pitch"][e["velocity"] > 0] for e in rolls.values()])
        if len(pitches):
            axes[0, 0].set_ylim(pitches.min() - 2, pitches.max() + 2)
    fig.tight_layout()
    return fig


def texture_over_time(series: dict, limit: int | None = None, step_s: float = 0.25):
    """Notes sounding against time, one line per ``{label: events}``; ``limit`` (the polyphony
    limit sampling kept) as a dashed line. A wash of held notes is a line that keeps climbing."""
    fig, ax = plt.subplots(figsize=(12, 3))
    for label, events in series.items():
        times, counts = metrics.sounding_over_time(events, step_s)
        ax.step(times - (times[0] if len(times) else 0), counts, where="post", label=label,
                lw=1)
    if limit:
        ax.axhline(limit, color="grey", ls="--", lw=1, label=f"polyphony limit ({limit})")
    ax.set(xlabel="seconds", ylabel="notes sounding", title="texture over time")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def head_distributions(probs: dict, codec, chosen=None, top: int = 12, considered: dict | None = None):
    """Bar charts of one event's distributions: the most likely classes of each head, labelled
    in musical units, with the sampled class highlighted. ``probs`` is what was sampled from;
    ``considered`` (optional) the model's own probabilities before sampling's masks and
    controls, drawn in grey beside them."""
    labels = {
        "pitch": lambda c: str(c + codec.pitch_low),
        "velocity": lambda c: "off" if c == 0 else str(c),
        "time": lambda c: "0" if c == 0 else f"{codec.time_centers_s[c - 1] * 1000:.0f}ms",
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 2.8))
    for i, (ax, head) in enumerate(zip(axes, HEADS)):
        p = np.asarray(probs[head])
        order = np.argsort(-p, kind="stable")[:top]
        colors = ["tab:red" if chosen is not None and c == chosen[i] else "tab:blue" for c in order]
        x = np.arange(len(order))
        if considered is None:
            ax.bar(x, p[order], color=colors)
        else:  # side by side: the model's own, then what sampling left of it
            ax.bar(x - 0.2, np.asarray(considered[head])[order], 0.4, color="lightgray",
                   label="the model's own")
            ax.bar(x + 0.2, p[order], 0.4, color=colors, label="sampled from")
        ax.set_xticks(range(len(order)), [labels[head](c) for c in order], rotation=60, fontsize=7)
        ax.set(title=f"{head}: top {len(order)} of {len(p)}", ylabel="probability")
    if considered is not None:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig
