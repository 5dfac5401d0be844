"""Training data: a validation split that does not leak, and contiguous training sequences.

The lesson shuffles overlapping 30-event windows and holds out 1/10 of them: every validation
window shares 29 events with training windows, so its loss says little. Here validation is a
held-out *contiguous* part: the end of the piece, or whole pieces when there are several.
Training cuts each piece into contiguous sequences (never across pieces) and learns from
every step of each one.
"""
from __future__ import annotations

import numpy as np


def split_pieces(pieces: list, val_fraction: float = 0.1, seed: int = 0):
    """Split event (or code) arrays into ``(train, val)`` lists without leakage.

    One piece: its last ``val_fraction`` (contiguous) is validation. Several pieces: whole
    pieces are held out (a seeded choice of about ``val_fraction`` of them, at least one).
    """
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    if len(pieces) == 0:
        raise ValueError("no pieces to split")
    if len(pieces) == 1:
        piece = pieces[0]
        cut = int(round(len(piece) * (1 - val_fraction)))
        if cut < 2 or len(piece) - cut < 2:
            raise ValueError(f"a piece of {len(piece)} events is too short to split")
        return [piece[:cut]], [piece[cut:]]
    n_val = min(len(pieces) - 1, max(1, int(round(len(pieces) * val_fraction))))
    held_out = set(np.random.default_rng(seed).choice(len(pieces), n_val, replace=False).tolist())
    train = [p for i, p in enumerate(pieces) if i not in held_out]
    val = [p for i, p in enumerate(pieces) if i in held_out]
    return train, val


def training_sequences(codes_list: list, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of training sequences, shape (n, seq_len + 1, 3), shuffled.

    Each piece is cut into back-to-back sequences from a random offset, so an epoch covers
    (nearly) every step once and the cut points move between epochs. A sequence's inputs are
    ``seq[:-1]`` and its targets ``seq[1:]``. Pieces shorter than ``seq_len + 1`` events are
    left out; if even the longest piece is that short, ``seq_len`` shrinks to fit it.
    """
    seq_len = min(seq_len, max(len(c) for c in codes_list) - 1)
    chunks = []
    for codes in codes_list:
        if len(codes) < seq_len + 1:
            continue
        offset = int(rng.integers(0, min(seq_len, len(codes) - seq_len)))
        n = (len(codes) - offset - 1) // seq_len
        # Consecutive sequences share their boundary event: the target of one is the first
        # input of the next, so no transition is skipped.
        starts = offset + seq_len * np.arange(n)
        chunks.append(codes[starts[:, None] + np.arange(seq_len + 1)])
    sequences = np.concatenate(chunks)
    return sequences[rng.permutation(len(sequences))]


def transpose(sequences: np.ndarray, max_semitones: int, n_pitches: int,
              rng: np.random.Generator) -> np.ndarray:
    """Shift each sequence's pitch classes by a random number of semitones in
    [-max_semitones, max_semitones], limited so that no pitch leaves the range."""
    if max_semitones <= 0:
        return sequences
    pitch = sequences[:, :, 0]
    shift = rng.integers(-max_semitones, max_semitones + 1, len(sequences))
    shift = np.clip(shift, -pitch.min(axis=1), n_pitches - 1 - pitch.max(axis=1))
    out = sequences.copy()
    out[:, :, 0] += shift[:, None]
    return out
