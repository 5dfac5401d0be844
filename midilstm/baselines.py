"""Simple baselines that say whether the LSTM's validation loss is any good.

An NLL of 4.1 nats per event means little alone; next to "always predict the training
frequencies" (unigram), "predict from the previous event" (bigram) and "the same again"
(repeat_last) it shows what the network learned beyond counting. All three work per head on the
codec's integer triples and count targets exactly as ``midilstm.train.evaluate`` does: events
1..n-1 of each piece, each predicted from the event before it, never across pieces.

Each baseline is one table of log-probabilities per head, ``log p(class_t | class_{t-1})`` of
shape (n_prev, n_classes); the unigram has a single row that ignores the previous class.

    table = baseline_table(train_codes, val_codes, codec.sizes)
    table["bigram"]["nll"], to_bits(table["bigram"]["nll"])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec import HEADS

# Pseudo-count per class. Small next to a real training set (10^4..10^5 events, <= 128 classes),
# so it barely moves frequent classes, but a class or transition never seen in training keeps a
# finite NLL on validation. Fixed rather than tuned: a baseline should be cheap and predictable.
DEFAULT_ALPHA = 0.1
MIN_EPS = 1e-6  # repeat_last never puts all mass on "the same again": a change costs finite NLL


@dataclass
class Baseline:
    """A fitted baseline: its name and one (n_prev or 1, n_classes) log-prob table per head."""

    name: str
    log_tables: list

    def evaluate(self, val_codes: list) -> dict:
        """Mean NLL (nats per event) and accuracy per head, plus ``nll`` = their sum and
        ``n_targets``. Without targets (every piece under 2 events) the NLLs and accuracies are
        NaN and ``n_targets`` is 0."""
        prev, target = _pairs(val_codes, [t.shape[1] for t in self.log_tables])
        out = {}
        for i, head in enumerate(HEADS):
            table = self.log_tables[i]
            rows = prev[:, i] if len(table) > 1 else np.zeros(len(prev), np.int64)
            lp = table[rows, target[:, i]]
            out[f"nll_{head}"] = float(-lp.mean()) if len(lp) else float("nan")
            out[f"acc_{head}"] = (float((table.argmax(1)[rows] == target[:, i]).mean())
                                  if len(lp) else float("nan"))
        out["nll"] = sum(out[f"nll_{head}"] for head in HEADS)
        out["n_targets"] = len(target)
        return out


def _pairs(codes_list: list, sizes) -> tuple[np.ndarray, np.ndarray]:
    """(previous, target) code rows of every next-event prediction, within pieces only."""
    pieces = [np.asarray(c, np.int64).reshape(-1, 3) for c in codes_list]
    pieces = [p for p in pieces if len(p) >= 2]
    if not pieces:
        return np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64)
    prev = np.concatenate([p[:-1] for p in pieces])
    target = np.concatenate([p[1:] for p in pieces])
    if (target < 0).any() or (target >= np.asarray(sizes)).any() or (prev < 0).any() \
            or (prev >= np.asarray(sizes)).any():
        raise ValueError(f"codes out of range for sizes {tuple(sizes)}")
    return prev, target


def _frequencies(target: np.ndarray, size: int, alpha: float) -> np.ndarray:
    counts = np.bincount(target, minlength=size) + alpha
    return counts / counts.sum()


def unigram(train_codes: list, sizes, alpha: float = DEFAULT_ALPHA) -> Baseline:
    """p(class) = training frequency of the class among targets, add-alpha smoothed."""
    _, target = _pairs(train_codes, sizes)
    tables = [np.log(_frequencies(target[:, i], n, alpha))[None] for i, n in enumerate(sizes)]
    return Baseline("unigram", tables)


def bigram(train_codes: list, sizes, alpha: float = DEFAULT_ALPHA) -> Baseline:
    """p(class_t | class_{t-1}) per head, add-alpha smoothed towards the unigram.

    The ``alpha * n_classes`` pseudo-counts of a row are spread like the (smoothed) unigram
    rather than uniformly, so a previous class never seen in training predicts the unigram
    instead of a uniform guess; with a uniform unigram this is plain add-alpha.
    """
    prev, target = _pairs(train_codes, sizes)
    tables = []
    for i, n in enumerate(sizes):
        prior = alpha * n * _frequencies(target[:, i], n, alpha)
        counts = np.zeros((n, n))
        np.add.at(counts, (prev[:, i], target[:, i]), 1)
        counts += prior
        tables.append(np.log(counts / counts.sum(axis=1, keepdims=True)))
    return Baseline("bigram", tables)


def repeat_last(train_codes: list, sizes) -> Baseline:
    """p(class_t = class_{t-1}) = 1 - eps, the rest spread evenly over the other classes.

    ``eps`` per head is the fraction of training targets that differ from the previous event
    (clipped to [MIN_EPS, 1 - MIN_EPS]): the maximum-likelihood value for this model.
    """
    prev, target = _pairs(train_codes, sizes)
    tables = []
    for i, n in enumerate(sizes):
        changes = (prev[:, i] != target[:, i]).mean() if len(target) else 0.5
        eps = float(np.clip(changes, MIN_EPS, 1 - MIN_EPS))
        table = np.full((n, n), eps / max(n - 1, 1))
        np.fill_diagonal(table, 1 - eps)
        tables.append(np.log(table))
    return Baseline("repeat_last", tables)


def to_bits(nats: float) -> float:
    """Nats -> bits (divide by ln 2)."""
    return nats / np.log(2)


def baseline_table(train_codes: list, val_codes: list, sizes,
                   alpha: float = DEFAULT_ALPHA) -> dict:
    """Fit every baseline on ``train_codes`` and evaluate it on ``val_codes``: name -> metrics."""
    fitted = [unigram(train_codes, sizes, alpha), bigram(train_codes, sizes, alpha),
              repeat_last(train_codes, sizes)]
    return {b.name: b.evaluate(val_codes) for b in fitted}
