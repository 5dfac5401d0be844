"""The lesson's representation: a sequence of note events ``(pitch, velocity, delta_s)``.

* ``pitch``    MIDI pitch in [0, 127]
* ``velocity`` in [0, 127]; 0 means "note off"
* ``delta_s``  seconds since the previous event (>= 0)

Events live in a numpy structured array (``EVENT_DTYPE``) so a million of them cost 12 MB and
most helpers below are vectorised. Notes (``NOTE_DTYPE``: start, end, pitch, velocity) are the
other view of the same music, used for piano rolls, metrics and MIDI writing. The stream knows
pitch only, so notes that overlap on one pitch are first made one key's notes (``strike_again``:
the piano's rule); then ``events_to_notes(notes_to_events(notes))`` gives the same notes back,
their times through the running sum of deltas (equal up to float rounding).
"""
from __future__ import annotations

from collections import Counter, defaultdict, deque

import numpy as np

EVENT_DTYPE = np.dtype([("pitch", np.int16), ("velocity", np.int16), ("delta_s", np.float64)])
NOTE_DTYPE = np.dtype(
    [("start_s", np.float64), ("end_s", np.float64), ("pitch", np.int16), ("velocity", np.int16)]
)


def make_events(triples) -> np.ndarray:
    """Build an event array from an iterable of ``(pitch, velocity, delta_s)`` triples."""
    events = np.array([tuple(t) for t in triples], dtype=EVENT_DTYPE)
    if len(events) and (events["delta_s"] < 0).any():
        raise ValueError("delta_s must be >= 0")
    return events


def onset_times_s(events: np.ndarray) -> np.ndarray:
    """Absolute time in seconds of every event (the running sum of ``delta_s``)."""
    return np.cumsum(events["delta_s"])


def notes_to_events(notes: np.ndarray) -> np.ndarray:
    """Turn notes into the canonical event order: by time, note-offs before note-ons.

    Offs first at equal times means a note re-struck at the instant it ends reads back as
    "off, on" and pairs correctly; zero-length notes must not be passed in.
    """
    n = len(notes)
    times = np.concatenate([notes["start_s"], notes["end_s"]])
    pitches = np.concatenate([notes["pitch"], notes["pitch"]])
    velocities = np.concatenate([notes["velocity"], np.zeros(n, np.int16)])
    is_on = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    order = np.lexsort((pitches, is_on, times))
    events = np.empty(2 * n, EVENT_DTYPE)
    events["pitch"] = pitches[order]
    events["velocity"] = velocities[order]
    events["delta_s"] = np.diff(times[order], prepend=0.0)
    return events


def events_to_notes(events: np.ndarray) -> tuple[np.ndarray, dict]:
    """Pair note-ons with note-offs first-in-first-out per pitch.

    Returns the notes sorted by start time (then pitch, then order of the note-on) and counts
    of what had to be fixed: ``orphan_offs`` (an off with no sounding note: dropped) and
    ``closed_at_end`` (notes still sounding after the last event: closed at the last event's
    time).
    """
    times = onset_times_s(events)
    sounding: dict[int, deque] = defaultdict(deque)  # pitch -> (start, velocity) of its notes
    rows = []
    orphan_offs = 0
    for t, pitch, velocity in zip(times.tolist(), events["pitch"].tolist(),
                                  events["velocity"].tolist()):
        if velocity > 0:
            sounding[pitch].append((t, velocity))
        elif sounding[pitch]:
            start, on_velocity = sounding[pitch].popleft()
            rows.append((start, t, pitch, on_velocity))
        else:
            orphan_offs += 1
    end = float(times[-1]) if len(times) else 0.0
    closed = [(start, end, pitch, velocity) for pitch, queue in sounding.items()
              for start, velocity in queue]
    notes = np.array(rows + closed, dtype=NOTE_DTYPE)
    # stable: equal (start, pitch) keep the order their note-ons had (FIFO closes them in it)
    notes = notes[np.lexsort((notes["pitch"], notes["start_s"]))]
    return notes, {"orphan_offs": orphan_offs, "closed_at_end": len(closed)}


