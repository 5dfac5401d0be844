"""Set-level evaluation after Yang & Lerch (2018), "On the evaluation of generative models in
music": compare a set of generated excerpts with a set of real ones feature by feature.

For each feature (pitch-class histogram, pitch count, pitch range, mean pitch interval, note
count, mean inter-onset interval, IOI histogram, mean note length, polyphony):

1. compute it for every excerpt of both sets;
2. take the *intra-set* distances (every pair within the real set, euclidean) and the
   *inter-set* distances (every generated excerpt against every real one);
3. smooth both distance samples with a Gaussian kernel density estimate (Scott's bandwidth);
4. report the **overlapped area** of the two densities (1 = the generated excerpts sit among
   the real ones as the real ones sit among themselves) and the **KL divergence**
   KL(intra || inter) in nats (0 = the same).

The ceiling is the same comparison with held-out real excerpts in place of the generated ones
(``compare_sets(held_out, training)``): no model can be expected to beat real music.
"""
from __future__ import annotations

import numpy as np

from . import metrics
from .events import events_to_notes

FEATURES = ("pitch_class_histogram", "pitch_count", "pitch_range", "pitch_interval",
            "note_count", "ioi", "ioi_histogram", "note_length", "polyphony")
GRID_POINTS = 1000


def excerpt_features(events: np.ndarray) -> dict:
    """Every feature of one excerpt (events), each as a 1-d float array."""
    notes, _ = events_to_notes(events)
    onsets = np.unique(notes["start_s"])
    pitches = notes["pitch"].astype(np.float64)
    values = {
        "pitch_class_histogram": metrics.pitch_class_histogram(notes),
        "pitch_count": len(np.unique(pitches)),
        "pitch_range": metrics.pitch_range(notes),
        "pitch_interval": np.abs(np.diff(pitches)).mean() if len(pitches) > 1 else 0.0,
        "note_count": len(notes),
        "ioi": np.diff(onsets).mean() if len(onsets) > 1 else 0.0,
        "ioi_histogram": metrics.ioi_histogram(notes),
        "note_length": (notes["end_s"] - notes["start_s"]).mean() if len(notes) else 0.0,
        "polyphony": np.nan_to_num(metrics.polyphony(notes)),
    }
    return {name: np.atleast_1d(np.asarray(values[name], np.float64)) for name in FEATURES}


def feature_table(excerpts) -> dict:
    """``{feature: (n_excerpts, dim) array}`` for a list of event arrays."""
    rows = [excerpt_features(e) for e in excerpts]
    return {name: np.stack([r[name] for r in rows]) for name in FEATURES}


def intra_set_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances of every unordered pair of rows of ``x`` (n (n-1) / 2 values)."""
    i, j = np.triu_indices(len(x), k=1)
    return np.linalg.norm(x[i] - x[j], axis=1)


def inter_set_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances of every row of ``x`` to every row of ``y`` (n_x n_y values)."""
    return np.linalg.norm(x[:, None, :] - y[None, :, :], axis=2).ravel()


def kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``samples`` on ``grid``, Scott's rule bandwidth (a small
    floor keeps identical samples from collapsing into a spike of zero width)."""
    samples = np.asarray(samples, np.float64)
    spread = samples.std(ddof=1) if len(samples) > 1 else 0.0
    bandwidth = max(spread * len(samples) ** -0.2, 1e-3 * (np.abs(samples).max() + 1e-3))
    z = (grid[:, None] - samples[None, :]) / bandwidth
    return np.exp(-0.5 * z ** 2).sum(axis=1) / (len(samples) * bandwidth * np.sqrt(2 * np.pi))


def overlap_and_kl(intra: np.ndarray, inter: np.ndarray) -> tuple[float, float]:
    """Overlapped area of the two densities and KL(intra || inter) in nats, integrated on a
    grid that covers both samples and their tails."""
    low, high = min(intra.min(), inter.min()), max(intra.max(), inter.max())
    pad = 0.25 * (high - low) + 1e-3
    grid = np.linspace(low - pad, high + pad, GRID_POINTS)
    p, q = kde(intra, grid), kde(inter, grid)
    overlap = np.trapezoid(np.minimum(p, q), grid)
    tiny = 1e-12
    kl = np.trapezoid(p * np.log((p + tiny) / (q + tiny)), grid)
    return float(overlap), float(max(kl, 0.0))


def excerpts(pieces, n: int, length: int, rng: np.random.Generator) -> list:
    """``n`` distinct windows of ``length`` events, drawn uniformly without replacement from
    every window that lies inside one of ``pieces`` (event arrays; never across two). Distinct
    windows still overlap when the pieces are short: the caller should say so."""
    starts = [(p, s) for p, piece in enumerate(pieces) for s in range(len(piece) - length + 1)]
    if len(starts) < n:
        raise ValueError(f"only {len(starts)} windows of {length} events, not {n}")
    picks = rng.choice(len(starts), n, replace=False)
    return [np.asarray(pieces[starts[i][0]][starts[i][1]:starts[i][1] + length]) for i in picks]


def compare_with_ceiling(generated, held_out, training) -> dict:
    """The comparison of Yang & Lerch with its ceiling, against either real set as reference:
    ``{"held_out": {"generated": ..., "ceiling": ...}, "training": {...}}``. Against the
    held-out excerpts the ceiling is the training excerpts; against the training excerpts it is
    the held-out ones (real music the model did not see, scored as if generated)."""
    return {"held_out": {"generated": compare_sets(generated, held_out),
                         "ceiling": compare_sets(training, held_out)},
            "training": {"generated": compare_sets(generated, training),
                         "ceiling": compare_sets(held_out, training)}}


def compare_sets(generated, real) -> dict:
    """``{feature: {"overlap": OA, "kl": KL}}`` of generated excerpts against real ones (lists
    of event arrays, at least 2 real)."""
    if len(real) < 2 or len(generated) < 1:
        raise ValueError("compare_sets needs >= 1 generated and >= 2 real excerpts")
    gen, ref = feature_table(generated), feature_table(real)
    out = {}
    for name in FEATURES:
        oa, kl = overlap_and_kl(intra_set_distances(ref[name]),
                                inter_set_distances(gen[name], ref[name]))
        out[name] = {"overlap": oa, "kl": kl}
    return out
