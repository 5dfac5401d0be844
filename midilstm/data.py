"""Training data: a validation split that does not leak, and contiguous training sequences.

The lesson shuffles overlapping 30-event windows and holds out 1/10 of them: every validation
window shares 29 events with training windows, so its loss says little. Here validation is a
held-out *contiguous* part: the end of the piece, or whole pieces when there are several,
chosen by a hash of their names (``split``: one rule, for the notebooks and a corpus alike).
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

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import params
from .errors import ParameterError

NO_VALIDATION = "none: too little music"  # what a history without validation says
MIN_SIDE_EVENTS = 2  # each side of a split needs one prediction: an event and the one before it


@dataclass(frozen=True)
class Split:
    """Training and validation pieces, with their names (``split``)."""

    train: list
    val: list
    train_names: list
    val_names: list


def split(pieces: list, names=None, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """The one split rule, for a few pieces and a corpus alike, without leakage.

    One piece: its last ``val_fraction`` (contiguous) is validation; a piece shorter than
    ``min_events_for_validation(val_fraction)`` is all training and validation is empty.
    Several pieces: whole pieces are held out, chosen by ``split_names``. ``names``: one per
    piece (file names; default ``piece_0``, ``piece_1``, ...).
    """
    check_fraction(val_fraction)
    params.check("seed", seed)
    if len(pieces) == 0:
        raise ParameterError("pieces", "no pieces to split")
    names = [f"piece_{i}" for i in range(len(pieces))] if names is None else list(names)
    if len(names) != len(pieces):
        raise ParameterError("names", f"{len(names)} names for {len(pieces)} pieces")
    if len(pieces) == 1:
        piece, name = pieces[0], names[0]
        if len(piece) < min_events_for_validation(val_fraction):
            return Split([piece], [], [name], [])
        cut = _cut(len(piece), val_fraction)
        return Split([piece[:cut]], [piece[cut:]], [f"{name} (start)"], [f"{name} (end)"])
    train, val = split_names(names, val_fraction, seed)
    return Split([pieces[i] for i in train], [pieces[i] for i in val],
                 [names[i] for i in train], [names[i] for i in val])


def split_pieces(pieces: list, val_fraction: float = 0.1, seed: int = 0, names=None):
    """``(train, val)`` lists of event (or code) arrays, as ``split``."""
    parts = split(pieces, names, val_fraction, seed)
    return parts.train, parts.val


def split_names(names, val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Indices ``(train, val)`` of whole pieces, held out by ``is_held_out``. With two or more
    pieces each side gets at least one (the piece whose hash is nearest the cut moves)."""
    names = list(names)
    val = [i for i, n in enumerate(names) if is_held_out(n, val_fraction, seed)]
    if len(names) >= 2 and not val:
        val = [min(range(len(names)), key=lambda i: _name_fraction(names[i], seed))]
    if len(names) >= 2 and len(val) == len(names):
        val.remove(max(val, key=lambda i: _name_fraction(names[i], seed)))
    held = set(val)
    return [i for i in range(len(names)) if i not in held], val


def is_held_out(name: str, val_fraction: float = 0.1, seed: int = 0) -> bool:
    """Whether a piece belongs to validation: a fixed hash of its file name (and of ``seed``,
    when not 0), so the split does not depend on which other pieces there are or their order."""
    return _name_fraction(name, seed) < val_fraction


def _name_fraction(name: str, seed: int = 0) -> float:
    text = Path(str(name)).name if seed == 0 else f"{seed}:{Path(str(name)).name}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def check_fraction(val_fraction):
    params.check("val_fraction", val_fraction)  # the parameter table's rule


def _cut(n_events: int, val_fraction: float) -> int:
    """Where one piece of ``n_events`` is cut: training is ``[:cut]``, validation ``[cut:]``."""
    return int(round(n_events * (1 - val_fraction)))


def min_events_for_validation(val_fraction: float = 0.1) -> int:
    """The shortest single piece that ``split_pieces`` splits: at least ``MIN_SIDE_EVENTS`` on
    each side (16 events for ``val_fraction`` 0.1)."""
    check_fraction(val_fraction)
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
    (a ``sounding.Held``: the pitches sounding, (n, n_pitches) bools, the key counts, (n, 12),
    and the ages, (n, n_pitches), before each sequence) it returns ``(sequences, before)``, all shifted alike."""
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
    return out, before._replace(sounding=_roll(before.sounding, shift), key=_roll(before.key, shift),
                                age=None if before.age is None else _roll(before.age, shift))


def _roll(rows: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Row i moved ``shift[i]`` places along its last axis, wrapping round: for pitches the
    clip in ``transpose`` keeps every held one from wrapping; pitch classes go round the
    octave."""
    width = rows.shape[1]
    return np.take_along_axis(rows, (np.arange(width) - shift[:, None]) % width, axis=1)