def texture_limits(events: np.ndarray) -> tuple[float, int]:
    """``(longest note in s, most notes sounding at once)`` of a piece's events: the bounds
    of its texture that generation may learn from (``SamplingConfig``). Counted with the rule
    the network and the sampler use (``midilstm.sounding``): a pitch sounds from a note-on
    until the next note-off of that pitch."""
    since: dict[int, float] = {}
    longest, most, now = 0.0, 0, 0.0
    for pitch, velocity, delta in zip(events["pitch"].tolist(), events["velocity"].tolist(),
                                      events["delta_s"].tolist()):
        now += delta
        if velocity > 0:
            since.setdefault(pitch, now)
            most = max(most, len(since))
        elif pitch in since:
            longest = max(longest, now - since.pop(pitch))
    return longest, most


def strike_again(notes: np.ndarray) -> tuple[np.ndarray, dict]:
    """Notes that one stream of ``(pitch, velocity, delta_s)`` events can carry exactly.

    The stream knows pitch only, so two notes sounding on one pitch at once could not be told
    apart. The piano's rule makes them one key: notes struck at the same instant merge (the
    longest, at the loudest velocity), and a key struck again while it sounds ends the earlier
    note at the new strike. Returns the notes (sorted by start, then pitch) and the counts
    ``merged_same_start`` and ``shortened_by_restrike``. Zero-length notes must not be passed in.
    """
    order = np.lexsort((-notes["end_s"], notes["start_s"], notes["pitch"]))
    notes = notes[order].copy()
    same = np.r_[False, (notes["pitch"][1:] == notes["pitch"][:-1])
                 & (notes["start_s"][1:] == notes["start_s"][:-1])]
    first = np.flatnonzero(~same)
    loudest = np.maximum.reduceat(notes["velocity"], first) if len(notes) else notes["velocity"]
    notes = notes[first]
    notes["velocity"] = loudest  # the first of each group is the longest already
    next_same_pitch = np.r_[notes["pitch"][1:] == notes["pitch"][:-1], False]
    next_start = np.r_[notes["start_s"][1:], np.inf]
    cut = next_same_pitch & (notes["end_s"] > next_start)
    notes["end_s"][cut] = next_start[cut]
    notes = notes[np.lexsort((notes["pitch"], notes["start_s"]))]
    return notes, {"merged_same_start": int(same.sum()), "shortened_by_restrike": int(cut.sum())}


def drop_orphan_offs(events: np.ndarray) -> np.ndarray:
    """Remove note-offs of pitches that are not sounding, keeping every other event's time."""
    open_notes = Counter()
    keep = np.ones(len(events), bool)
    for i, (pitch, velocity) in enumerate(zip(events["pitch"].tolist(), events["velocity"].tolist())):
        if velocity > 0:
            open_notes[pitch] += 1
        elif open_notes[pitch] > 0:
            open_notes[pitch] -= 1
        else:
            keep[i] = False
    times = onset_times_s(events)[keep]
    kept = events[keep].copy()
    kept["delta_s"] = np.diff(times, prepend=0.0)
    return kept


def end_all_notes(events: np.ndarray, gap_s: float) -> np.ndarray:
    """Append a note-off for every note still sounding, ``gap_s`` after the last event."""
    open_notes = Counter()
    for pitch, velocity in zip(events["pitch"].tolist(), events["velocity"].tolist()):
        if velocity > 0:
            open_notes[pitch] += 1
        elif open_notes[pitch] > 0:
            open_notes[pitch] -= 1
    pitches = sorted(open_notes.elements())
    offs = np.zeros(len(pitches), EVENT_DTYPE)
    offs["pitch"] = pitches
    if len(offs):
        offs["delta_s"][0] = gap_s
    return np.concatenate([events, offs])


def fold_pitches(pitches: np.ndarray, low: int, high: int) -> np.ndarray:
    """Move pitches into [low, high] by whole octaves, keeping their pitch class."""
    pitches = np.asarray(pitches, dtype=np.int64).copy()
    below, above = pitches < low, pitches > high
    pitches[below] += 12 * np.ceil((low - pitches[below]) / 12).astype(np.int64)
    pitches[above] -= 12 * np.ceil((pitches[above] - high) / 12).astype(np.int64)
    return pitches
