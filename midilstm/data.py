"""Training data: a validation split that does not leak, and contiguous training sequences.

The lesson shuffles overlapping 30-event windows and holds out 1/10 of them: every validation
window shares 29 events with training windows, so its loss says little. Here validation is a
held-out *contiguous* part: the end of the piece, or whole pieces when there are several.
Training cuts each piece into contiguous sequences (never across pieces) and learns from
every step of each one.

How little music is enough: a piece needs **2 events** (one note: its on and its off) to train
on, since each event is predicted from the one before it. To also hold out a validation part,
one piece needs ``min_events_for_validation(val_fraction)`` events (16 for the default 0.1: two
events on each side at least); several pieces always split (whole pieces on each side). Below
that, ``split_pieces`` returns an empty validation list, ``validation_note`` says why in one
line, and ``midilstm.train.train`` trains without early stopping.
"""
from __future__ import annotations

import numpy as np

from .checks import is_number
from .errors import ParameterError

NO_VALIDATION = "none: too little music"  # what a history without validation says
MIN_SIDE_EVENTS = 2  # each side of a split needs one prediction: an event and the one before it


def split_pieces(pieces: list, val_fraction: float = 0.1, seed: int = 0):
    """Split event (or code) arrays into ``(train, val)`` lists without leakage.

    One piece: its last ``val_fraction`` (contiguous) is validation; a piece shorter than
    ``min_events_for_validation(val_fraction)`` is all training and validation is ``[]``.
    Several pieces: whole pieces are held out (a seeded choice of about ``val_fraction`` of
    them, at least one, never all).
    """
    _check_fraction(val_fraction)
    if len(pieces) == 0:
        raise ParameterError("pieces", "no pieces to split")
    if len(pieces) == 1:
        piece = pieces[0]
        if len(piece) < min_events_for_validation(val_fraction):
            return [piece], []
        cut = _cut(len(piece), val_fraction)
        return [piece[:cut]], [piece[cut:]]
    n_val = min(len(pieces) - 1, max(1, int(round(len(pieces) * val_fraction))))
    held_out = set(np.random.default_rng(seed).choice(len(pieces), n_val, replace=False).tolist())
    train = [p for i, p in enumerate(pieces) if i not in held_out]
    val = [p for i, p in enumerate(pieces) if i in held_out]
    return train, val


def _check_fraction(val_fraction):
    if not is_number(val_fraction) or not 0 < val_fraction < 1:
        raise ParameterError("val_fraction",
                             f"must be a number between 0 and 1, not {val_fraction!r}")


def _cut(n_events: int, val_fraction: float) -> int:
    """Where one piece of ``n_events`` is cut: training is ``[:cut]``, validation ``[cut:]``."""
    return int(round(n_events * (1 - val_fraction)))


def min_events_for_validation(val_fraction: float = 0.1) -> int:
    """The shortest single piece that ``split_pieces`` splits: at least ``MIN_SIDE_EVENTS`` on
    each side (16 events for ``val_fraction`` 0.1)."""
    _check_fraction(val_fraction)
    n = 2 * MIN_SIDE_EVENTS
    while min(_cut(n, val_fraction), n - _cut(n, val_fraction)) < MIN_SIDE_EVENTS:
        n += 1  # both sides grow with n, so the first n that works is the minimum
    return n


def count_targets(codes_list: list) -> int:
    """Next-event predictions in a list of pieces: ``len(piece) - 1`` each, never across pieces."""
    return sum(max(len(c) - 1, 0) for c in codes_list)


def validation_note(pieces: list, val: list, val_fraction: float = 0.1) -> str | None:
    """One line saying why ``val`` (from ``split_pieces(pieces, val_fraction)``) is empty, or
    None when there is validation data."""
    if count_targets(val) > 0:
        return None
    total = sum(len(p) for p in pieces)
    return (f"validation {NO_VALIDATION}: {total} events in {len(pieces)} piece(s); holding some "
            f"out needs one piece of >= {min_events_for_validation(val_fraction)} events or "
            f"several pieces. Training runs without early stopping and keeps its last epoch.")


def training_sequences(codes_list: list, seq_len: int, rng: np.random.Generator,
                       held: list | None = None):
    """One epoch of training sequences, shape (n, seq_len + 1, 3), shuffled.

    With ``held`` (per piece, ``midilstm.sounding.held_before`` of its codes) it returns
    ``(sequences, before)``: also what held before each sequence's first event (a ``Held`` of
    one row per sequence).

    Each piece is cut into back-to-back sequences from a random offset, so an epoch covers
    (nearly) every step once and the cut points move between epochs. A sequence's inputs are
    ``seq[:-1]`` and its targets ``seq[1:]``. Pieces shorter than ``seq_len + 1`` events are
    left out; if even the longest piece is that short, ``seq_len`` shrinks to fit it.
    """
    longest = max((len(c) for c in codes_list), default=0)
    if longest < 2:
        raise ParameterError("train_codes", "no piece has 2 events: nothing to learn from")
    seq_len = min(seq_len, longest - 1)
    chunks, befores = [], []
    for i, codes in enumerate(codes_list):
        if len(codes) < seq_len + 1:
            continue
        offset = int(rng.integers(0, min(seq_len, len(codes) - seq_len)))
        n = (len(codes) - offset - 1) // seq_len
        # Consecutive sequences share their boundary event: the target of one is the first
        # input of the next, so no transition is skipped.
        starts = offset + seq_len * np.arange(n)
        chunks.append(codes[starts[:, None] + np.arange(seq_len + 1)])
        if held is not None:
            befores.append([part[starts] for part in held[i]])
    order = rng.permutation(sum(map(len, chunks)))
    sequences = np.concatenate(chunks)[order]
    if held is None:
        return sequences
    return sequences, held[0]._make(np.concatenate(parts)[order] for parts in zip(*befores))


def transpose(sequences: np.ndarray, max_semitones: int, n_pitches: int,
              rng: np.random.Generator, before=None):
    """Shift each sequence's pitch classes by a random number of semitones in
    [-max_semitones, max_semitones], limited so that no pitch leaves the range. With ``before``
    (a ``sounding.Held``: the pitches sounding, (n, n_pitches) bools, and the key counts, (n,
    12), before each sequence) it returns ``(sequences, before)``, all shifted alike."""
    if max_semitones <= 0:
        return sequences if before is None else (sequences, before)
    pitch = sequences[:, :, 0]
    low, high = pitch.min(axis=1), pitch.max(axis=1)
    if before is not None:  # a held pitch must stay in range too
        sounding = before.sounding
        held = sounding.any(axis=1)
        low = np.where(held, np.minimum(low, sounding.argmax(axis=1)), low)
        high = np.where(held, np.maximum(high, n_pitches - 1 - sounding[:, ::-1].argmax(axis=1)),
                        high)
    shift = rng.integers(-max_semitones, max_semitones + 1, len(sequences))
    shift = np.clip(shift, -low, n_pitches - 1 - high)
    out = sequences.copy()
    out[:, :, 0] += shift[:, None]
    if before is None:
        return out
    return out, before._replace(sounding=_roll(before.sounding, shift),
                                key=_roll(before.key, shift))


def _roll(rows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Row i moved ``shift[i]`` places along its last axis, wrapping round: for pitches the
    clip in ``transpose`` keeps every held one from wrapping; pitch classes go round the
    octave."""
    width = rows.shape[1]
    return np.take_along_axis(rows, (np.arange(width) - shift[:, None]) % width, axis=1)
